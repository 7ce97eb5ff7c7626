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

Numerics: explicit Euler at a fine step ``dt_ms`` (≤ 1 ms; never at the TR), the input held
constant over each of its samples (zero-order hold; its sample interval must be a whole
number of steps), run in chunks of input samples so that long runs never hold the whole
fine-grained series in memory. The state is sampled every TR (exact step indices
round(k·TR/dt)), starting with the state at the first input sample's time.
"""
from __future__ import annotations

import math

import numpy as np
import xarray as xr
from numba import njit

__all__ = ["CONSTANTS", "resolve_constants", "balloon_windkessel", "balloon_windkessel_reference",
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
    from ..params import ParamError
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

@njit(cache=True, fastmath=True)
def _bw_chunk(z, hold, dt, c, state, sample_steps, k_next, step0, out):
    """Integrate a chunk. z: (n_in, n_region) drive; each sample lasts ``hold`` steps of ``dt`` s.

    state: (4, n_region) s, f, v, q (updated in place). sample_steps: global step indices at
    which the state is read (before that step); out: (n_samples, n_region) BOLD, rows from
    ``k_next`` on are filled.

    Speed: the two powers w = v^(1/α) and e = (1 − ρ)^(1/f) are evaluated exactly once per
    input sample and carried between by their own ODEs (dw = w/(α v) dv, de = −ln(1 − ρ) e df/f²),
    so the inner loop over regions has no transcendental calls and vectorises. Over one
    input sample this differs from evaluating the powers every step by O(hold · dt²).
    """
    kappa, gamma, tau, alpha, rho, V0, k1, k2, k3 = c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]
    inv_alpha = 1.0 / alpha
    inv_tau = 1.0 / tau
    inv_rho = 1.0 / rho
    log1mr = math.log(1.0 - rho)
    n_in, n_reg = z.shape
    n_samp = sample_steps.shape[0]
    s = state[0].copy()
    f = state[1].copy()
    v = state[2].copy()
    q = state[3].copy()
    w = np.empty(n_reg)
    e = np.empty(n_reg)
    k = k_next
    g = step0
    for i in range(n_in):
        for r in range(n_reg):
            w[r] = math.exp(math.log(v[r]) * inv_alpha)
            e[r] = math.exp(log1mr / f[r])
        for h in range(hold):
            while k < n_samp and sample_steps[k] == g:
                for r in range(n_reg):
                    out[k, r] = V0 * (k1 * (1.0 - q[r]) + k2 * (1.0 - q[r] / v[r]) + k3 * (1.0 - v[r]))
                k += 1
            for r in range(n_reg):
                sr = s[r]
                fr = f[r]
                vr = v[r]
                qr = q[r]
                wr = w[r]
                inv_v = 1.0 / vr
                inv_f = 1.0 / fr
                dv = inv_tau * (fr - wr)
                dq = inv_tau * (fr * (1.0 - e[r]) * inv_rho - wr * qr * inv_v)
                s[r] = sr + dt * (z[i, r] - kappa * sr - gamma * (fr - 1.0))
                f[r] = fr + dt * sr
                v[r] = vr + dt * dv
                q[r] = qr + dt * dq
                w[r] = wr + dt * wr * inv_alpha * inv_v * dv
                e[r] = e[r] - dt * log1mr * e[r] * sr * inv_f * inv_f
            g += 1
    state[0] = s
    state[1] = f
    state[2] = v
    state[3] = q


def balloon_windkessel_reference(z, dt_in, dt, constants="classic", tr=None):
    """Slow, obvious NumPy reference: same equations and sampling, one step at a time.

    ``z`` (n_in, n_region) drive sampled every ``dt_in`` s; returns BOLD (n_samples, n_region)
    sampled every ``tr`` s (every input sample when ``tr`` is None).
    """
    c = resolve_constants(constants)
    z = np.atleast_2d(np.asarray(z, float))
    hold = int(round(dt_in / dt))
    n_steps = z.shape[0] * hold
    tr = dt_in if tr is None else tr
    samples = _sample_steps(n_steps, dt, tr)
    s = np.zeros(z.shape[1]); f = np.ones_like(s); v = np.ones_like(s); q = np.ones_like(s)
    out = []
    k = 0
    for g in range(n_steps):
        while k < len(samples) and samples[k] == g:
            out.append(c["V0"] * (c["k1"] * (1 - q) + c["k2"] * (1 - q / v) + c["k3"] * (1 - v)))
            k += 1
        zi = z[g // hold]
        vpow = v ** (1 / c["alpha"])
        ds = zi - c["kappa"] * s - c["gamma"] * (f - 1)
        df = s
        dv = (f - vpow) / c["tau"]
        dq = (f * (1 - (1 - c["rho"]) ** (1 / f)) / c["rho"] - vpow * q / v) / c["tau"]
        s, f, v, q = s + dt * ds, f + dt * df, v + dt * dv, q + dt * dq
    return np.array(out).reshape(len(samples), z.shape[1])


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
        first input time. attrs: constants, dt_ms, tr_s.
    """
    from ..params import ParamError
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
    state = np.zeros((4, n_series * n_reg))
    state[1:] = 1.0
    out = np.full((len(samples), n_series * n_reg), np.nan)
    k_next = 0
    for start in range(0, n_in, chunk):
        block = da.isel(time=slice(start, start + chunk)).values   # (…, t, region); dask computes here
        block = np.moveaxis(block.reshape((n_series,) + block.shape[-2:]), 0, 1).reshape(block.shape[-2], -1)
        block = np.ascontiguousarray(block, dtype=np.float64)
        if not np.all(np.isfinite(block)):
            raise ValueError("drive contains NaN/Inf (diverged simulation?); drop those members first")
        _bw_chunk(block, hold, dt, cvec, state, samples, k_next, start * hold, out)
        k_next = int(np.searchsorted(samples, (start + block.shape[0]) * hold))
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
               "integration": "explicit Euler, zero-order hold input"},
    )


def bold_from_result(result: xr.Dataset, variable=None, tr_s: float = 0.72, dt_ms: float | None = None,
                     constants="classic", drive_norm: str = "zscore", drive_gain: float = 1.0,
                     chunk_s: float = 60.0) -> xr.DataArray:
    """BOLD from a simulation result.

    The neural drive is ``variable`` (default: ``rate_out`` when recorded, else the EEG variable,
    see :func:`neurotwin_dash.observe.eeg.pick_eeg_variable`), normalised per region and member
    over time by ``drive_norm`` (``"zscore"``, ``"relative"`` or ``"none"``) and scaled by
    ``drive_gain``. Diverged members (NaN) give NaN BOLD.
    """
    from .eeg import pick_eeg_variable
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
