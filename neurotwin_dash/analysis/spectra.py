"""Power spectra and spectral features, xarray in and out, Dask-friendly.

Every function takes a DataArray with a ``time`` dim (seconds) or a spectrum with a
``frequency`` dim (Hz) and keeps all other dims (``batch``, ``region``, ``sensor`` ...).
Welch spectra are lifted with ``xarray.apply_ufunc(..., dask="parallelized")``, so a chunked
(Dask) array is processed chunk by chunk as long as ``time`` is a single chunk.

Band table (docs/science.md §6): delta 1–4, theta 4–8, alpha 8–13, beta 13–30, gamma 30–80 Hz,
and low_gamma 30–50 Hz around the 40 Hz rhythm. Band edges are [low, high): a bin at exactly
the boundary belongs to the upper band.
"""
from __future__ import annotations

import warnings

import numpy as np
import xarray as xr
from scipy import signal

from ..units import DIMENSIONLESS, cf_unit

__all__ = ["BANDS", "resolve_band", "sampling_rate", "welch", "band_power", "peak_frequency",
           "gamma_power", "aperiodic_exponent"]

BANDS: dict[str, tuple[float, float]] = {
    "delta": (1.0, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 80.0),
    "low_gamma": (30.0, 50.0),
}


def resolve_band(band) -> tuple[float, float]:
    """``(low, high)`` Hz for a band name from :data:`BANDS` or a pair of numbers."""
    if isinstance(band, str):
        if band not in BANDS:
            raise ValueError(f"band {band!r} unknown; allowed: {', '.join(BANDS)} or (low_hz, high_hz)")
        return BANDS[band]
    try:
        lo, hi = (float(b) for b in band)
    except (TypeError, ValueError):
        raise ValueError(f"band must be a name or (low_hz, high_hz); got {band!r}") from None
    if not (0 <= lo < hi):
        raise ValueError(f"band ({lo}, {hi}) Hz must satisfy 0 ≤ low < high")
    return lo, hi


def sampling_rate(da: xr.DataArray, dim: str = "time") -> float:
    """Sampling rate (Hz) from a uniformly spaced time coordinate in seconds."""
    if dim not in da.dims:
        raise ValueError(f"expected a {dim!r} dim; got dims {da.dims}")
    if dim not in da.coords or da.sizes[dim] < 2:
        raise ValueError(f"{dim!r} needs a coordinate in seconds with at least two samples")
    t = np.asarray(da[dim].values, float)
    dt = np.diff(t)
    if not np.allclose(dt, dt[0], rtol=1e-5, atol=1e-9) or dt[0] <= 0:
        raise ValueError(f"{dim!r} coordinate is not uniformly increasing")
    return 1.0 / float(dt[0])


def _welch_np(x, fs, nperseg, noverlap, detrend):
    _, p = signal.welch(x, fs=fs, window="hann", nperseg=nperseg, noverlap=noverlap,
                        detrend=detrend, scaling="density", axis=-1)
    return p


def welch(da: xr.DataArray, window_s: float = 2.0, overlap: float = 0.5, fmin: float = 0.0,
          fmax: float | None = None, dim: str = "time", detrend: str = "constant") -> xr.DataArray:
    """Welch power spectral density along ``time`` (Hann windows, density scaling).

    Parameters
    ----------
    da : DataArray (…, time, …)
    window_s : float
        Segment length (s); 2 s gives 0.5 Hz resolution. Shortened to the signal length.
    overlap : float
        Fraction of overlap between segments, in [0, 1).
    fmin, fmax : float
        Frequency range kept (Hz); ``fmax`` defaults to Nyquist.

    Returns
    -------
    DataArray (…, frequency) in units²/Hz, ``frequency`` in Hz.
    """
    fs = sampling_rate(da, dim)
    if not (0 <= overlap < 1):
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if not (window_s > 0):
        raise ValueError(f"window_s must be > 0 s, got {window_s}")
    n = da.sizes[dim]
    nperseg = int(min(n, round(window_s * fs)))
    noverlap = int(round(overlap * nperseg))
    freqs = np.fft.rfftfreq(nperseg, 1.0 / fs)
    if da.chunks is not None:
        da = da.chunk({dim: -1})
    psd = xr.apply_ufunc(
        _welch_np, da, input_core_dims=[[dim]], output_core_dims=[["frequency"]],
        kwargs=dict(fs=fs, nperseg=nperseg, noverlap=noverlap, detrend=detrend),
        dask="parallelized", output_dtypes=[float],
        dask_gufunc_kwargs={"output_sizes": {"frequency": freqs.size}},
    )
    psd = psd.assign_coords(frequency=freqs)
    hi = fs / 2 if fmax is None else fmax
    psd = psd.sel(frequency=slice(fmin, hi))
    psd["frequency"].attrs["units"] = "Hz"
    unit = da.attrs.get("units", "")
    psd.attrs = {"units": f"{unit}^2/Hz" if unit and unit != DIMENSIONLESS else "1/Hz", "window_s": nperseg / fs,
                 "overlap": overlap, "sample_rate_hz": fs, "method": "Welch, Hann"}
    psd.name = "psd"
    return psd


def _band_mask(freqs, lo, hi):
    return (freqs >= lo) & (freqs < hi)


def band_power(psd: xr.DataArray, bands=None, relative: bool = False,
               total_range=(1.0, 80.0)) -> xr.DataArray:
    """Band powers: the integral (trapezoid) of the PSD over each band.

    ``bands``: names, a dict name -> (lo, hi), or None for every band in :data:`BANDS`.
    ``relative=True`` divides by the power in ``total_range`` Hz. Returns (…, band).
    """
    if "frequency" not in psd.dims:
        raise ValueError(f"psd must have a 'frequency' dim; got {psd.dims}")
    if bands is None:
        bands = dict(BANDS)
    elif not isinstance(bands, dict):
        bands = {str(b) if isinstance(b, str) else f"{b[0]:g}-{b[1]:g}": resolve_band(b) for b in bands}
    f = psd["frequency"].values
    out = []
    for name, b in bands.items():
        lo, hi = resolve_band(b)
        m = _band_mask(f, lo, hi)
        if m.sum() < 2:
            raise ValueError(f"band {name} ({lo}–{hi} Hz) holds fewer than 2 frequency bins "
                             f"(resolution {f[1] - f[0]:g} Hz, range {f[0]:g}–{f[-1]:g} Hz)")
        out.append(psd.isel(frequency=m).integrate("frequency"))
    bp = xr.concat(out, dim=xr.DataArray(list(bands), dims="band", name="band"))
    bp = bp.assign_coords(band_low_hz=("band", [resolve_band(b)[0] for b in bands.values()], {"units": "Hz"}),
                          band_high_hz=("band", [resolve_band(b)[1] for b in bands.values()], {"units": "Hz"}))
    if relative:
        lo, hi = total_range
        total = psd.isel(frequency=_band_mask(f, lo, hi)).integrate("frequency")
        bp = bp / total
        bp.attrs.update(units=DIMENSIONLESS, long_name=f"fraction of the power in {lo:g}–{hi:g} Hz",
                        total_range_hz=[lo, hi])
    else:
        bp.attrs["units"] = cf_unit(psd.attrs.get("units", "").replace("/Hz", ""))
    bp.name = "band_power"
    return bp.transpose(..., "band")


def peak_frequency(psd: xr.DataArray, band=(8.0, 13.0), interpolate: bool = True) -> xr.DataArray:
    """Frequency (Hz) of the largest PSD value inside ``band``.

    With ``interpolate`` the peak is refined by a parabola through the log-power of the
    maximum bin and its neighbours (sub-bin resolution).
    """
    lo, hi = resolve_band(band)
    f = psd["frequency"].values
    m = _band_mask(f, lo, hi)
    if m.sum() < 1:
        raise ValueError(f"band {lo}–{hi} Hz holds no frequency bins")
    idx = np.flatnonzero(m)

    def _peak(p):
        sub = p[..., idx]
        k = np.argmax(sub, axis=-1)
        fk = f[idx][k]
        if interpolate and f.size > 2:
            j = idx[k]
            jl = np.clip(j - 1, 0, f.size - 1)
            jr = np.clip(j + 1, 0, f.size - 1)
            with np.errstate(divide="ignore", invalid="ignore"):
                take = lambda jj: np.log(np.maximum(np.take_along_axis(p, jj[..., None], -1)[..., 0], 1e-300))
                a, b, c = take(jl), take(j), take(jr)
                den = a - 2 * b + c
                delta = np.where((den < 0) & (jl != j) & (jr != j), 0.5 * (a - c) / den, 0.0)
            fk = fk + np.clip(delta, -0.5, 0.5) * (f[1] - f[0])
        return np.where(np.all(np.isfinite(sub), axis=-1), fk, np.nan)

    out = xr.apply_ufunc(_peak, psd, input_core_dims=[["frequency"]], dask="parallelized",
                         output_dtypes=[float])
    out.attrs = {"units": "Hz", "band_hz": [lo, hi]}
    out.name = "peak_frequency"
    return out


def gamma_power(psd: xr.DataArray, band="gamma", relative: bool = False) -> xr.DataArray:
    """Power in the gamma band (default 30–80 Hz; ``"low_gamma"`` for 30–50 Hz)."""
    bp = band_power(psd, {band if isinstance(band, str) else "gamma": resolve_band(band)}, relative)
    out = bp.isel(band=0, drop=True)
    out.name = "gamma_power"
    return out


def _fooof_exponent(p, freqs, freq_range, max_n_peaks):
    # fooof 1.1 sets simplefilter("always") and warns about specparam on import: record (and drop)
    # that warning, and let catch_warnings restore the caller's filters afterwards
    with warnings.catch_warnings(record=True):
        from fooof import FOOOF
    out = np.full(p.shape[:-1], np.nan)
    flat = p.reshape(-1, p.shape[-1])
    res = out.reshape(-1)
    for i, spec in enumerate(flat):
        if not np.all(np.isfinite(spec)) or np.any(spec <= 0):
            continue
        fm = FOOOF(peak_width_limits=(1.0, 12.0), max_n_peaks=max_n_peaks, aperiodic_mode="fixed",
                   verbose=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fm.fit(freqs, spec, list(freq_range))
        if fm.has_model:
            res[i] = fm.get_params("aperiodic_params", "exponent")
    return res.reshape(p.shape[:-1])


def aperiodic_exponent(psd: xr.DataArray, freq_range=(2.0, 40.0), max_n_peaks: int = 4) -> xr.DataArray:
    """Aperiodic (1/f^χ) exponent χ per spectrum with FOOOF (Donoghue et al. 2020).

    The power spectrum is modelled as a Lorentzian-free ("fixed") aperiodic line in log-log
    plus up to ``max_n_peaks`` Gaussian peaks in ``freq_range`` Hz; the exponent of the line is
    returned (≈ 2 for a random walk, ≈ 0 for white noise; 1–2 in resting EEG).
    """
    lo, hi = resolve_band(freq_range)
    f = psd["frequency"].values
    if f[0] > lo or f[-1] < hi:
        raise ValueError(f"freq_range {lo}–{hi} Hz lies outside the spectrum ({f[0]:g}–{f[-1]:g} Hz)")
    out = xr.apply_ufunc(_fooof_exponent, psd, input_core_dims=[["frequency"]],
                         kwargs=dict(freqs=f, freq_range=(lo, hi), max_n_peaks=max_n_peaks),
                         dask="parallelized", output_dtypes=[float])
    out.attrs = {"units": "1", "method": "fooof 'fixed' aperiodic mode", "freq_range_hz": [lo, hi]}
    out.name = "aperiodic_exponent"
    return out


def _fooof_peak(p, freqs, freq_range, band, max_n_peaks, mode):
    with warnings.catch_warnings(record=True):        # see _fooof_exponent
        from fooof import FOOOF
    flat = p.reshape(-1, p.shape[-1])
    res = np.full((flat.shape[0], 2), np.nan)
    inband = (freqs >= band[0]) & (freqs <= band[1])
    for i, spec in enumerate(flat):
        if not np.all(np.isfinite(spec)) or np.any(spec <= 0):
            continue
        fm = FOOOF(peak_width_limits=(1.0, 12.0), max_n_peaks=max_n_peaks, aperiodic_mode=mode,
                   verbose=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fm.fit(freqs, spec, list(freq_range))
        if not fm.has_model:
            continue
        ap = fm.get_params("aperiodic_params")
        knee = ap[1] if mode == "knee" else 0.0
        ratio = spec[inband] / 10 ** (ap[0] - np.log10(knee + freqs[inband] ** ap[-1]))
        k = int(np.argmax(ratio))
        res[i] = freqs[inband][k], ratio[k]
    return res.reshape(p.shape[:-1] + (2,))


def peak_over_aperiodic(psd: xr.DataArray, band=(8.0, 12.0), freq_range=(1.0, 40.0),
                        max_n_peaks: int = 4, aperiodic_mode: str = "knee") -> xr.Dataset:
    """Largest PSD excess over the aperiodic background inside ``band``, per spectrum.

    The aperiodic background is FOOOF's fit over ``freq_range`` (Donoghue et al. 2020; peaks are
    modelled separately so they do not bend it): ``"knee"`` ``10^b / (k + f^χ)`` (default: a
    noise-driven rate network is Lorentzian, flat below its knee, and a straight log-log line
    would leave a spurious bump at the bend) or ``"fixed"`` ``10^b / f^χ``. Returns
    ``ratio`` (PSD / background at its largest in ``band``; ≈ 1 for a spectrum without a rhythm)
    and ``peak_frequency`` (Hz, where that largest ratio lies).
    """
    if aperiodic_mode not in ("knee", "fixed"):
        raise ValueError(f"aperiodic_mode must be 'knee' or 'fixed', got {aperiodic_mode!r}")
    lo, hi = resolve_band(band)
    flo, fhi = resolve_band(freq_range)
    f = psd["frequency"].values
    if f[0] > flo or f[-1] < fhi or not (flo <= lo < hi <= fhi):
        raise ValueError(f"band {lo}–{hi} Hz must lie inside freq_range {flo}–{fhi} Hz, itself inside the "
                         f"spectrum ({f[0]:g}–{f[-1]:g} Hz)")
    out = xr.apply_ufunc(_fooof_peak, psd, input_core_dims=[["frequency"]], output_core_dims=[["stat"]],
                         kwargs=dict(freqs=f, freq_range=(flo, fhi), band=(lo, hi), max_n_peaks=max_n_peaks,
                                     mode=aperiodic_mode),
                         output_dtypes=[float], dask_gufunc_kwargs={"output_sizes": {"stat": 2}})
    ds = xr.Dataset({"peak_frequency": out.isel(stat=0, drop=True), "ratio": out.isel(stat=1, drop=True)})
    ds["peak_frequency"].attrs = {"units": "Hz", "band_hz": [lo, hi]}
    ds["ratio"].attrs = {"units": "1", "method": f"PSD / FOOOF {aperiodic_mode!r} aperiodic fit", "freq_range_hz": [flo, fhi]}
    return ds
