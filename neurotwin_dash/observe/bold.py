"""Simulated BOLD: the Balloon–Windkessel hemodynamic model, sampled at a repetition time.

Per region, with neural drive z(t) (Friston et al. 2000, 2003; Buxton et al. 1998)::

    ds/dt = z − κ s − γ (f − 1)                        vasodilatory signal
    df/dt = s                                          inflow
    τ dv/dt = f − v^(1/α)                              blood volume
    τ dq/dt = f (1 − (1 − ρ)^(1/f)) / ρ − v^(1/α) q / v   deoxyhaemoglobin
    BOLD = V0 [k1 (1 − q) + k2 (1 − q/v) + k3 (1 − v)]

Two constant sets (:data:`CONSTANTS`), chosen with ``constants=``:

* ``"classic"`` (Friston et al. 2000/2003): κ = 0.65 s⁻¹, γ = 0.41 s⁻¹, τ = 0.98 s, α = 0.32,
  ρ = 0.34, V0 = 0.02, k1 = 7ρ, k2 = 2, k3 = 2ρ − 0.2. A 0.5 s unit impulse peaks ~3.2 s.
* ``"stephan2007"`` (Stephan et al. 2007, 3 T): κ = 0.64, γ = 0.32, τ = 2 s, α = 0.32, ρ = 0.34,
  V0 = 0.02, k1 = 4.3 ϑ0 ρ TE, k2 = ε r0 ρ TE, k3 = 1 − ε with ϑ0 = 40.3 s⁻¹, r0 = 25 s⁻¹,
  ε = 1.43, TE = 0.04 s. A 0.5 s unit impulse peaks ~4.3 s.

Any constant can be overridden with a dict (``constants={"base": "classic", "tau": 1.2}``).

Neural drive (:func:`bold_from_result`): the simulators' transmitted firing rate
(``rate_out``, s⁻¹) when recorded, else the EEG variable (membrane potential, mV). The drive
is normalised per region before it enters the model — ``drive_norm="zscore"`` (default:
(x − mean)/sd, so z is dimensionless, zero-mean with unit variance, and BOLD is a deviation
from the resting baseline independent of the model's units), ``"relative"`` ((x − mean)/mean,
for positive rates), or ``"none"`` (use x as is) — then multiplied by ``drive_gain``.

Numerics: explicit Euler at a fine step ``dt_ms`` (≤ 1 ms; never at the TR) in s and the
logarithms of f, v, q (Stephan et al. 2007, NeuroImage 38:387), so the positive states stay
positive; the input held constant over each of its samples (zero-order hold; its sample interval
must be a whole number of steps), run in chunks of input samples so that long runs never hold the
whole fine-grained series in memory. The state is sampled every TR (exact step indices
round(k·TR/dt)), starting with the state at the first input sample's time.

Range: a drive that stays below −γ (for z-scored drives: the long low phase of a slow or
saturated signal) makes ḟ = s pull the inflow to zero in finite time — the model then has no
solution, in any coordinates. The inflow is held at :data:`FLOW_FLOOR` (1 % of rest) until s
turns positive; the BOLD there is clipped (≈ −5 % with the classic constants), a
``RuntimeWarning`` says how often, and ``attrs["flow_floor_fraction"]`` records it. Lower
``drive_gain`` to stay in the model's linear range (slow drives: |z| ≲ γ).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import xarray as xr
from numba import njit

from ..params import ParamError
from .eeg import pick_eeg_variable

__all__ = ["CONSTANTS", "FLOW_FLOOR", "resolve_constants", "balloon_windkessel", "balloon_windkessel_reference",
           "bold_from_result", "impulse_response"]

_THETA0, _R0, _EPS, _TE = 40.3, 25.0, 1.43, 0.04
_RHO = 0.34

CONSTANTS: dict[str, dict[str, float]] = {
    "classic": dict(kappa=0.65, gamma=0.41, tau=0.98, alpha=0.32, rho=_RHO, V0=0.02,
                    k1=7 * _RHO, k2=2.0, k3=2 * _RHO - 0.2),
    "stephan2007": dict(kappa=0.64, gamma=0.32, tau=2.0, alpha=0.32, rho=_RHO, V0=0.02,
                        k1=4.3 * _THETA0 * _RHO * _TE, k2=_EPS * _R0 * _RHO * _TE, k3=1 - _EPS),
}
_BOUNDS = dict(kappa=(0.1, 5.0), gamma=(0.05, 5.0), tau=(0.1, 10.0), alpha=(0.05, 1.0),
               rho=(0.05, 0.95), V0=(0.0, 0.2), k1=(-20.0, 20.0), k2=(-20.0, 20.0), k3=(-20.0, 20.0))
_ORDER = ("kappa", "gamma", "tau", "alpha", "rho", "V0", "k1", "k2", "k3")


def resolve_constants(constants="classic") -> dict[str, float]:
    """Constant set by name, or a dict of overrides (key ``base`` names the set, default classic)."""
    if isinstance(constants, str):
        if constants not in CONSTANTS:
            raise ParamError(f"BOLD constants {constants!r} unknown; allowed: {', '.join(CONSTANTS)}")
        return dict(CONSTANTS[constants])
    if not isinstance(constants, dict):
        raise ParamError(f"BOLD constants must be a name or dict, got {type(constants).__name__}")
    over = dict(constants)
    out = resolve_constants(over.pop("base", "classic"))
    for k, v in over.items():
        if k not in _BOUNDS:
            raise ParamError(f"BOLD constant {k!r} unknown; allowed: {', '.join(_ORDER)}")
        lo, hi = _BOUNDS[k]
        if not (np.isfinite(v) and lo <= v <= hi):
            raise ParamError(f"BOLD constant {k!r} = {v} outside the allowed range [{lo}, {hi}]")
        out[k] = float(v)
    return out


# --- kernels --------------------------------------------------------------------------------
#
# States: s (linear, may be negative) and the logarithms of the positive states f, v, q
# (Stephan et al. 2007, NeuroImage 38:387: x̃ = ln x, dx̃/dt = ẋ/x), so v and q stay positive by
# construction and no step can overshoot them through zero:
#
#     d ln f/dt = s / f
#     d ln v/dt = (f − v^(1/α)) / (τ v)
#     d ln q/dt = (f (1 − (1 − ρ)^(1/f)) / ρ − v^(1/α) q / v) / (τ q)
#
# The log transform cannot rescue the inflow itself: while s stays negative, ḟ = s reaches f = 0 in
# finite time (ln f → −∞) — this happens whenever the drive stays below −γ (linear steady state
# f* = 1 + z/γ ≤ 0), e.g. the drop of a z-scored saturated signal. There the model has no solution;
# ln f is held at ln FLOW_FLOOR (flow stopped) until s turns positive again, the steps are counted
# and reported (the BOLD there is clipped, not the model's linear response).

FLOW_FLOOR = 0.01
"""Lowest inflow f (fraction of rest) the integration allows; reached only for drives below −γ."""

_EXACT_ABOVE = 0.01   # carried exponentials are re-evaluated exactly when a step's log change exceeds this


@njit(cache=True, fastmath=True, inline="always")
def _exp_small(x):
    """exp(x) by its 4th-order Taylor polynomial: relative error < x⁵/120 (< 1e-12 for |x| ≤ 0.01)."""
    return 1.0 + x * (1.0 + x * 0.5 * (1.0 + x * (1.0 / 3.0) * (1.0 + x * 0.25)))


@njit(cache=True, fastmath=True, inline="always")
def _exact(r, lf, lv, lq, kk, log1mr, f, inv_f, inv_v, w, inv_q, p):
    """Evaluate region ``r``'s carried exponentials exactly from its log states."""
    f[r] = math.exp(lf[r])
    inv_f[r] = 1.0 / f[r]
    inv_v[r] = math.exp(-lv[r])
    w[r] = math.exp(kk * lv[r])
    inv_q[r] = math.exp(-lq[r])
    p[r] = math.exp(log1mr * inv_f[r])


@njit(cache=True, fastmath=True, error_model="numpy")   # no zero-division branch: the loop vectorises
def _bw_chunk(z, hold, dt, c, state, sample_steps, k_next, step0, out, floor_steps):
    """Integrate a chunk. z: (n_in, n_region) drive; each sample lasts ``hold`` steps of ``dt`` s.

    state: (4, n_region) s, ln f, ln v, ln q (updated in place). sample_steps: global step indices
    at which the state is read (before that step); out: (n_samples, n_region) BOLD, rows from
    ``k_next`` on are filled. floor_steps: (n_region,) int, incremented for each step the inflow
    is held at :data:`FLOW_FLOOR`.

    Explicit Euler in the log states, exactly as the reference. Speed: the exponentials the
    derivatives need (f, 1/v, v^(1/α − 1), 1/q, (1 − ρ)^(1/f)) are evaluated exactly at every
    input sample and carried between by multiplying with exp(Δ) of their exponent's change, where
    exp(Δ) is a 4th-order polynomial (|Δ| ≤ 1e-4 per step in ordinary use: error ~1e-22). So the
    loop over regions has no transcendental calls and vectorises; a region whose step changes an
    exponent by more than ``_EXACT_ABOVE`` (near the flow floor) is re-evaluated exactly.
    """
    kappa, gamma, tau, alpha, rho, V0, k1, k2, k3 = c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]
    kk = 1.0 / alpha - 1.0              # v^(1/α)/v = v^(1/α − 1)
    dt_tau = dt / tau
    inv_rho = 1.0 / rho
    log1mr = math.log(1.0 - rho)
    lf_min = math.log(FLOW_FLOOR)
    n_in, n_reg = z.shape
    n_samp = sample_steps.shape[0]
    s = state[0].copy()
    lf = state[1].copy()
    lv = state[2].copy()
    lq = state[3].copy()
    f = np.empty(n_reg)        # f
    inv_f = np.empty(n_reg)    # 1/f
    inv_v = np.empty(n_reg)    # 1/v
    w = np.empty(n_reg)        # v^(1/α − 1)
    inv_q = np.empty(n_reg)    # 1/q
    p = np.empty(n_reg)        # (1 − ρ)^(1/f)
    big = np.empty(n_reg)
    k = k_next
    g = step0
    for i in range(n_in):
        for r in range(n_reg):
            _exact(r, lf, lv, lq, kk, log1mr, f, inv_f, inv_v, w, inv_q, p)
        for h in range(hold):
            while k < n_samp and sample_steps[k] == g:
                for r in range(n_reg):
                    vr = math.exp(lv[r])
                    qr = math.exp(lq[r])
                    out[k, r] = V0 * (k1 * (1.0 - qr) + k2 * (1.0 - qr / vr) + k3 * (1.0 - vr))
                k += 1
            n_big = 0
            for r in range(n_reg):
                sr = s[r]
                fr = f[r]
                wr = w[r]
                d_lv = dt_tau * (fr * inv_v[r] - wr)
                d_lq = dt_tau * (fr * (1.0 - p[r]) * inv_rho * inv_q[r] - wr)
                lf_try = lf[r] + dt * sr * inv_f[r]
                at_floor = lf_try < lf_min
                lf_new = lf_min if at_floor else lf_try
                d_lf = lf_new - lf[r]
                floor_steps[r] += at_floor
                s[r] = sr + dt * (z[i, r] - kappa * sr - gamma * (fr - 1.0))
                lf[r] = lf_new
                lv[r] += d_lv
                lq[r] += d_lq
                f_new = fr * _exp_small(d_lf)
                inv_f_new = 1.0 / f_new
                d_lp = log1mr * (inv_f_new - inv_f[r])
                f[r] = f_new
                inv_f[r] = inv_f_new
                p[r] *= _exp_small(d_lp)
                inv_v[r] *= _exp_small(-d_lv)
                w[r] *= _exp_small(kk * d_lv)
                inv_q[r] *= _exp_small(-d_lq)
                m = max(max(abs(d_lf), abs(d_lp)), max(abs(kk * d_lv), abs(d_lq)))
                big[r] = m
                n_big += m > _EXACT_ABOVE
            if n_big:
                for r in range(n_reg):
                    if big[r] > _EXACT_ABOVE:
                        _exact(r, lf, lv, lq, kk, log1mr, f, inv_f, inv_v, w, inv_q, p)
            g += 1
    state[0] = s
    state[1] = lf
    state[2] = lv
    state[3] = lq


def balloon_windkessel_reference(z, dt_in, dt, constants="classic", tr=None, return_floor_steps=False):
    """Slow, obvious NumPy reference: same equations and sampling, one step at a time.

    Explicit Euler in s, ln f, ln v, ln q with every power evaluated exactly; ln f held at
    ln :data:`FLOW_FLOOR` from below. ``z`` (n_in, n_region) drive sampled every ``dt_in`` s;
    returns BOLD (n_samples, n_region) sampled every ``tr`` s (every input sample when ``tr`` is
    None), and with ``return_floor_steps`` also the number of steps each region's inflow sat at
    the floor.
    """
    c = resolve_constants(constants)
    z = np.atleast_2d(np.asarray(z, float))
    hold = int(round(dt_in / dt))
    n_steps = z.shape[0] * hold
    tr = dt_in if tr is None else tr
    samples = _sample_steps(n_steps, dt, tr)
    s = np.zeros(z.shape[1]); lf = np.zeros_like(s); lv = np.zeros_like(s); lq = np.zeros_like(s)
    floor_steps = np.zeros(z.shape[1], np.int64)
    out = []
    k = 0
    for g in range(n_steps):
        f, v, q = np.exp(lf), np.exp(lv), np.exp(lq)
        while k < len(samples) and samples[k] == g:
            out.append(c["V0"] * (c["k1"] * (1 - q) + c["k2"] * (1 - q / v) + c["k3"] * (1 - v)))
            k += 1
        zi = z[g // hold]
        vpow = v ** (1 / c["alpha"])
        ds = zi - c["kappa"] * s - c["gamma"] * (f - 1)
        dlf = s / f
        dlv = (f - vpow) / (c["tau"] * v)
        dlq = (f * (1 - (1 - c["rho"]) ** (1 / f)) / c["rho"] - vpow * q / v) / (c["tau"] * q)
        lf_try = lf + dt * dlf
        floor_steps += lf_try < np.log(FLOW_FLOOR)
        s, lf = s + dt * ds, np.maximum(lf_try, np.log(FLOW_FLOOR))
        lv, lq = lv + dt * dlv, lq + dt * dlq
    bold = np.array(out).reshape(len(samples), z.shape[1])
    return (bold, floor_steps) if return_floor_steps else bold


def _sample_steps(n_steps: int, dt: float, tr: float) -> np.ndarray:
    n = int(math.floor(n_steps * dt / tr + 1e-9))
    steps = np.round(np.arange(n + 1) * tr / dt).astype(np.int64)
    return steps[steps < n_steps]


# --- public API -------------------------------------------------------------------------------

def balloon_windkessel(drive, tr_s: float = 0.72, dt_ms: float | None = None, constants="classic",
                       chunk_s: float = 60.0) -> xr.DataArray:
    """BOLD signal of a neural drive, integrated at ``dt_ms`` and sampled every ``tr_s``.

    Parameters
    ----------
    drive : xarray.DataArray (…, time, region)
        Neural drive z (dimensionless, already normalised), uniformly sampled; ``time`` in s.
        Extra leading dims (e.g. ``batch``) are integrated independently.
    tr_s : float
        Repetition time (s), 0.001–10 (≥ the drive interval).
    dt_ms : float, optional
        Integration step (ms), ≤ 1 and dividing the input's sample interval. Default: the input
        interval if ≤ 1 ms, else the largest whole fraction of it ≤ 1 ms.
    constants : str | dict
        ``"classic"``, ``"stephan2007"`` or overrides (see :func:`resolve_constants`).
    chunk_s : float
        Seconds of input integrated per chunk.

    Returns
    -------
    xarray.DataArray (…, time, region)
        BOLD as a fraction (0.01 = 1 % signal change); ``time`` in s at multiples of ``tr_s`` from the
        first input time. attrs: constants, dt_ms, tr_s, flow_floor_fraction (share of region-time
        with the inflow held at :data:`FLOW_FLOOR`; > 0 also warns).
    """
    if not isinstance(drive, xr.DataArray) or "time" not in drive.dims or "region" not in drive.dims:
        raise ValueError("drive must be an xarray.DataArray with dims (…, time, region)")
    c = resolve_constants(constants)
    t = np.asarray(drive["time"].values, float)
    if t.size < 2:
        raise ValueError("drive needs at least two time samples")
    dt_in = float(np.median(np.diff(t)))
    if not np.allclose(np.diff(t), dt_in, rtol=1e-6, atol=1e-9):
        raise ValueError("drive time axis is not uniformly sampled")
    if not (np.isfinite(tr_s) and 0.001 <= tr_s <= 10.0):
        raise ParamError(f"tr_s = {tr_s} outside the allowed range [0.001, 10] s")
    if dt_ms is None:
        hold = max(1, int(math.ceil(dt_in * 1000.0 - 1e-9)))
        dt = dt_in / hold
    else:
        if not (np.isfinite(dt_ms) and 0.001 <= dt_ms <= 1.0):
            raise ParamError(f"dt_ms = {dt_ms} outside the allowed range [0.001, 1] ms (BOLD must be "
                             f"integrated finely, never at the TR)")
        dt = dt_ms / 1000.0
        hold = int(round(dt_in / dt))
        if hold < 1 or abs(hold * dt - dt_in) > 1e-6 * dt_in:
            raise ParamError(f"dt_ms = {dt_ms} must divide the drive's sample interval "
                             f"{dt_in * 1000:g} ms into a whole number of steps")
        dt = dt_in / hold
    if tr_s < dt_in:
        raise ParamError(f"tr_s = {tr_s} is shorter than the drive's sample interval {dt_in} s")
    if not (np.isfinite(chunk_s) and chunk_s > 0):
        raise ParamError(f"chunk_s must be > 0, got {chunk_s}")

    da = drive.transpose(..., "time", "region")
    lead = da.dims[:-2]
    lead_shape = tuple(da.sizes[d] for d in lead)
    n_in, n_reg = da.sizes["time"], da.sizes["region"]
    n_series = int(np.prod(lead_shape)) if lead_shape else 1
    n_steps = n_in * hold
    samples = _sample_steps(n_steps, dt, tr_s)
    cvec = np.array([c[k] for k in _ORDER], float)
    chunk = max(1, int(round(chunk_s / dt_in)))
    # all series side by side as "regions" of one kernel call (one pass over time)
    state = np.zeros((4, n_series * n_reg))      # s = 0, ln f = ln v = ln q = 0: rest
    floor_steps = np.zeros(n_series * n_reg, np.int64)
    out = np.full((len(samples), n_series * n_reg), np.nan)
    k_next = 0
    for start in range(0, n_in, chunk):
        block = da.isel(time=slice(start, start + chunk)).values   # (…, t, region); dask computes here
        block = np.moveaxis(block.reshape((n_series,) + block.shape[-2:]), 0, 1).reshape(block.shape[-2], -1)
        block = np.ascontiguousarray(block, dtype=np.float64)
        if not np.all(np.isfinite(block)):
            raise ValueError("drive contains NaN/Inf (diverged simulation?); drop those members first")
        _bw_chunk(block, hold, dt, cvec, state, samples, k_next, start * hold, out, floor_steps)
        k_next = int(np.searchsorted(samples, (start + block.shape[0]) * hold))
    floor_fraction = float(floor_steps.sum()) / (floor_steps.size * n_steps)
    n_floored = int(np.count_nonzero(floor_steps))
    if n_floored:
        warnings.warn(
            f"BOLD: inflow f held at its floor ({FLOW_FLOOR:g} of rest) in {n_floored} of {floor_steps.size} "
            f"series, {100 * floor_fraction:.2g} % of all region-time: the drive stayed below "
            f"−γ = −{c['gamma']:g}, outside the Balloon–Windkessel model's range, and the BOLD there is "
            f"clipped. Scale the drive down (bold_from_result(drive_gain=...)) to stay in its linear range.",
            RuntimeWarning, stacklevel=3)
    bold = out.reshape(len(samples), n_series, n_reg)
    bold = np.moveaxis(bold, 1, 0).reshape(lead_shape + (len(samples), n_reg))
    times = t[0] + samples * dt
    coords = {d: da.coords[d] for d in lead if d in da.coords}
    coords.update({k: v for k, v in da.coords.items() if v.dims and set(v.dims) <= set(lead)})
    coords["time"] = times
    coords["region"] = da["region"].values
    return xr.DataArray(
        bold, dims=lead + ("time", "region"), coords=coords, name="bold",
        attrs={"units": "1 (fractional signal change)", "model": "Balloon–Windkessel (Friston 2000/2003)",
               "constants": constants if isinstance(constants, str) else str(constants),
               **{f"bw_{k}": c[k] for k in _ORDER}, "dt_ms": dt * 1000.0, "tr_s": float(tr_s),
               "integration": "explicit Euler in s, ln f, ln v, ln q (Stephan 2007), zero-order hold input",
               "flow_floor": FLOW_FLOOR, "flow_floor_fraction": floor_fraction},
    )


def bold_from_result(result: xr.Dataset, variable=None, tr_s: float = 0.72, dt_ms: float | None = None,
                     constants="classic", drive_norm: str = "zscore", drive_gain: float = 1.0,
                     chunk_s: float = 60.0) -> xr.DataArray:
    """BOLD from a simulation result.

    The neural drive is ``variable`` (default: ``rate_out`` when recorded, else the EEG variable,
    see :func:`neurotwin_dash.observe.eeg.pick_eeg_variable`), normalised per region and member
    over time by ``drive_norm`` (``"zscore"``, ``"relative"`` or ``"none"``) and scaled by
    ``drive_gain``. Diverged members (NaN) give NaN BOLD. A z-scored slow or saturated signal can
    leave the model's range at ``drive_gain = 1``: the inflow is then held at :data:`FLOW_FLOOR`,
    with a ``RuntimeWarning`` (see the module notes); a gain ~0.1 keeps such drives linear.
    """
    if variable is None:
        variable = "rate_out" if "rate_out" in result else pick_eeg_variable(result)
    names = [variable] if isinstance(variable, str) else list(variable)
    missing = [v for v in names if v not in result]
    if missing:
        raise ValueError(f"variable {missing} not in the result; available: {list(result.data_vars)}")
    x = sum(result[v] for v in names)
    mean = x.mean("time")
    if drive_norm == "zscore":
        sd = x.std("time")
        z = (x - mean) / sd.where(sd > 0, 1.0)
    elif drive_norm == "relative":
        z = (x - mean) / abs(mean).where(abs(mean) > 0, 1.0)
    elif drive_norm == "none":
        z = x
    else:
        raise ValueError(f"drive_norm {drive_norm!r} unknown; allowed: 'zscore', 'relative', 'none'")
    z = z * float(drive_gain)
    bad = None
    if "batch" in z.dims:
        bad = ~np.isfinite(z).all([d for d in z.dims if d != "batch"])
        if bool(bad.any()):
            z = z.where(~bad, 0.0)
    out = balloon_windkessel(z, tr_s=tr_s, dt_ms=dt_ms, constants=constants, chunk_s=chunk_s)
    if bad is not None and bool(bad.any()):
        out = out.where(~bad)
    out.attrs.update(drive="+".join(names), drive_norm=drive_norm, drive_gain=float(drive_gain))
    return out


def impulse_response(constants="classic", duration_s: float = 30.0, impulse_s: float = 0.5,
                     amplitude: float = 1.0, dt_ms: float = 1.0, tr_s: float = 0.01) -> xr.DataArray:
    """BOLD response of one region to a box-car impulse of ``amplitude`` lasting ``impulse_s``."""
    dt_in = dt_ms / 1000.0
    t = np.arange(int(round(duration_s / dt_in))) * dt_in
    z = np.where(t < impulse_s, amplitude, 0.0)[:, None]
    drive = xr.DataArray(z, dims=("time", "region"), coords={"time": t, "region": ["r0"]})
    return balloon_windkessel(drive, tr_s=tr_s, dt_ms=dt_ms, constants=constants).isel(region=0)
