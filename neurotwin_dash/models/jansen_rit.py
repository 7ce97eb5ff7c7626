"""Jansen–Rit neural mass model (Jansen & Rit 1995, Biol. Cybern. 73:357–366).

Three populations in one cortical column: pyramidal cells (P), excitatory (E) and inhibitory (I)
interneurons. States are the three PSPs ``y0..y2`` and their derivatives ``y3..y5``::

    ẏ0 = y3    ẏ3 = A a S(y1 − y2 + u_mem) − 2a y3 − a² y0
    ẏ1 = y4    ẏ4 = A a (p + C2 S(C1 y0) + u_net + u_rate) − 2a y4 − a² y1
    ẏ2 = y5    ẏ5 = B b C4 S(C3 y0) − 2b y5 − b² y2

with ``S(v) = 2 e0 / (1 + exp(r (v0 − v)))``, ``C1 = C``, ``C2 = 0.8 C``, ``C3 = C4 = 0.25 C``.

* Observed output ``v_pyr = y1 − y2`` (mV), the pyramidal membrane potential (EEG-like).
* Transmitted rate (network coupling variable) ``rate_out = S(y1 − y2 + u_mem)`` (s⁻¹); the
  network input ``u_net = K Σ_j W_ij rate_out_j(t − τ_ij)`` adds to the pyramidal input rate.
* Noise: ``p(t) = p + σ ξ(t)``, integrated as ``Δy4 += A a σ_w √dt N(0, 1)`` with
  ``σ_w = noise_sd · √(1 ms)`` (``noise_sd`` is the sd of the input per 1-ms sample).
* Polarised population (``membrane`` drive, mV): pyramidal cells — ``u_mem`` shifts the soma
  potential inside the sigmoid and so the rate they emit; the observed ``v_pyr`` is the PSP sum
  without the imposed shift.

Time in seconds, rates in s⁻¹, potentials in mV.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..params import ParamSet, ParamSpec
from . import psp_initial_range
from ._kernel import sigmoid as _sig

NAME = "jansen_rit"

PARAMS = ParamSet([
    ParamSpec("A", 3.25, 2.0, 10.0, "mV", "excitatory PSP gain"),
    ParamSpec("B", 22.0, 10.0, 50.0, "mV", "inhibitory PSP gain"),
    ParamSpec("a", 100.0, 50.0, 150.0, "1/s", "excitatory synaptic rate constant"),
    ParamSpec("b", 50.0, 25.0, 100.0, "1/s", "inhibitory synaptic rate constant"),
    ParamSpec("C", 135.0, 50.0, 300.0, "", "connectivity constant: C1=C, C2=0.8C, C3=C4=0.25C"),
    ParamSpec("v0", 6.0, 3.0, 8.0, "mV", "sigmoid threshold (TVB uses 5.52 mV, a slower rhythm)"),
    ParamSpec("e0", 2.5, 1.0, 10.0, "1/s", "half the maximal firing rate (2 e0 = 5 1/s)"),
    ParamSpec("r", 0.56, 0.1, 2.0, "1/mV", "sigmoid steepness"),
    ParamSpec("p", 220.0, 0.0, 350.0, "1/s", "mean external input rate to the pyramidal population"),
    ParamSpec("noise_sd", 22.0, 0.0, 100.0, "1/s",
              "sd of the external input per 1-ms sample (σ_w = noise_sd·√1ms)"),
], owner=NAME)

STATES = ("y0", "y1", "y2", "y3", "y4", "y5")
OUTPUTS = ("v_pyr", "rate_out")
OBSERVED = ("v_pyr",)
#: Largest integration step (ms) whose results stay close to dt = 0.1 ms at the default parameters
#: (single node, 10 s, 4 seeds; peak -3 %; at 1 ms -8 % and the signal sd +82 %). ``simulate`` flags runs above it, the CLI refuses them.
MAX_DT_MS = 0.5
CVARS = ("rate_out",)
CVAR_TARGETS = ("pyramidal input rate (added to p)",)
NOISE_STATES = (4,)
POLARISED = ("pyramidal",)
STATE_BOUND = 1e7
# 76-region tvb76 network (W / max W, speed 4 m/s, p = 220, noise_sd = 22): every region peaks
# at 10.75 Hz for coupling 0–5; the alpha amplitude falls above K ≈ 3 as the mean network input
# pushes nodes toward the upper Hopf; K ≥ 10 saturates (slow, low-amplitude activity).
NETWORK_DEFAULTS = {"coupling": 2.0}
UNITS = {"v_pyr": "mV", "rate_out": "1/s", "y0": "mV", "y1": "mV", "y2": "mV",
         "y3": "mV/s", "y4": "mV/s", "y5": "mV/s"}

#: parameter columns by name (``p[IDX.C]``), generated from PARAMS
IDX = PARAMS.indices()
_MS = math.sqrt(1e-3)


def _initial_range():
    d = PARAMS.defaults()
    A, B, a, b, C, e0, p = (d[k] for k in ("A", "B", "a", "b", "C", "e0", "p"))
    psp_max = (A * 2 * e0 / a,                       # y0: pyramidal -> interneurons
               A * (p + 0.8 * C * 2 * e0) / a,       # y1: external input + excitatory feedback
               B * 0.25 * C * 2 * e0 / b)            # y2: inhibitory feedback
    return psp_initial_range(psp_max, n_derivatives=3)


#: Random start (``simulate(initial="random")``): see :func:`~neurotwin_dash.models.psp_initial_range`.
#: Default ranges: y0 ∈ [0, 0.041], y1 ∈ [0, 6.2], y2 ∈ [0, 18.6] mV.
INITIAL_RANGE = _initial_range()


# --- numba, one region ------------------------------------------------------------------------

@njit(cache=True, inline="always")
def dfun(x, p, rates, c_in, u_mem, u_rate):
    """Right-hand side of one region: ``x`` (6,), ``p`` (n_params,), ``rates`` (1,) this state's
    ``cvar`` (the kernel keeps it), ``c_in`` (1,) network input (1/s), ``u_mem`` membrane drive
    (mV), ``u_rate`` rate drive (1/s). Returns a 6-tuple."""
    A = p[IDX.A]
    B = p[IDX.B]
    a = p[IDX.a]
    b = p[IDX.b]
    C = p[IDX.C]
    e0 = p[IDX.e0]
    r = p[IDX.r]
    v0 = p[IDX.v0]
    y0 = x[0]
    s_pyr = rates[0]                     # = _sig(x[1] - x[2] + u_mem, e0, r, v0)
    s_exc = _sig(C * y0, e0, r, v0)
    s_inh = _sig(0.25 * C * y0, e0, r, v0)
    return (x[3], x[4], x[5],
            A * a * s_pyr - 2.0 * a * x[3] - a * a * y0,
            A * a * (p[IDX.p] + 0.8 * C * s_exc + c_in[0] + u_rate) - 2.0 * a * x[4] - a * a * x[1],
            B * b * 0.25 * C * s_inh - 2.0 * b * x[5] - b * b * x[2])


@njit(cache=True, inline="always")
def cvar(x, p, u_mem):
    """Transmitted rate of one region (1-tuple): the pyramidal firing rate (1/s)."""
    return (_sig(x[1] - x[2] + u_mem, p[IDX.e0], p[IDX.r], p[IDX.v0]),)


@njit(cache=True, inline="always")
def observe(x, p, rates, u_mem):
    """Outputs of one region in ``OUTPUTS`` order (``rates`` = this state's ``cvar``)."""
    return (x[1] - x[2], rates[0])


@njit(cache=True, inline="always")
def noise_gain(p):
    """Per noisy state (``NOISE_STATES``): the factor multiplying √dt·N(0, 1)."""
    return (p[IDX.A] * p[IDX.a] * p[IDX.noise_sd] * _MS,)


# --- NumPy reference over (batch, region) -------------------------------------------------

def _sigmoid_np(v, e0, r, v0):
    return 2.0 * e0 / (1.0 + np.exp(r * (v0 - v)))


def dfun_numpy(x, p, c_in, u_mem, u_rate):
    """Reference right-hand side. ``x`` (batch, region, 6), ``p`` (batch, region, n_params),
    ``c_in`` (batch, region, 1), ``u_mem``/``u_rate`` (batch, region). Returns dx/dt."""
    q = PARAMS.columns(p)
    A, B, a, b, C = q["A"], q["B"], q["a"], q["b"], q["C"]
    C1, C2, C3, C4 = C, 0.8 * C, 0.25 * C, 0.25 * C
    S = lambda v: _sigmoid_np(v, q["e0"], q["r"], q["v0"])  # noqa: E731
    y = [x[..., k] for k in range(6)]
    dy = np.empty_like(x)
    dy[..., 0] = y[3]
    dy[..., 1] = y[4]
    dy[..., 2] = y[5]
    dy[..., 3] = A * a * S(y[1] - y[2] + u_mem) - 2 * a * y[3] - a ** 2 * y[0]
    dy[..., 4] = A * a * (q["p"] + C2 * S(C1 * y[0]) + c_in[..., 0] + u_rate) - 2 * a * y[4] - a ** 2 * y[1]
    dy[..., 5] = B * b * C4 * S(C3 * y[0]) - 2 * b * y[5] - b ** 2 * y[2]
    return dy


def cvar_numpy(x, p, u_mem):
    q = PARAMS.columns(p)
    return _sigmoid_np(x[..., 1] - x[..., 2] + u_mem, q["e0"], q["r"], q["v0"])[..., None]


def observe_numpy(x, p, u_mem):
    v = x[..., 1] - x[..., 2]
    q = PARAMS.columns(p)
    return np.stack([v, _sigmoid_np(v + u_mem, q["e0"], q["r"], q["v0"])], axis=-1)


def noise_gain_numpy(p):
    q = PARAMS.columns(p)
    return (q["A"] * q["a"] * q["noise_sd"] * _MS)[..., None]
