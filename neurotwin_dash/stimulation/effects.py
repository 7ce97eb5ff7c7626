"""Stimulation effects with their uncertainty: paired stimulated-vs-sham runs over noise seeds.

A simulated network is noisy, so one stimulated run against one sham run cannot tell a small
effect from run-to-run variability. Every effect shown by the package (the montage designer,
:func:`~neurotwin_dash.stimulation.optimize.choose_by_outcome`, the Alzheimer's scenario) is
estimated here, the same way:

1. **Common random numbers.** Sham and every stimulated arm are simulated with the same noise
   seed (and the same random initial state), so within a pair the runs differ only by the
   stimulation; pairs use different seeds (:func:`simulate_arms` puts all arms × seeds in one
   batched call).
2. **Paired differences.** For seed *s*: ``d_s = outcome(stim, s) − outcome(sham, s)``.
3. **Effect = mean of d over n ≥ 2 seeds with a 95 % CI**: Student t (default,
   ``mean ± t_{0.975, n−1} · sd / √n``) or a percentile bootstrap over seeds. The verdict is
   :data:`SHAM_VERDICT` ("indistinguishable from sham") when the CI contains 0.

Outcomes tACS can move (:func:`stimulation_outcomes`), per batch member, averaged over the
target regions:

* ``band_power``: Welch power of the recorded output in a band (e.g. 30–50 Hz);
* ``power_at_f``: the PSD at exactly the stimulation frequency (a direct Hann-windowed DFT at
  ``f``, averaged over 50 %-overlapping windows — no binning, whatever ``f`` is);
* ``plv``: phase locking of the output, band-passed at ``f ± 2 Hz``, to the stimulation
  waveform band-passed the same way (``|⟨exp(i(φ_x − φ_ref))⟩_t|``). Sham's PLV is computed
  against the same reference, so the effect is entrainment beyond chance locking.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import xarray as xr
from scipy import signal, stats

from ..analysis import spectra
from ..analysis.connectivity import analytic_signal
from ..models import get_model
from ..simulate import Drive, simulate

__all__ = ["SHAM_VERDICT", "CONFIDENCE", "OUTCOMES", "mean_ci", "paired_effect", "verdicts",
           "format_effect", "entrainment_plv", "power_at_frequency", "stimulation_outcomes",
           "simulate_arms", "arm_effects", "stimulation_effect"]

#: the verdict of an effect whose confidence interval contains 0
SHAM_VERDICT = "indistinguishable from sham"
#: confidence level of every interval
CONFIDENCE = 0.95
#: outcome name -> (long name, unit) of :func:`stimulation_outcomes`
OUTCOMES = {
    "band_power": ("band power", "mV²"),
    "power_at_f": ("PSD at the stimulation frequency", "mV²/Hz"),
    "plv": ("phase locking to the stimulation waveform", ""),
}


def _check_n(n, dim):
    if n < 2:
        raise ValueError(f"a confidence interval needs at least 2 values along {dim!r}, got {n}")


def mean_ci(values, dim: str = "seed", confidence: float = CONFIDENCE, method: str = "t",
            n_boot: int = 4000, rng_seed: int = 0) -> xr.Dataset:
    """Mean over ``dim`` with a confidence interval.

    Parameters
    ----------
    values : DataArray with dim ``dim`` (NaN values are dropped per cell)
    confidence : float in (0, 1)
    method : ``"t"`` (Student t interval) or ``"bootstrap"`` (percentile bootstrap over ``dim``)

    Returns
    -------
    Dataset with ``mean``, ``ci_low``, ``ci_high``, ``sd`` (ddof 1) and ``n`` over the other dims.
    """
    if not (0 < confidence < 1):
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if method not in ("t", "bootstrap"):
        raise ValueError(f"method {method!r} unknown; allowed: 't', 'bootstrap'")
    da = values if isinstance(values, xr.DataArray) else xr.DataArray(np.asarray(values, float), dims=(dim,))
    if dim not in da.dims:
        raise ValueError(f"values have no {dim!r} dim (dims {da.dims})")
    _check_n(da.sizes[dim], dim)
    n = da.notnull().sum(dim)
    mean = da.mean(dim)
    sd = da.std(dim, ddof=1)
    if method == "t":
        with np.errstate(invalid="ignore", divide="ignore"):
            q = xr.apply_ufunc(lambda k: stats.t.ppf(0.5 + confidence / 2, np.maximum(k - 1, 1)), n)
            half = q * sd / np.sqrt(n)
        low, high = mean - half, mean + half
    else:
        x = np.moveaxis(da.values, da.get_axis_num(dim), -1)
        rng = np.random.default_rng(rng_seed)
        idx = rng.integers(0, x.shape[-1], size=(n_boot, x.shape[-1]))
        boots = np.nanmean(x[..., idx], axis=-1)                       # (..., n_boot)
        a = (1 - confidence) / 2
        lo, hi = np.nanquantile(boots, [a, 1 - a], axis=-1)
        other = [d for d in da.dims if d != dim]
        coords = {k: v for k, v in mean.coords.items()}
        low = xr.DataArray(lo, dims=other, coords=coords)
        high = xr.DataArray(hi, dims=other, coords=coords)
    out = xr.Dataset({"mean": mean, "ci_low": low, "ci_high": high, "sd": sd, "n": n})
    out.attrs.update(confidence=confidence, method="Student t" if method == "t" else "percentile bootstrap",
                     over=dim)
    return out


def paired_effect(stim, sham, dim: str = "seed", confidence: float = CONFIDENCE, method: str = "t",
                  n_boot: int = 4000, rng_seed: int = 0) -> xr.Dataset:
    """Mean paired difference ``stim − sham`` over ``dim`` with its confidence interval.

    ``stim`` and ``sham`` are DataArrays with the same ``dim`` (pair *s* = the runs sharing noise
    seed *s*); other dims broadcast (e.g. many stimulated arms against one sham).

    Returns
    -------
    Dataset with ``effect``, ``ci_low``, ``ci_high``, ``sd`` (of the differences), ``stim``
    and ``sham`` (arm means), ``sham_sd`` (between-seed sd of sham: the run-to-run variability an
    unpaired comparison would face), ``excludes_zero`` (bool) and ``verdict`` (text, see
    :func:`verdicts`); attrs ``n_seeds``, ``confidence``, ``method``.
    """
    stim = stim if isinstance(stim, xr.DataArray) else xr.DataArray(np.asarray(stim, float), dims=(dim,))
    sham = sham if isinstance(sham, xr.DataArray) else xr.DataArray(np.asarray(sham, float), dims=(dim,))
    if stim.sizes.get(dim) != sham.sizes.get(dim):
        raise ValueError(f"stim and sham need the same {dim!r} length (pairs), got "
                         f"{stim.sizes.get(dim)} and {sham.sizes.get(dim)}")
    m = mean_ci(stim - sham, dim, confidence, method, n_boot, rng_seed)
    out = xr.Dataset({"effect": m["mean"], "ci_low": m["ci_low"], "ci_high": m["ci_high"], "sd": m["sd"],
                      "stim": stim.mean(dim), "sham": sham.mean(dim),
                      # run-to-run variability without stimulation: common random numbers detect
                      # effects far below it, so compare the effect with it before calling it large
                      "sham_sd": sham.std(dim, ddof=1)})
    out["excludes_zero"] = (out["ci_low"] > 0) | (out["ci_high"] < 0)
    out["verdict"] = xr.DataArray(verdicts(out["ci_low"].values, out["ci_high"].values),
                                  dims=out["effect"].dims, coords=out["effect"].coords)
    out.attrs.update(m.attrs, n_seeds=int(stim.sizes[dim]), difference="stimulated − sham, paired by seed")
    return out


def verdicts(ci_low, ci_high):
    """``"indistinguishable from sham"`` where the CI contains 0, else ``"above sham"`` /
    ``"below sham"`` (an array of str, or one str for scalars)."""
    lo, hi = np.asarray(ci_low, float), np.asarray(ci_high, float)
    out = np.where(lo > 0, "above sham", np.where(hi < 0, "below sham", SHAM_VERDICT))
    out = np.where(np.isfinite(lo) & np.isfinite(hi), out, "undetermined")
    return str(out) if out.ndim == 0 else out


def format_effect(effect: float, ci_low: float, ci_high: float, n_seeds: int, unit: str = "",
                  scale: float = 1.0, digits: int = 3) -> str:
    """One line: ``"+0.12 ± 0.03 mV² (95 % CI +0.09 to +0.15, 5 seeds): above sham"``.

    ``±`` is the half-width of the interval (exact for the t interval; for a bootstrap interval
    the two ends are printed as well).
    """
    e, lo, hi = (scale * float(v) for v in (effect, ci_low, ci_high))
    u = f" {unit}" if unit else ""
    g = f"+.{digits}g"
    return (f"{e:{g}} ± {(hi - lo) / 2:.{max(1, digits - 1)}g}{u} ({100 * CONFIDENCE:g} % CI {lo:{g}} to "
            f"{hi:{g}}, {n_seeds} seeds): {verdicts(ci_low, ci_high)}")


# --- outcomes --------------------------------------------------------------------------------

def power_at_frequency(da: xr.DataArray, frequency_hz: float, window_s: float = 2.0) -> xr.DataArray:
    """PSD (units²/Hz, one-sided) at exactly ``frequency_hz``: Hann windows of ``window_s`` with
    50 % overlap, a direct DFT at that frequency in each, averaged (Welch's estimator at one
    frequency, so no bin has to fall on ``f``)."""
    fs = spectra.sampling_rate(da)
    if not (0 < frequency_hz < fs / 2):
        raise ValueError(f"frequency_hz = {frequency_hz!r} must be in (0, {fs / 2:g}) Hz (Nyquist)")
    n = da.sizes["time"]
    L = int(min(n, round(window_s * fs)))
    step = max(1, L // 2)
    starts = np.arange(0, n - L + 1, step)
    w = signal.get_window("hann", L)                                 # the window Welch uses
    k = np.arange(L)
    kernel = w * np.exp(-2j * np.pi * frequency_hz * k / fs)
    scale = 2.0 / (fs * np.sum(w ** 2))

    def _p(x):
        x = x - x.mean(axis=-1, keepdims=True)
        segs = np.stack([x[..., s:s + L] for s in starts], axis=-2)   # (..., seg, L)
        segs = segs - segs.mean(axis=-1, keepdims=True)
        return scale * np.mean(np.abs(segs @ kernel) ** 2, axis=-1)

    out = xr.apply_ufunc(_p, da, input_core_dims=[["time"]], output_dtypes=[float])
    out.attrs = {"units": f"{da.attrs.get('units', '')}^2/Hz", "frequency_hz": float(frequency_hz)}
    return out


def entrainment_plv(da: xr.DataArray, reference, frequency_hz: float, half_width_hz: float = 2.0,
                    edge_s: float = 0.25) -> xr.DataArray:
    """Phase-locking value between ``da`` and a reference waveform, both band-passed at
    ``frequency_hz ± half_width_hz`` (zero-phase Butterworth, Hilbert phase), edges dropped.

    ``reference``: array over ``da``'s ``time`` (e.g. the stimulation waveform at the sample
    times). Returns values in [0, 1] over the non-time dims.
    """
    ref = xr.DataArray(np.asarray(reference, float), dims=("time",), coords={"time": da["time"].values})
    if ref.sizes["time"] != da.sizes["time"]:
        raise ValueError(f"reference has {ref.sizes['time']} samples, the signal {da.sizes['time']}")
    band = (max(frequency_hz - half_width_hz, 0.5), frequency_hz + half_width_hz)
    zx = analytic_signal(da, band)
    zr = analytic_signal(ref, band)
    fs = spectra.sampling_rate(da)
    k = int(round(edge_s * fs))
    sl = slice(k, da.sizes["time"] - k) if da.sizes["time"] > 4 * k else slice(None)
    zx, zr = zx.isel(time=sl), zr.isel(time=sl)
    u = zx / np.maximum(np.abs(zx), 1e-300) * np.conj(zr / np.maximum(np.abs(zr), 1e-300))
    out = np.abs(u.mean("time"))
    out.attrs = {"units": "1", "band_hz": list(band), "method": "Hilbert PLV to the stimulation waveform"}
    return out


def _reference(drive, times):
    """The drive's waveform at the record's sample times (callable, or samples on the clock)."""
    wf = drive.waveform
    if callable(wf):
        return np.asarray(wf(np.asarray(times, float)), float) * np.ones(len(times))
    return None


def stimulation_outcomes(res: xr.Dataset, variable: str, regions: Sequence[str] | None = None,
                         frequency_hz: float | None = None, reference=None,
                         band=(30.0, 50.0), window_s: float = 2.0) -> xr.Dataset:
    """The outcomes of :data:`OUTCOMES` per batch member, averaged over ``regions``.

    ``power_at_f`` and ``plv`` need ``frequency_hz`` (> 0) and ``plv`` a ``reference`` array
    over ``res.time``; without them only ``band_power`` is returned (tDCS).
    """
    if variable not in res:
        raise ValueError(f"variable {variable!r} not in the simulation result; has {list(res.data_vars)}")
    x = res[variable]
    if regions:
        labels = [str(r) for r in res["region"].values]
        missing = [r for r in regions if r not in labels]
        if missing:
            raise ValueError(f"regions {missing} not in the simulation (e.g. {labels[:5]})")
        x = x.sel(region=list(regions))
    x = x.fillna(0.0)
    psd = spectra.welch(x, window_s=window_s)
    out = {"band_power": spectra.band_power(psd, {"b": tuple(band)}).isel(band=0, drop=True).mean("region")}
    if frequency_hz:
        out["power_at_f"] = power_at_frequency(x, frequency_hz, window_s).mean("region")
        if reference is not None:
            out["plv"] = entrainment_plv(x, reference, frequency_hz).mean("region")
    ds = xr.Dataset(out)
    ds = ds.drop_vars([c for c in ds.coords if c != "batch"], errors="ignore")
    ds.attrs.update(variable=variable, band_hz=list(map(float, band)),
                    frequency_hz=float(frequency_hz or 0.0), regions=list(regions or []))
    return ds


# --- running arms ------------------------------------------------------------------------------

def simulate_arms(model, connectome, drives, seeds: Sequence[int], params=None, duration_s: float = 4.0,
                  transient_s: float = 1.0, dt_ms: float = 0.1, sample_rate_hz: float = 500.0,
                  record=None, method: str = "euler", normalisation: str = "max",
                  threads: int | None = None, noise_rng: str = "numpy", initial=None) -> xr.Dataset:
    """Sham and stimulated arms × noise seeds in one batched :func:`~neurotwin_dash.simulate.simulate`.

    Parameters
    ----------
    drives : Drive or list of Drive
        The stimulation (e.g. :func:`~neurotwin_dash.stimulation.coupling.tes_drives`); a
        ``spatial`` of shape ``(arm, region)`` gives several stimulated arms (doses, montages),
        ``(region,)`` one. Arm 0 of the result is sham (zero drive); components of a
        multi-drive protocol must have the same number of arms.
    seeds : sequence of int
        One noise seed per pair: arm *a* with seed *s* and sham with seed *s* share noise and
        initial state (common random numbers).
    params : dict, optional
        Parameters as :func:`simulate` takes them, the same for every member (scalar or per
        region).
    noise_rng : {"numpy", "counter"}
        Noise generator (``simulate(noise_rng=...)``); a pair shares its seed, hence its noise,
        with either.
    initial : optional
        Initial state as :func:`simulate` takes it (e.g. a bistable twin's operating point).

    Returns
    -------
    The simulation, members arm-major (``batch = arm · n_seeds + k``), with batch coordinates
    ``arm`` (0 = sham) and ``seed``.
    """
    drives = [drives] if isinstance(drives, Drive) else list(drives)
    if not drives:
        raise ValueError("drives: give at least one Drive")
    seeds = [int(s) for s in seeds]
    ns = len(seeds)
    if ns < 1 or len(set(seeds)) != ns:
        raise ValueError(f"seeds must be distinct integers, got {seeds}")
    maps = []
    for d in drives:
        sp = d.spatial
        regions = sp["region"].values if isinstance(sp, xr.DataArray) and "region" in sp.dims else None
        arr = np.asarray(sp.values if isinstance(sp, xr.DataArray) else sp, float)
        maps.append((np.atleast_2d(arr), regions))
    n_stim = {m.shape[0] for m, _ in maps}
    if len(n_stim) != 1:
        raise ValueError(f"every drive needs the same number of stimulated arms, got {sorted(n_stim)}")
    n_arms = 1 + n_stim.pop()
    batched = []
    for (m, regions), d in zip(maps, drives):
        full = np.concatenate([np.zeros((1, m.shape[1])), m], axis=0)           # sham first
        full = np.repeat(full, ns, axis=0)                                       # arm-major, seeds inner
        sp = full if regions is None else xr.DataArray(full, dims=("batch", "region"),
                                                       coords={"region": regions})
        batched.append(Drive(spatial=sp, waveform=d.waveform, target=d.target, unit=d.unit))
    member_seeds = list(np.tile(seeds, n_arms))
    res = simulate(model, connectome, duration_s=duration_s, dt_ms=dt_ms, params=dict(params or {}),
                   seed=member_seeds if len(member_seeds) > 1 else member_seeds[0],
                   sample_rate_hz=sample_rate_hz, transient_s=transient_s, record=record, drive=batched,
                   method=method, normalisation=normalisation, threads=threads, noise_rng=noise_rng,
                   initial=initial)
    res = res.assign_coords(arm=("batch", np.repeat(np.arange(n_arms), ns)),
                            seed=("batch", np.array(member_seeds)))
    res.attrs["arms"] = n_arms
    return res


def arm_effects(outcomes: xr.Dataset, confidence: float = CONFIDENCE, method: str = "t") -> xr.Dataset:
    """Paired effects of every stimulated arm against sham (arm 0) from per-member outcomes
    (batch coords ``arm`` and ``seed``, as from :func:`simulate_arms`).

    Returns a Dataset over ``(arm, outcome)`` (stimulated arms only; ``arm`` numbered from 1) as
    :func:`paired_effect`, plus ``per_seed`` over ``(condition, seed, outcome)`` with every
    member's outcome (condition 0 = sham, condition *k* = arm *k*).
    """
    arm = np.asarray(outcomes["arm"].values)
    seed = np.asarray(outcomes["seed"].values)
    n_arms = int(arm.max()) + 1
    seeds = np.unique(seed)
    if arm.size != n_arms * seeds.size:
        raise ValueError(f"outcomes need every arm once per seed: {arm.size} members for {n_arms} arms × "
                         f"{seeds.size} seeds")
    order = np.lexsort((seed, arm))                       # arm-major, seeds ascending
    names = list(outcomes.data_vars)
    vals = np.stack([outcomes[v].values[order] for v in names], axis=-1).reshape(n_arms, seeds.size, len(names))
    per_seed = xr.DataArray(vals, dims=("arm", "seed", "outcome"),
                            coords={"arm": np.arange(n_arms), "seed": seeds, "outcome": names})
    eff = paired_effect(per_seed.isel(arm=slice(1, None)), per_seed.isel(arm=0, drop=True), "seed",
                        confidence, method)
    # its own dim, so that sham (condition 0) is not aligned away against the stimulated arms
    eff["per_seed"] = per_seed.rename(arm="condition")
    eff.attrs.update(outcomes.attrs)
    return eff


def stimulation_effect(model, connectome, drives, n_seeds: int = 5, seed: int = 0, regions=None,
                       variable: str | None = None, band=(30.0, 50.0), frequency_hz: float | None = None,
                       params=None, duration_s: float = 4.0, transient_s: float = 1.0, dt_ms: float = 0.1,
                       sample_rate_hz: float = 500.0, method: str = "euler", confidence: float = CONFIDENCE,
                       ci_method: str = "t", threads: int | None = None, normalisation: str = "max",
                       initial=None) -> xr.Dataset:
    """Effect of a stimulation on band power, power at ``f`` and PLV, with 95 % CIs over seeds.

    Runs sham and the stimulated arm(s) with ``n_seeds`` common-random-number pairs
    (seeds ``seed … seed + n_seeds − 1``) in one batched simulation (:func:`simulate_arms`),
    measures :func:`stimulation_outcomes` in ``regions`` and returns :func:`arm_effects`.

    Parameters
    ----------
    drives : Drive or list of Drive
        The stimulation, e.g. ``tes_drives(montage, "tacs:40Hz", connectome)``; the first
        drive's waveform is the PLV reference, and its ``frequency_hz`` (tACS) the frequency.
    n_seeds : int
        Pairs (≥ 2; 5 or more recommended).
    variable : str, optional
        Recorded output measured; default the model's first observed output.
    normalisation, initial : optional
        Passed to :func:`simulate_arms` (connectome weight normalisation; initial state).

    Returns
    -------
    Dataset over ``(arm, outcome)``: ``effect``, ``ci_low``, ``ci_high``, ``verdict`` …, and
    ``per_seed``; attrs ``n_seeds``, ``frequency_hz``, ``variable``, ``elapsed_s``.
    """

    t0 = time.perf_counter()
    if int(n_seeds) != n_seeds or n_seeds < 2:
        raise ValueError(f"n_seeds must be an integer ≥ 2 (a CI needs pairs), got {n_seeds!r}")
    drives = [drives] if isinstance(drives, Drive) else list(drives)
    var = variable or get_model(model).OBSERVED[0]
    f = frequency_hz if frequency_hz is not None else getattr(drives[0].waveform, "frequency_hz", None)
    res = simulate_arms(model, connectome, drives, seed + np.arange(int(n_seeds)), params, duration_s,
                        transient_s, dt_ms, sample_rate_hz, [var], method, normalisation=normalisation,
                        threads=threads, initial=initial)
    ref = _reference(drives[0], res["time"].values) if f else None
    out = stimulation_outcomes(res, var, regions, f, ref, band)
    out = out.assign_coords(arm=res["arm"], seed=res["seed"])
    eff = arm_effects(out, confidence, ci_method)
    eff.attrs.update(model=str(model), elapsed_s=time.perf_counter() - t0,
                     diverged=int(np.asarray(res["diverged"]).any()))
    return eff
