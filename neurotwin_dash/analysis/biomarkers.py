"""The standard set of metrics of a simulation (what ``neurotwin analyse`` writes).

From the EEG-like region signal (see :func:`neurotwin_dash.observe.eeg.pick_eeg_variable`):

* ``psd`` (…, region, frequency): Welch, 2 s Hann windows, 1–80 Hz (to Nyquist if lower);
* ``band_power`` and ``relative_band_power`` (…, region, band) over the band table
  (:data:`neurotwin_dash.analysis.spectra.BANDS`);
* ``alpha_peak_hz`` (8–13 Hz), ``dominant_peak_hz`` (1–45 Hz), ``gamma_power`` (30–80 Hz);
* ``aperiodic_exponent`` (FOOOF, 2–40 Hz) — a proxy of the excitation/inhibition balance
  (Gao et al. 2017: steeper spectra with more inhibition);
* ``fc`` (Pearson of the signal), ``plv_alpha`` and ``aec_alpha`` (…, region, region2);
* ``pac_mi`` and ``pac_z`` (alpha phase, gamma amplitude; Tort MI vs 50 surrogates) when asked;
* with ``bold=True`` and ≥ 2 minutes of signal: ``bold_fc`` and the FCD summary
  ``fcd_variance`` (variance of the FCD upper triangle, a "switching" measure).

Diverged batch members (all-NaN) give NaN metrics.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from ..io.files import OutputExistsError, write_dataset
from ..observe.bold import bold_from_result
from ..observe.eeg import as_region_signal, region_to_sensor
from ..units import CONVENTIONS, DIMENSIONLESS
from . import connectivity, pac, spectra

__all__ = ["region_signal", "spectral_metrics", "standard_metrics", "sensor_metrics", "analyse_file"]


def region_signal(result, variable=None) -> xr.DataArray:
    """The EEG-like region signal (…, time, region) of a simulation result."""
    if isinstance(result, xr.DataArray):
        return result
    return as_region_signal(result, variable)


def spectral_metrics(da: xr.DataArray, window_s: float = 2.0, fmax: float = 80.0,
                     aperiodic: bool = True) -> xr.Dataset:
    """PSD, band powers, peak frequencies, gamma power and aperiodic exponent of a signal."""
    fs = spectra.sampling_rate(da)
    fmax = min(fmax, fs / 2)
    psd = spectra.welch(da, window_s=window_s, fmin=0.0, fmax=fmax)
    bands = {k: v for k, v in spectra.BANDS.items() if v[1] <= fmax}
    out = xr.Dataset({
        "psd": psd,
        "band_power": spectra.band_power(psd, bands),
        "relative_band_power": spectra.band_power(psd, bands, relative=True,
                                                  total_range=(1.0, min(80.0, fmax))),
        "alpha_peak_hz": spectra.peak_frequency(psd, "alpha"),
        "dominant_peak_hz": spectra.peak_frequency(psd, (1.0, min(45.0, fmax))),
    })
    if "gamma" in bands:
        out["gamma_power"] = spectra.gamma_power(psd)
    if aperiodic and fmax >= 40:
        out["aperiodic_exponent"] = spectra.aperiodic_exponent(psd, (2.0, 40.0))
    return out


def standard_metrics(result, variable=None, window_s: float = 2.0, aperiodic: bool = True,
                     connectivity_band="alpha", pac_surrogates: int = 0, bold: bool = False,
                     bold_tr_s: float = 0.72) -> xr.Dataset:
    """The standard metric set of a simulation result (or a (…, time, region) DataArray).

    Parameters
    ----------
    result : Dataset from :func:`neurotwin_dash.simulate.simulate`, or DataArray
    variable : str or list of str, optional
        Which variable(s) to analyse (summed); default the EEG variable of the model.
    aperiodic : bool
        Fit FOOOF aperiodic exponents (slowest part: ~10 ms per spectrum).
    connectivity_band : band for PLV and AEC.
    pac_surrogates : int
        > 0 adds Tort PAC (alpha phase, gamma amplitude) with that many surrogates.
    bold : bool
        Also compute BOLD (classic Balloon–Windkessel, TR ``bold_tr_s``) FC and FCD variance.
    """
    da = region_signal(result, variable)
    ds = spectral_metrics(da, window_s=window_s, aperiodic=aperiodic)
    ds["fc"] = connectivity.fc_pearson(da)
    ds["plv_" + str(connectivity_band)] = connectivity.plv(da, connectivity_band)
    ds["aec_" + str(connectivity_band)] = connectivity.aec(da, connectivity_band)
    fs = spectra.sampling_rate(da)
    if pac_surrogates > 0 and fs / 2 > 80:
        p = pac.phase_amplitude_coupling(da, "alpha", "gamma", n_surrogates=pac_surrogates)
        ds["pac_mi"] = p["mi"]
        ds["pac_z"] = p["mi_z"]
    if bold:
        src = result if isinstance(result, xr.Dataset) else xr.Dataset({"x": da})
        var = None if isinstance(result, xr.Dataset) else "x"
        b = bold_from_result(src, variable=var if variable is None else variable, tr_s=bold_tr_s)
        # skip the hemodynamic transient: first 10 s (or a quarter of short runs)
        t_b = b.time.values
        skip = min(10.0, 0.25 * float(t_b[-1] - t_b[0]))
        b = b.sel(time=slice(float(t_b[0]) + skip, None))
        ds["bold_fc"] = connectivity.fc_pearson(b)
        dur = float(b.time[-1] - b.time[0])
        if dur >= 120:
            win = min(60.0, dur / 3)
            f = connectivity.fcd(b, window_s=win, step_s=2 * bold_tr_s)
            tri = connectivity.upper_triangle(f)
            ds["fcd_variance"] = xr.DataArray(np.nanvar(tri, axis=-1), dims=f.dims[:-2],
                                              coords={k: v for k, v in f.coords.items()
                                                      if set(v.dims) <= set(f.dims[:-2])},
                                              attrs={"units": DIMENSIONLESS})
    attrs = dict(getattr(result, "attrs", {}))
    ds.attrs = {k: v for k, v in attrs.items() if isinstance(v, (str, int, float))}
    ds.attrs.update(Conventions=CONVENTIONS, analysed_variable=str(da.attrs.get("variable", da.name)), window_s=window_s,
                    connectivity_band=str(connectivity_band),
                    bands=str({k: list(v) for k, v in spectra.BANDS.items()}))
    return ds


def sensor_metrics(result, montage="biosemi64", variable=None, window_s: float = 2.0,
                   batch=None, head="sphere") -> xr.Dataset:
    """Band powers and alpha peak of the simulated EEG (average reference) per sensor.

    Every batch member is projected with :func:`neurotwin_dash.observe.eeg.region_to_sensor`;
    returns ``sensor_band_power`` (…, sensor, band) in V² and ``sensor_alpha_peak_hz``. ``head``:
    ``"sphere"``, ``"template_bem"`` or a BEM file (docs/science.md §10).
    """
    da = region_signal(result, variable)
    if batch is not None and "batch" in da.dims:
        da = da.isel(batch=batch)
    connectome = getattr(result, "attrs", {}).get("connectome") or "tvb76"
    x = region_to_sensor(da, connectome, montage, head=head)
    psd = spectra.welch(x, window_s=window_s, fmax=min(80.0, spectra.sampling_rate(x) / 2))
    bands = {k: v for k, v in spectra.BANDS.items() if v[1] <= float(psd.frequency[-1])}
    return xr.Dataset({"sensor_band_power": spectra.band_power(psd, bands),
                       "sensor_alpha_peak_hz": spectra.peak_frequency(psd, "alpha")},
                      attrs={"Conventions": CONVENTIONS, "montage": str(montage), "reference": "average",
                             "head": str(head)})


def analyse_file(path, out=None, variable=None, aperiodic: bool = True, pac_surrogates: int = 0,
                 bold: bool = False, bold_tr_s: float = 0.72, montage: str | None = None,
                 overwrite: bool = False, head="sphere") -> xr.Dataset:
    """Read a simulation (netCDF or zarr), compute :func:`standard_metrics`, write netCDF to ``out``.

    ``out`` is written through a temporary file and an atomic rename and an existing ``out`` is
    replaced only with ``overwrite`` (:func:`neurotwin_dash.io.files.write_dataset`)."""

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"simulation file {p} does not exist")
    if out is not None and Path(out).exists() and not overwrite:      # before the work, not after
        raise OutputExistsError(f"output file {out} exists already; choose another name or pass "
                                "overwrite=True (--overwrite) to replace it")
    res = xr.open_zarr(p) if p.suffix == ".zarr" or p.is_dir() else xr.open_dataset(p)
    res = res.load()
    ds = standard_metrics(res, variable=variable, aperiodic=aperiodic, pac_surrogates=pac_surrogates,
                          bold=bold, bold_tr_s=bold_tr_s)
    if montage:
        ds = ds.merge(sensor_metrics(res, montage=montage, variable=variable, head=head), compat="no_conflicts", join="outer")
        ds.attrs["eeg_montage"] = montage
    if "diverged" in res:
        ds["diverged"] = res["diverged"]
    ds.attrs["source_file"] = str(p)
    if out is not None:
        write_dataset(ds, out, overwrite=overwrite)
    return ds
