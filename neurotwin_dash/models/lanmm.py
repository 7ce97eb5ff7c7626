"""Laminar neural mass model, LaNMM (Sanchez-Todo et al. 2023, NeuroImage 270:119938).

Sanchez-Todo R, Bastos AM, Lopez-Sola E, Mercadal B, Santarnecchi E, Miller EK, Deco G,
Ruffini G (2023) A physical neural mass model framework for the analysis of oscillatory
generators from laminar electrophysiological recordings.

One cortical column, two coupled subsystems:

* a Jansen–Rit-like deep loop — pyramidal P1 with spiny stellate (SS) and somatostatin (SST)
  interneurons — that produces alpha;
* a PING-like superficial loop — pyramidal P2 with parvalbumin (PV) interneurons — that
  produces gamma (P2's sigmoid threshold is 1 mV instead of 6 mV).

14 second-order synapses ``ü_k = A_k a_k C_k x_k − 2 a_k u̇_k − a_k² u_k`` (28 states:
``u1..u14`` then ``du1..du14``), with AMPA (A = 3.25 mV, a = 100 s⁻¹), GABA_slow
(A = −22 mV, a = 50 s⁻¹) and GABA_fast (A = −30 mV, a = 220 s⁻¹) kinetics; the presynaptic
rates ``x_k`` and weights ``C_k`` follow :data:`SYNAPSES`. Membrane potentials::

    v_P1 = u1 + u2 + u3 + u11    v_SS = u4    v_SST = u5
    v_P2 = u6 + u7 + u8 + u12    v_PV = u9 + u10 + u13 + u14

External inputs: ``e1`` to P1 (synapse 3), ``e2`` to P2 (synapse 8), ``e_pv`` to PV (14); the
deterministic part of each is clipped at 0.

Network coupling (the "simplest scheme" of docs/science.md §4): two transmitted rates, P1's and
P2's firing rates; ``K Σ_j W_ij r_P1,j(t − τ)`` adds to region i's ``e1`` (the P1-targeting
input) and ``K Σ_j W_ij r_P2,j(t − τ)`` to its ``e2`` (the P2-targeting input).

Noise: independent white noise of sd ``noise_sd`` (per 1-ms sample) on ``e1`` and on ``e2``,
integrated on the velocity states of synapses 3 and 8.

Drives: ``membrane`` (mV) polarises **P1 and P2** (added to both somatic potentials inside their
sigmoids); ``rate`` (1/s) adds to both ``e1`` and ``e2``.

Alzheimer's path (Ruffini's code): ``C7`` (PV → P2) 550 healthy → 300 MCI → 140 AD.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..params import ParamSet, ParamSpec
from . import psp_initial_range
from ._kernel import sigmoid as _sig

NAME = "lanmm"

#: (from, to, synapse type, default C) of synapses 1..14.
SYNAPSES = (
    ("SS", "P1", "ampa", 108.0),
    ("SST", "P1", "gaba_slow", 33.7),
    ("e1", "P1", "ampa", 1.0),
    ("P1", "SS", "ampa", 135.0),
    ("P1", "SST", "ampa", 33.75),
    ("P2", "P2", "ampa", 70.0),
    ("PV", "P2", "gaba_fast", 550.0),
    ("e2", "P2", "ampa", 1.0),
    ("P2", "PV", "ampa", 200.0),
    ("PV", "PV", "gaba_fast", 100.0),
    ("P2", "P1", "ampa", 80.0),
    ("P1", "P2", "ampa", 200.0),
    ("P1", "PV", "ampa", 30.0),
    ("e_pv", "PV", "ampa", 1.0),
)

PARAMS = ParamSet([
    ParamSpec("A_ampa", 3.25, 1.0, 10.0, "mV", "AMPA PSP gain"),
    ParamSpec("a_ampa", 100.0, 50.0, 200.0, "1/s", "AMPA rate constant"),
    ParamSpec("A_gaba_slow", 22.0, 5.0, 50.0, "mV", "GABA_slow PSP gain (magnitude; the PSP is negative)"),
    ParamSpec("a_gaba_slow", 50.0, 20.0, 100.0, "1/s", "GABA_slow rate constant"),
    ParamSpec("A_gaba_fast", 30.0, 5.0, 60.0, "mV", "GABA_fast PSP gain (magnitude; the PSP is negative)"),
    ParamSpec("a_gaba_fast", 220.0, 100.0, 500.0, "1/s", "GABA_fast rate constant"),
] + [
    ParamSpec(f"C{k + 1}", c, 0.0, max(4.0 * c, 10.0), "",
              f"synapse {k + 1}: {src} → {dst} ({kind}) connectivity")
    for k, (src, dst, kind, c) in enumerate(SYNAPSES)
] + [
    ParamSpec("v0", 6.0, 3.0, 8.0, "mV", "sigmoid threshold of P1, SS, SST and PV"),
    ParamSpec("v0_p2", 1.0, -3.0, 8.0, "mV", "sigmoid threshold of P2"),
    ParamSpec("e0", 2.5, 1.0, 10.0, "1/s", "half the maximal firing rate"),
    ParamSpec("r", 0.56, 0.1, 2.0, "1/mV", "sigmoid steepness"),
    ParamSpec("e1", 270.0, 0.0, 600.0, "1/s", "mean external input rate to P1"),
    ParamSpec("e2", 90.0, 0.0, 600.0, "1/s", "mean external input rate to P2"),
    ParamSpec("e_pv", 0.0, 0.0, 600.0, "1/s", "mean external input rate to PV"),
    ParamSpec("noise_sd", 30.0, 0.0, 200.0, "1/s", "sd of e1 and of e2 per 1-ms sample (independent)"),
], owner=NAME)

STATES = tuple(f"u{k}" for k in range(1, 15)) + tuple(f"du{k}" for k in range(1, 15))
OUTPUTS = ("v_p1", "v_p2", "rate_p1", "rate_p2", "v_ss", "v_sst", "v_pv")
OBSERVED = ("v_p1", "v_p2")
#: Largest integration step (ms) whose results stay close to dt = 0.1 ms at the default parameters
#: (single node, 10 s, 4 seeds; peak -3 %; at 1 ms -6 % and sd +40 %). ``simulate`` flags runs above it, the CLI refuses them.
MAX_DT_MS = 0.5
CVARS = ("rate_p1", "rate_p2")
CVAR_TARGETS = ("P1 external input e1", "P2 external input e2")
NOISE_STATES = (14 + 2, 14 + 7)
POLARISED = ("P1", "P2")
STATE_BOUND = 1e7
# tvb76 (W / max W, 4 m/s, defaults): P1 alpha (10.5 Hz) and P2 gamma (39–40 Hz) in every region for
# coupling 0–1; from K ≈ 2 the network input (mostly P2 → e2) strengthens gamma and suppresses alpha,
# and at K ≥ 5 P1 follows P2 at ~41 Hz (no alpha left).
NETWORK_DEFAULTS = {"coupling": 1.0}
UNITS = dict({o: ("1/s" if o.startswith("rate") else "mV") for o in OUTPUTS},
             **{f"u{k}": "mV" for k in range(1, 15)}, **{f"du{k}": "mV/s" for k in range(1, 15)})

#: parameter columns by name (``p[IDX.C7]``), generated from PARAMS
IDX = PARAMS.indices()
_MS = math.sqrt(1e-3)


def _initial_range():
    d = PARAMS.defaults()
    kin = {"ampa": (d["A_ampa"], d["a_ampa"]), "gaba_slow": (-d["A_gaba_slow"], d["a_gaba_slow"]),
           "gaba_fast": (-d["A_gaba_fast"], d["a_gaba_fast"])}
    rate = {"e1": d["e1"], "e2": d["e2"], "e_pv": d["e_pv"]}
    psp_max = []
    for k, (src, _dst, kind, _c) in enumerate(SYNAPSES):
        A, a = kin[kind]                              # GABA gains negative: their PSPs are < 0
        psp_max.append(A * d[f"C{k + 1}"] * rate.get(src, 2 * d["e0"]) / a)
    return psp_initial_range(psp_max, n_derivatives=14)


#: Random start (``simulate(initial="random")``): see :func:`~neurotwin_dash.models.psp_initial_range`.
INITIAL_RANGE = _initial_range()


@njit(cache=True, inline="always")
def _syn(A, a, drive, u, du):
    return A * a * drive - 2.0 * a * du - a * a * u


@njit(cache=True, inline="always")
def dfun(x, p, rates, c_in, u_mem, u_rate):
    """Right-hand side of one column (28-tuple); see the module docstring."""
    e0 = p[IDX.e0]
    r = p[IDX.r]
    v0 = p[IDX.v0]
    Aa = p[IDX.A_ampa]
    aa = p[IDX.a_ampa]
    As = -p[IDX.A_gaba_slow]
    as_ = p[IDX.a_gaba_slow]
    Af = -p[IDX.A_gaba_fast]
    af = p[IDX.a_gaba_fast]
    r_p1 = rates[0]                      # the cvar of this state: P1 and P2 rates
    r_p2 = rates[1]
    r_ss = _sig(x[3], e0, r, v0)
    r_sst = _sig(x[4], e0, r, v0)
    r_pv = _sig(x[8] + x[9] + x[12] + x[13], e0, r, v0)
    in1 = max(p[IDX.e1] + c_in[0] + u_rate, 0.0)
    in2 = max(p[IDX.e2] + c_in[1] + u_rate, 0.0)
    inpv = max(p[IDX.e_pv], 0.0)
    return (x[14], x[15], x[16], x[17], x[18], x[19], x[20],
            x[21], x[22], x[23], x[24], x[25], x[26], x[27],
            _syn(Aa, aa, p[IDX.C1] * r_ss, x[0], x[14]),
            _syn(As, as_, p[IDX.C2] * r_sst, x[1], x[15]),
            _syn(Aa, aa, p[IDX.C3] * in1, x[2], x[16]),
            _syn(Aa, aa, p[IDX.C4] * r_p1, x[3], x[17]),
            _syn(Aa, aa, p[IDX.C5] * r_p1, x[4], x[18]),
            _syn(Aa, aa, p[IDX.C6] * r_p2, x[5], x[19]),
            _syn(Af, af, p[IDX.C7] * r_pv, x[6], x[20]),
            _syn(Aa, aa, p[IDX.C8] * in2, x[7], x[21]),
            _syn(Aa, aa, p[IDX.C9] * r_p2, x[8], x[22]),
            _syn(Af, af, p[IDX.C10] * r_pv, x[9], x[23]),
            _syn(Aa, aa, p[IDX.C11] * r_p2, x[10], x[24]),
            _syn(Aa, aa, p[IDX.C12] * r_p1, x[11], x[25]),
            _syn(Aa, aa, p[IDX.C13] * r_p1, x[12], x[26]),
            _syn(Aa, aa, p[IDX.C14] * inpv, x[13], x[27]))


@njit(cache=True, inline="always")
def cvar(x, p, u_mem):
    """Transmitted rates (P1, P2) of one column (1/s)."""
    return (_sig(x[0] + x[1] + x[2] + x[10] + u_mem, p[IDX.e0], p[IDX.r], p[IDX.v0]),
            _sig(x[5] + x[6] + x[7] + x[11] + u_mem, p[IDX.e0], p[IDX.r], p[IDX.v0_p2]))


@njit(cache=True, inline="always")
def observe(x, p, rates, u_mem):
    return (x[0] + x[1] + x[2] + x[10], x[5] + x[6] + x[7] + x[11], rates[0], rates[1],
            x[3], x[4], x[8] + x[9] + x[12] + x[13])


@njit(cache=True, inline="always")
def noise_gain(p):
    g = p[IDX.A_ampa] * p[IDX.a_ampa] * p[IDX.noise_sd] * _MS
    return (g * p[IDX.C3], g * p[IDX.C8])


# --- NumPy reference: table-driven over SYNAPSES ------------------------------------------

_KIN = {"ampa": ("A_ampa", "a_ampa", 1.0), "gaba_slow": ("A_gaba_slow", "a_gaba_slow", -1.0),
        "gaba_fast": ("A_gaba_fast", "a_gaba_fast", -1.0)}
_MEMBRANE = {"P1": (1, 2, 3, 11), "SS": (4,), "SST": (5,), "P2": (6, 7, 8, 12), "PV": (9, 10, 13, 14)}


def _potentials(x, u_mem):
    v = {pop: sum(x[..., k - 1] for k in syn) for pop, syn in _MEMBRANE.items()}
    v["P1"] = v["P1"] + u_mem
    v["P2"] = v["P2"] + u_mem
    return v


def _rates(v, q):
    S = lambda vv, v0: 2 * q["e0"] / (1 + np.exp(q["r"] * (v0 - vv)))  # noqa: E731
    return {pop: S(vv, q["v0_p2"] if pop == "P2" else q["v0"]) for pop, vv in v.items()}


def dfun_numpy(x, p, c_in, u_mem, u_rate):
    """Reference right-hand side over (batch, region, 28), one synapse of :data:`SYNAPSES` at a time."""
    q = PARAMS.columns(p)
    rate = _rates(_potentials(x, u_mem), q)
    rate["e1"] = np.maximum(q["e1"] + c_in[..., 0] + u_rate, 0.0)
    rate["e2"] = np.maximum(q["e2"] + c_in[..., 1] + u_rate, 0.0)
    rate["e_pv"] = np.maximum(q["e_pv"], 0.0)
    d = np.empty_like(x)
    d[..., :14] = x[..., 14:]
    for k, (src, _dst, kind, _c) in enumerate(SYNAPSES):
        gain, const, sign = _KIN[kind]
        A, a = sign * q[gain], q[const]
        d[..., 14 + k] = A * a * q[f"C{k + 1}"] * rate[src] - 2 * a * x[..., 14 + k] - a ** 2 * x[..., k]
    return d


def cvar_numpy(x, p, u_mem):
    rate = _rates(_potentials(x, u_mem), PARAMS.columns(p))
    return np.stack([rate["P1"], rate["P2"]], axis=-1)


def observe_numpy(x, p, u_mem):
    v = _potentials(x, 0.0)
    rate = _rates(_potentials(x, u_mem), PARAMS.columns(p))
    return np.stack([v["P1"], v["P2"], rate["P1"], rate["P2"], v["SS"], v["SST"], v["PV"]], axis=-1)


def noise_gain_numpy(p):
    q = PARAMS.columns(p)
    g = q["A_ampa"] * q["a_ampa"] * q["noise_sd"] * _MS
    return np.stack([g * q["C3"], g * q["C8"]], axis=-1)
