"""Summary features for simulation-based inference, computed by the analysis library.

A feature set is a small JSON-able mapping (kept with every trained posterior) that names what
is measured on a signal; :func:`feature_names` lists the resulting features in a fixed order and
:func:`compute_features` computes them for every batch member of a simulation (it is also the
sweep metric ``infer_features`` that training sweeps run on their Dask workers), or for a recorded signal (:func:`signal_features`, e.g. one EEG channel).

Keys of a feature set (all optional)::

    variable        simulated output(s) analysed (default: the model's EEG variable)
    window_s        Welch window (s), default 2
    psd_hz          log10 PSD at these frequencies: the mean PSD over [f - w/2, f + w/2), w = psd_width_hz
    psd_width_hz    default 2 Hz
    bands           log10 power in these bands (names of analysis.BANDS or [low, high])
    relative        true: spectra divided by the power in total_range_hz first (scale-free features,
                    for recordings whose absolute scale the model does not fix, e.g. scalp EEG)
    total_range_hz  default [1, 45]
    alpha_peak      true: alpha peak frequency (Hz, 8-13 Hz, parabolic refinement)
    peak_band_hz    a band for a second peak frequency feature ("peak_hz"), e.g. [2, 30]
    aperiodic       true: FOOOF aperiodic exponent (2-40 Hz)
    gamma           true or a band: log10 gamma power (default low gamma 30-50 Hz)
    fc              list of FC summaries of a network: "mean", "sd", "sc_corr", "pc" (needs a
                    connectome for "sc_corr")
    fc_pcs          number of leading FC eigenvalue fractions for "pc" (default 3)

Spectral features of a network are averaged over regions (log PSD: the mean of the regions'
log spectra).
"""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Mapping

import numpy as np
import xarray as xr

from .. import catalog
from ..analysis import (aperiodic_exponent, band_power, fc_pearson, peak_frequency, resolve_band,
                        upper_triangle, welch)
from ..analysis.biomarkers import region_signal
from ..sweep import register_metric

__all__ = ["FeatureError", "SWEEP_METRIC", "FEATURE_KEYS", "check_features", "feature_names", "compute_features",
           "sweep_features", "signal_features"]

#: Name of the sweep metric computing a feature set on the workers (registered with the sweep).
SWEEP_METRIC = "infer_features"

FEATURE_KEYS = ("variable", "window_s", "psd_hz", "psd_width_hz", "bands", "relative", "total_range_hz",
                "alpha_peak", "peak_band_hz", "aperiodic", "gamma", "fc", "fc_pcs")
FC_SUMMARIES = ("mean", "sd", "sc_corr", "pc")


class FeatureError(ValueError):
    """A feature set or an observation does not fit; the message names the field."""


def check_features(features: Mapping) -> dict:
    """Validate a feature set; returns a normalised copy (JSON-able)."""
    if not isinstance(features, Mapping):
        raise FeatureError(f"features must be a mapping of {FEATURE_KEYS}; got {type(features).__name__}")
    unknown = sorted(set(features) - set(FEATURE_KEYS))
    if unknown:
        raise FeatureError(f"unknown feature keys {unknown}; allowed: {', '.join(FEATURE_KEYS)}")
    f = json.loads(json.dumps(dict(features)))
    for key in ("psd_hz",):
        if key in f:
            vals = [float(v) for v in f[key]]
            if not vals or any(v <= 0 for v in vals):
                raise FeatureError(f"features.{key} must be a non-empty list of frequencies > 0 Hz, got {f[key]}")
            f[key] = vals
    if "bands" in f:
        f["bands"] = [b if isinstance(b, str) else [float(x) for x in b] for b in f["bands"]]
        for b in f["bands"]:
            try:
                resolve_band(b)
            except ValueError as exc:
                raise FeatureError(f"features.bands: {exc}") from None
    for key in ("peak_band_hz", "total_range_hz"):
        if key in f:
            try:
                f[key] = list(resolve_band(f[key]))
            except ValueError as exc:
                raise FeatureError(f"features.{key}: {exc}") from None
    if "gamma" in f and f["gamma"] not in (True, False):
        try:
            f["gamma"] = list(resolve_band(f["gamma"]))
        except ValueError as exc:
            raise FeatureError(f"features.gamma: {exc}") from None
    if "fc" in f:
        bad = [s for s in f["fc"] if s not in FC_SUMMARIES]
        if bad:
            raise FeatureError(f"features.fc: unknown summaries {bad}; allowed: {', '.join(FC_SUMMARIES)}")
    if int(f.get("fc_pcs", 3)) < 1:
        raise FeatureError(f"features.fc_pcs must be ≥ 1, got {f['fc_pcs']}")
    if not feature_names(f, _checked=True):
        raise FeatureError("the feature set selects no feature; give e.g. psd_hz, bands, alpha_peak")
    return f


def _band_label(b) -> str:
    return b if isinstance(b, str) else f"{b[0]:g}-{b[1]:g}Hz"


def feature_names(features: Mapping, _checked: bool = False) -> list[str]:
    """Names of the features a feature set produces, in the order of the feature vector."""
    f = features if _checked else check_features(features)
    names = [f"log_psd_{v:g}Hz" for v in f.get("psd_hz", [])]
    names += [f"log_power_{_band_label(b)}" for b in f.get("bands", [])]
    if f.get("alpha_peak"):
        names.append("alpha_peak_hz")
    if f.get("peak_band_hz"):
        names.append("peak_hz")
    if f.get("aperiodic"):
        names.append("aperiodic_exponent")
    if f.get("gamma"):
        names.append("log_gamma_power")
    for s in f.get("fc", []):
        if s == "pc":
            names += [f"fc_pc{k + 1}" for k in range(int(f.get("fc_pcs", 3)))]
        else:
            names.append(f"fc_{s}")
    return names


def _log10(da: xr.DataArray) -> xr.DataArray:
    """log10 with NaN (not -inf) for non-positive values."""
    return np.log10(da.where(da > 0))


@lru_cache(maxsize=4)
def _sc_upper(connectome: str) -> np.ndarray:
    w = np.asarray(catalog.load(connectome).weights, dtype=float)
    return w[np.triu_indices(w.shape[0], 1)]


def _fc_features(sig: xr.DataArray, f: dict, connectome) -> list[np.ndarray]:
    """FC summaries (per batch member) of a (batch, time, region) signal."""
    fc = fc_pearson(sig.transpose(..., "time", "region"))
    mats = np.asarray(fc.values, dtype=float)
    tri = upper_triangle(fc)
    out = []
    for s in f.get("fc", []):
        if s == "mean":
            out.append(np.nanmean(tri, axis=-1))
        elif s == "sd":
            out.append(np.nanstd(tri, axis=-1))
        elif s == "sc_corr":
            if connectome in (None, "none", ""):
                raise FeatureError("features.fc 'sc_corr' needs a simulation on a catalog connectome")
            sc = _sc_upper(str(connectome))
            if sc.shape[0] != tri.shape[-1]:
                raise FeatureError(f"connectome {connectome!r} has {sc.shape[0]} edges, FC has {tri.shape[-1]}")
            keep = sc > 0
            # Spearman-free Pearson on log weights of existing edges: SC spans orders of magnitude
            lsc = np.log10(sc[keep])
            vals = []
            for row in tri[..., keep].reshape(-1, keep.sum()):
                ok = np.isfinite(row)
                vals.append(np.corrcoef(lsc[ok], row[ok])[0, 1] if ok.sum() > 2 and np.std(row[ok]) > 0 else np.nan)
            out.append(np.asarray(vals).reshape(tri.shape[:-1]))
        elif s == "pc":
            k = int(f.get("fc_pcs", 3))
            flat = mats.reshape(-1, *mats.shape[-2:])
            fr = np.full((flat.shape[0], k), np.nan)
            for i, m in enumerate(flat):
                if np.all(np.isfinite(m)):
                    ev = np.sort(np.linalg.eigvalsh(m))[::-1]
                    fr[i] = ev[:k] / ev.sum()
            fr = fr.reshape(*mats.shape[:-2], k)
            out += [fr[..., j] for j in range(k)]
    return out


def compute_features(result, features: Mapping, connectome=None) -> xr.DataArray:
    """Feature vectors of every member of a simulation result.

    Parameters
    ----------
    result : xarray.Dataset from :func:`~neurotwin_dash.simulate.simulate` (or a DataArray
        (…, time[, region]) in seconds)
    features : mapping
        A feature set (module docstring).
    connectome : str, optional
        Catalog name of the connectome (for the FC–SC correlation); default ``result.attrs["connectome"]``.

    Returns
    -------
    DataArray (…, feature) with a ``feature`` coordinate of names (:func:`feature_names`).
    Members whose signal is not finite get NaN features.
    """
    f = check_features(features)
    names = feature_names(f, _checked=True)
    sig = region_signal(result, f.get("variable"))
    if "region" not in sig.dims:
        sig = sig.expand_dims(region=["signal"], axis=-1)
    if connectome is None:
        connectome = getattr(result, "attrs", {}).get("connectome")
    fmax = min(80.0, 0.5 * 1.0 / float(sig.time[1] - sig.time[0]))
    psd = welch(sig, window_s=float(f.get("window_s", 2.0)), fmax=fmax)
    freqs = psd.frequency.values
    if f.get("relative"):
        lo, hi = f.get("total_range_hz", [1.0, 45.0])
        total = band_power(psd, {"total": (lo, hi)}).isel(band=0, drop=True)
        psd = psd / total
    cols = []
    width = float(f.get("psd_width_hz", 2.0))
    for v in f.get("psd_hz", []):
        m = (freqs >= v - width / 2) & (freqs < v + width / 2)
        if not m.any():
            raise FeatureError(f"features.psd_hz: no spectrum bin within {v:g} ± {width / 2:g} Hz "
                               f"(spectrum {freqs[0]:g}–{freqs[-1]:g} Hz)")
        cols.append(_log10(psd.isel(frequency=m).mean("frequency")).mean("region").values)
    if f.get("bands"):
        bp = band_power(psd, {_band_label(b): resolve_band(b) for b in f["bands"]})
        for j in range(bp.sizes["band"]):
            cols.append(_log10(bp.isel(band=j)).mean("region").values)
    if f.get("alpha_peak"):
        cols.append(peak_frequency(psd, "alpha").mean("region").values)
    if f.get("peak_band_hz"):
        cols.append(peak_frequency(psd, tuple(f["peak_band_hz"])).mean("region").values)
    if f.get("aperiodic"):
        cols.append(aperiodic_exponent(psd, (2.0, min(40.0, fmax))).mean("region").values)
    if f.get("gamma"):
        band = tuple(f["gamma"]) if isinstance(f["gamma"], list) else "low_gamma"
        g = band_power(psd, {"gamma": resolve_band(band)}).isel(band=0, drop=True)
        cols.append(_log10(g).mean("region").values)
    if f.get("fc"):
        if sig.sizes["region"] < 3:
            raise FeatureError("features.fc needs a network of ≥ 3 regions; this simulation has "
                               f"{sig.sizes['region']}")
        cols += _fc_features(sig, f, connectome)
    lead = [d for d in psd.dims if d not in ("frequency", "region")]
    data = np.stack([np.asarray(c, dtype=float) for c in cols], axis=-1)
    bad = ~np.all(np.isfinite(sig.values), axis=tuple(sig.get_axis_num(d) for d in ("time", "region")))
    data[bad] = np.nan
    coords = {d: sig[d].values for d in lead if d in sig.coords}
    coords["feature"] = names
    return xr.DataArray(data, dims=(*lead, "feature"), coords=coords, name="features",
                        attrs={"features": json.dumps(f)})


@register_metric(SWEEP_METRIC)
def sweep_features(result, variable=None, window_s=None, psd_hz=None, psd_width_hz=None, bands=None,
                   relative=None, total_range_hz=None, alpha_peak=None, peak_band_hz=None, aperiodic=None,
                   gamma=None, fc=None, fc_pcs=None) -> xr.DataArray:
    """Sweep metric :data:`SWEEP_METRIC`: the feature set (the keywords, module docstring) per member."""
    given = {k: v for k, v in locals().items() if k != "result" and v is not None}
    return compute_features(result, given)


def signal_features(signal, features: Mapping, sample_rate_hz: float | None = None) -> xr.DataArray:
    """Features of one recorded or simulated signal (e.g. an EEG channel).

    Parameters
    ----------
    signal : DataArray with a ``time`` coordinate in seconds, or a 1-D array with ``sample_rate_hz``
    features : mapping
        The feature set of the posterior the observation is for.

    Returns
    -------
    DataArray (feature,)
    """
    if not isinstance(signal, xr.DataArray):
        x = np.asarray(signal, dtype=float)
        if x.ndim != 1 or sample_rate_hz is None or not sample_rate_hz > 0:
            raise FeatureError("signal: give an xarray DataArray with a time coordinate (s), or a 1-D "
                               "array and sample_rate_hz > 0")
        signal = xr.DataArray(x, dims="time", coords={"time": np.arange(x.size) / float(sample_rate_hz)})
    if "time" not in signal.dims:
        raise FeatureError(f"signal needs a 'time' dim; got {signal.dims}")
    extra = [d for d in signal.dims if d not in ("time", "region")]
    if extra:
        raise FeatureError(f"signal: one signal at a time; got the extra dims {extra} (select one first)")
    out = compute_features(signal.expand_dims(batch=[0]), features)
    return out.isel(batch=0, drop=True)
