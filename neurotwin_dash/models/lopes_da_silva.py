"""Lopes da Silva thalamic alpha model (Lopes da Silva et al. 1974, Kybernetik 15:27–37).

A thalamocortical relay population (TCR) and an inhibitory interneuron population (IN); the
parameter set is the one also used by Bhattacharya et al. (2011, Neural Netw. 24:631). PSP
kernels are differences of exponentials ``h(t) = A (e^{−at} − e^{−bt})``, i.e.
``ÿ + (a + b) ẏ + a b y = A (b − a) x``. States: ``y1`` (excitatory PSP of the external input on
TCR), ``y2`` (inhibitory PSP of IN on TCR), ``y3`` (excitatory PSP of TCR on IN) and their
derivatives ``y4..y6``::

    V_TCR = y1 − y2,  V_IN = y3
    ÿ1 = A (b − a) (P + u_net + u_rate)      − (a + b) ẏ1 − a b y1
    ÿ2 = B (d − c) C2 f(V_IN)               − (c + d) ẏ2 − c d y2
    ÿ3 = A (b − a) C1 f(V_TCR + u_mem)      − (a + b) ẏ3 − a b y3
    f(V) = 2 e0 / (1 + exp(ν (V0 − V)))

Its alpha is noise-driven: without noise it rests at a fixed point; with input noise (sd
100 s⁻¹ per 1-ms sample) V_TCR peaks near 9 Hz. Noise enters ``ẏ1`` (gain ``A (b − a)``).
Transmitted rate: ``f(V_TCR + u_mem)``, added to the network input of TCR. Polarised: TCR.
The kernels are positive only with ``b > a`` and ``d > c`` (the defaults).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..params import ParamSet, ParamSpec
from . import psp_initial_range
from ._kernel import sigmoid as _f

NAME = "lopes_da_silva"

PARAMS = ParamSet([
    ParamSpec("A", 1.65, 0.1, 10.0, "mV", "excitatory PSP gain"),
    ParamSpec("a", 55.0, 5.0, 300.0, "1/s", "excitatory kernel decay rate (slow)"),
    ParamSpec("b", 605.0, 100.0, 2000.0, "1/s", "excitatory kernel rise rate (fast)"),
    ParamSpec("B", 32.0, 1.0, 100.0, "mV", "inhibitory PSP gain"),
    ParamSpec("c", 27.5, 5.0, 200.0, "1/s", "inhibitory kernel decay rate (slow)"),
    ParamSpec("d", 55.0, 10.0, 500.0, "1/s", "inhibitory kernel rise rate (fast)"),
    ParamSpec("C1", 32.0, 0.0, 100.0, "", "TCR → IN connectivity"),
    ParamSpec("C2", 3.0, 0.0, 30.0, "", "IN → TCR connectivity"),
    ParamSpec("e0", 25.0, 1.0, 50.0, "1/s", "half the maximal firing rate (2 e0 = 50 1/s)"),
    ParamSpec("nu", 0.56, 0.1, 2.0, "1/mV", "sigmoid steepness"),
    ParamSpec("V0", 6.0, 0.0, 20.0, "mV", "sigmoid threshold"),
    ParamSpec("P", 312.0, 0.0, 1000.0, "1/s", "mean external input rate to TCR"),
    ParamSpec("noise_sd", 100.0, 0.0, 500.0, "1/s", "sd of the input rate per 1-ms sample"),
], owner=NAME)

STATES = ("y1", "y2", "y3", "y4", "y5", "y6")
OUTPUTS = ("v_tcr", "v_in", "rate_out")
OBSERVED = ("v_tcr",)
#: Largest integration step (ms) whose results stay close to dt = 0.1 ms at the default parameters
#: (single node, 10 s, 4 seeds; peak +2 %; at 5 ms every member diverges). ``simulate`` flags runs above it, the CLI refuses them.
MAX_DT_MS = 0.5
CVARS = ("rate_out",)
CVAR_TARGETS = ("TCR input rate (added to P)",)
NOISE_STATES = (3,)
POLARISED = ("TCR",)
STATE_BOUND = 1e7
# tvb76 (W / max W, 4 m/s, defaults): noise-driven 9.5 Hz alpha for coupling 0–1; K = 2 slows it to
# ~8 Hz with larger amplitude, K ≥ 5 leaves alpha (large slow waves, then saturation).
NETWORK_DEFAULTS = {"coupling": 1.0}
UNITS = {"v_tcr": "mV", "v_in": "mV", "rate_out": "1/s", "y1": "mV", "y2": "mV", "y3": "mV",
         "y4": "mV/s", "y5": "mV/s", "y6": "mV/s"}

#: parameter columns by name (``p[IDX.C]``), generated from PARAMS
IDX = PARAMS.indices()
_MS = math.sqrt(1e-3)


def _initial_range():
    d = PARAMS.defaults()
    A, a, b, B, c, dd, C1, C2, e0, P = (d[k] for k in ("A", "a", "b", "B", "c", "d", "C1", "C2",
                                                        "e0", "P"))
    psp_max = (A * (b - a) * P / (a * b),            # y1: external input on TCR
               B * (dd - c) * C2 * 2 * e0 / (c * dd),  # y2: IN -> TCR inhibition
               A * (b - a) * C1 * 2 * e0 / (a * b))  # y3: TCR -> IN excitation
    return psp_initial_range(psp_max, n_derivatives=3)


#: Random start (``simulate(initial="random")``): see :func:`~neurotwin_dash.models.psp_initial_range`.
INITIAL_RANGE = _initial_range()


@njit(cache=True, inline="always")
def dfun(x, p, rates, c_in, u_mem, u_rate):
    A = p[IDX.A]
    a = p[IDX.a]
    b = p[IDX.b]
    B = p[IDX.B]
    c = p[IDX.c]
    d = p[IDX.d]
    e0 = p[IDX.e0]
    nu = p[IDX.nu]
    v0 = p[IDX.V0]
    return (x[3], x[4], x[5],
            A * (b - a) * (p[IDX.P] + c_in[0] + u_rate) - (a + b) * x[3] - a * b * x[0],
            B * (d - c) * p[IDX.C2] * _f(x[2], e0, nu, v0) - (c + d) * x[4] - c * d * x[1],
            # rates[0] = f(x0 - x1 + u_mem)
            A * (b - a) * p[IDX.C1] * rates[0] - (a + b) * x[5] - a * b * x[2])


@njit(cache=True, inline="always")
def cvar(x, p, u_mem):
    return (_f(x[0] - x[1] + u_mem, p[IDX.e0], p[IDX.nu], p[IDX.V0]),)


@njit(cache=True, inline="always")
def observe(x, p, rates, u_mem):
    return (x[0] - x[1], x[2], rates[0])


@njit(cache=True, inline="always")
def noise_gain(p):
    return (p[IDX.A] * (p[IDX.b] - p[IDX.a]) * p[IDX.noise_sd] * _MS,)


def _f_np(v, q):
    return 2 * q["e0"] / (1 + np.exp(q["nu"] * (q["V0"] - v)))


def dfun_numpy(x, p, c_in, u_mem, u_rate):
    q = PARAMS.columns(p)
    A, a, b, B, c, d = (q[k] for k in ("A", "a", "b", "B", "c", "d"))
    y = [x[..., k] for k in range(6)]
    out = np.empty_like(x)
    out[..., :3] = x[..., 3:]
    out[..., 3] = A * (b - a) * (q["P"] + c_in[..., 0] + u_rate) - (a + b) * y[3] - a * b * y[0]
    out[..., 4] = B * (d - c) * q["C2"] * _f_np(y[2], q) - (c + d) * y[4] - c * d * y[1]
    out[..., 5] = A * (b - a) * q["C1"] * _f_np(y[0] - y[1] + u_mem, q) - (a + b) * y[5] - a * b * y[2]
    return out


def cvar_numpy(x, p, u_mem):
    return _f_np(x[..., 0] - x[..., 1] + u_mem, PARAMS.columns(p))[..., None]


def observe_numpy(x, p, u_mem):
    q = PARAMS.columns(p)
    v = x[..., 0] - x[..., 1]
    return np.stack([v, x[..., 2], _f_np(v + u_mem, q)], axis=-1)


def noise_gain_numpy(p):
    q = PARAMS.columns(p)
    return (q["A"] * (q["b"] - q["a"]) * q["noise_sd"] * _MS)[..., None]
