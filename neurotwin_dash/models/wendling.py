"""Wendling et al. (2002) neural mass model with fast somatic inhibition.

Wendling F, Bartolomei F, Bellanger JJ, Chauvel P (2002) Epileptic fast activity can be
explained by a model of impaired GABAergic dendritic inhibition. Eur J Neurosci 15:1499–1508.

Jansen–Rit plus a fast GABA_A interneuron population (gain G, rate g) that targets the
pyramidal soma and is itself inhibited by the slow (dendritic) population. States are the PSPs
``y0..y4`` and their derivatives ``y5..y9``::

    ÿ0 = A a S(y1 − y2 − y3 + u_mem) − 2a ẏ0 − a² y0
    ÿ1 = A a (p + C2 S(C1 y0) + u_net + u_rate) − 2a ẏ1 − a² y1
    ÿ2 = B b C4 S(C3 y0) − 2b ẏ2 − b² y2
    ÿ3 = G g C7 S(C5 y0 − C6 y4) − 2g ẏ3 − g² y3
    ÿ4 = B b S(C3 y0) − 2b ẏ4 − b² y4

``C1 = C, C2 = 0.8C, C3 = C4 = 0.25C, C5 = 0.3C, C6 = 0.1C, C7 = 0.8C``.

* Observed output ``v_pyr = y1 − y2 − y3`` (mV); transmitted rate ``rate_out = S(v_pyr + u_mem)``.
* Choice of ``g``: the default is **350 s⁻¹** (as in several public implementations), not the
  paper's 500 s⁻¹: with this package's noise convention (input sd 30 s⁻¹ per 1-ms sample)
  g = 500 never produced the low-voltage fast activity of type 5 (its spectrum peaked at
  2.5 Hz), whereas g = 350 gives it at ~23 Hz (docs/science.md §2).
* Activity types at A = 5 as (B, G) move: 1 background (50, 15), 2 sporadic spikes (40, 15),
  3 sustained spike discharges (25, 15), 4 slow rhythmic (10, 15), 5 low-voltage fast
  activity (5, 25), 6 slow quasi-sinusoidal (15, 0) — see :data:`ACTIVITY_TYPES`.
* Noise on the pyramidal input rate (``Δy6 += A a σ_w √dt N``, ``σ_w = noise_sd·√1ms``).
* Polarised population (``membrane`` drive): pyramidal cells (soma potential in the sigmoid).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..params import ParamSet, ParamSpec
from . import psp_initial_range
from ._kernel import sigmoid as _sig

NAME = "wendling"

PARAMS = ParamSet([
    ParamSpec("A", 5.0, 0.0, 20.0, "mV", "excitatory PSP gain"),
    ParamSpec("B", 50.0, 0.0, 100.0, "mV", "slow (dendritic) inhibitory PSP gain"),
    ParamSpec("G", 20.0, 0.0, 60.0, "mV", "fast (somatic) inhibitory PSP gain"),
    ParamSpec("a", 100.0, 20.0, 200.0, "1/s", "excitatory synaptic rate constant"),
    ParamSpec("b", 50.0, 10.0, 150.0, "1/s", "slow inhibitory synaptic rate constant"),
    ParamSpec("g", 350.0, 100.0, 1000.0, "1/s",
              "fast inhibitory synaptic rate constant (350: the fast type appears; paper 500)"),
    ParamSpec("C", 135.0, 50.0, 300.0, "", "connectivity constant (C1..C7 are fixed fractions of C)"),
    ParamSpec("v0", 6.0, 3.0, 8.0, "mV", "sigmoid threshold"),
    ParamSpec("e0", 2.5, 1.0, 10.0, "1/s", "half the maximal firing rate"),
    ParamSpec("r", 0.56, 0.1, 2.0, "1/mV", "sigmoid steepness"),
    ParamSpec("p", 90.0, 0.0, 500.0, "1/s", "mean external input rate to the pyramidal cells"),
    ParamSpec("noise_sd", 30.0, 0.0, 200.0, "1/s", "sd of the input rate per 1-ms sample"),
], owner=NAME)

STATES = ("y0", "y1", "y2", "y3", "y4", "y5", "y6", "y7", "y8", "y9")
OUTPUTS = ("v_pyr", "rate_out")
OBSERVED = ("v_pyr",)
#: Largest integration step (ms) whose results stay close to dt = 0.1 ms at the default parameters
#: (single node, 10 s, 4 seeds; the fast GABA_A synapse (g = 350 1/s): peak +7 % at 0.5 ms, +43 % at 1 ms). ``simulate`` flags runs above it, the CLI refuses them.
MAX_DT_MS = 0.25
CVARS = ("rate_out",)
CVAR_TARGETS = ("pyramidal input rate (added to p)",)
NOISE_STATES = (6,)
POLARISED = ("pyramidal",)
STATE_BOUND = 1e7
# tvb76 (W / max W, 4 m/s, defaults = background type): background activity for coupling 0–5; at
# K ≈ 10 the network input drives regions into large spike discharges (sd ~9 mV).
NETWORK_DEFAULTS = {"coupling": 1.0}
UNITS = dict({"v_pyr": "mV", "rate_out": "1/s"}, **{f"y{k}": "mV" for k in range(5)},
             **{f"y{k}": "mV/s" for k in range(5, 10)})

#: Wendling 2002's activity types at A = 5: name -> (B, G).
ACTIVITY_TYPES = {
    "background": (50.0, 15.0),
    "sporadic_spikes": (40.0, 15.0),
    "sustained_discharges": (25.0, 15.0),
    "slow_rhythmic": (10.0, 15.0),
    "low_voltage_fast": (5.0, 25.0),
    "quasi_sinusoidal": (15.0, 0.0),
}

#: parameter columns by name (``p[IDX.C]``), generated from PARAMS
IDX = PARAMS.indices()
_MS = math.sqrt(1e-3)


def _initial_range():
    d = PARAMS.defaults()
    A, B, G, a, b, g, C, e0, p = (d[k] for k in ("A", "B", "G", "a", "b", "g", "C", "e0", "p"))
    psp_max = (A * 2 * e0 / a,                       # y0: pyramidal -> interneurons
               A * (p + 0.8 * C * 2 * e0) / a,       # y1: external input + excitatory feedback
               B * 0.25 * C * 2 * e0 / b,            # y2: slow dendritic inhibition
               G * 0.8 * C * 2 * e0 / g,             # y3: fast somatic inhibition
               B * 2 * e0 / b)                       # y4: slow -> fast inhibition
    return psp_initial_range(psp_max, n_derivatives=5)


#: Random start (``simulate(initial="random")``): see :func:`~neurotwin_dash.models.psp_initial_range`.
INITIAL_RANGE = _initial_range()


@njit(cache=True, inline="always")
def dfun(x, p, rates, c_in, u_mem, u_rate):
    """Right-hand side of one region (10-tuple); see the module docstring."""
    A = p[IDX.A]
    B = p[IDX.B]
    G = p[IDX.G]
    a = p[IDX.a]
    b = p[IDX.b]
    g = p[IDX.g]
    C = p[IDX.C]
    e0 = p[IDX.e0]
    r = p[IDX.r]
    v0 = p[IDX.v0]
    y0 = x[0]
    s_pyr = rates[0]                     # = _sig(x[1] - x[2] - x[3] + u_mem, e0, r, v0)
    s_exc = _sig(C * y0, e0, r, v0)
    s_slow = _sig(0.25 * C * y0, e0, r, v0)
    s_fast = _sig(0.3 * C * y0 - 0.1 * C * x[4], e0, r, v0)
    return (x[5], x[6], x[7], x[8], x[9],
            A * a * s_pyr - 2.0 * a * x[5] - a * a * y0,
            A * a * (p[IDX.p] + 0.8 * C * s_exc + c_in[0] + u_rate) - 2.0 * a * x[6] - a * a * x[1],
            B * b * 0.25 * C * s_slow - 2.0 * b * x[7] - b * b * x[2],
            G * g * 0.8 * C * s_fast - 2.0 * g * x[8] - g * g * x[3],
            B * b * s_slow - 2.0 * b * x[9] - b * b * x[4])


@njit(cache=True, inline="always")
def cvar(x, p, u_mem):
    """Transmitted rate (1-tuple): pyramidal firing rate (1/s)."""
    return (_sig(x[1] - x[2] - x[3] + u_mem, p[IDX.e0], p[IDX.r], p[IDX.v0]),)


@njit(cache=True, inline="always")
def observe(x, p, rates, u_mem):
    return (x[1] - x[2] - x[3], rates[0])


@njit(cache=True, inline="always")
def noise_gain(p):
    return (p[IDX.A] * p[IDX.a] * p[IDX.noise_sd] * _MS,)


# --- NumPy reference over (batch, region) -------------------------------------------------

def _S(v, q):
    return 2.0 * q["e0"] / (1.0 + np.exp(q["r"] * (q["v0"] - v)))


def dfun_numpy(x, p, c_in, u_mem, u_rate):
    """Reference right-hand side over (batch, region, 10)."""
    q = PARAMS.columns(p)
    A, B, G, a, b, g, C = (q[k] for k in ("A", "B", "G", "a", "b", "g", "C"))
    C1, C2, C3, C4, C5, C6, C7 = C, 0.8 * C, 0.25 * C, 0.25 * C, 0.3 * C, 0.1 * C, 0.8 * C
    y = [x[..., k] for k in range(10)]
    d = np.empty_like(x)
    d[..., 0:5] = x[..., 5:10]
    d[..., 5] = A * a * _S(y[1] - y[2] - y[3] + u_mem, q) - 2 * a * y[5] - a ** 2 * y[0]
    d[..., 6] = A * a * (q["p"] + C2 * _S(C1 * y[0], q) + c_in[..., 0] + u_rate) - 2 * a * y[6] - a ** 2 * y[1]
    d[..., 7] = B * b * C4 * _S(C3 * y[0], q) - 2 * b * y[7] - b ** 2 * y[2]
    d[..., 8] = G * g * C7 * _S(C5 * y[0] - C6 * y[4], q) - 2 * g * y[8] - g ** 2 * y[3]
    d[..., 9] = B * b * _S(C3 * y[0], q) - 2 * b * y[9] - b ** 2 * y[4]
    return d


def cvar_numpy(x, p, u_mem):
    return _S(x[..., 1] - x[..., 2] - x[..., 3] + u_mem, PARAMS.columns(p))[..., None]


def observe_numpy(x, p, u_mem):
    v = x[..., 1] - x[..., 2] - x[..., 3]
    return np.stack([v, _S(v + u_mem, PARAMS.columns(p))], axis=-1)


def noise_gain_numpy(p):
    q = PARAMS.columns(p)
    return (q["A"] * q["a"] * q["noise_sd"] * _MS)[..., None]
