"""Simulated EEG: region activity → scalp potentials → ``mne.io.RawArray``.

Each region is one current dipole (see :mod:`neurotwin_dash.observe.forward`). Its moment is
the region's mean-removed membrane potential times a gain::

    q_r(t) = moment_nAm_per_mV · (v_r(t) − mean_t v_r)           [nA·m]
    x(t)   = M · L · q(t) + noise                                  [V]

with ``L`` the reference-free lead field (V per A·m) and ``M = I − 11ᵀ/n`` the average
reference. Removing each region's temporal mean stands for the high-pass of any EEG
amplifier (the NMM's DC offset is not seen on the scalp).

Dipole moment scale (default 10 nA·m per mV): cortex carries a current dipole density
of ~0.5–2.5 nA·m per mm² when synchronously active (Murakami & Okada 2006, 2015); a region's
mass-model PSP swing of a few mV then maps to tens of nA·m for the synchronised fraction of a
several-cm² patch, which puts the simulated scalp alpha at ~10–50 µV like resting EEG.
Scale it per region (e.g. by area) with an array.

Signals given to :func:`simulated_raw` are mV (the simulators' unit); Raw data are volts
(MNE's unit). Average reference is applied and flagged in the Raw
(``custom_ref_applied``), so MNE tools (``compute_psd().plot()``, topomaps, epochs) work as
on recorded EEG.
"""
from __future__ import annotations

from collections import OrderedDict

import mne
import numpy as np
import xarray as xr
from threadpoolctl import threadpool_limits

from .forward import HEADS, ForwardError, forward_model, montage_info

__all__ = ["DEFAULT_MOMENT_NAM_PER_MV", "as_region_signal", "average_reference_matrix", "cached_leadfield",
           "pick_eeg_variable", "region_to_sensor", "simulated_raw", "simulated_eeg"]

DEFAULT_MOMENT_NAM_PER_MV = 10.0

_LF_MEMO: "OrderedDict[tuple, xr.DataArray]" = OrderedDict()
_LF_MEMO_SIZE = 16


def average_reference_matrix(n_sensors: int) -> np.ndarray:
    """``I − 11ᵀ/n``: subtracts the mean over sensors; each row (and column) sums to zero."""
    if n_sensors < 2:
        raise ValueError(f"n_sensors must be ≥ 2 for an average reference, got {n_sensors}")
    return np.eye(n_sensors) - np.full((n_sensors, n_sensors), 1.0 / n_sensors)


def cached_leadfield(connectome="tvb76", montage="standard_1020", head="sphere",
                     orientation="auto", reference="average", placement=None) -> xr.DataArray:
    """Fixed-orientation lead field (sensor, region), memoised in memory and on disk.

    ``reference``: ``"average"`` (rows of the average-reference operator applied) or
    ``"none"`` (potential against infinity).
    """
    if reference not in ("average", "none"):
        raise ValueError(f"reference {reference!r} unknown; allowed: 'average', 'none'")
    key = None
    if isinstance(montage, str) and head in HEADS and isinstance(orientation, str):   # files may change: not memoised
        con_key = connectome if isinstance(connectome, str) else connectome.content_hash()
        key = (con_key, montage, str(head), orientation, reference, placement)
        if key in _LF_MEMO:
            _LF_MEMO.move_to_end(key)
            return _LF_MEMO[key]
    ds = forward_model(connectome, montage, head, orientation, placement=placement)
    L = ds["gain"].copy()
    L.attrs.update(ds.attrs)
    if reference == "average":
        L = L - L.mean("sensor")
        L.attrs.update(ds.attrs, reference="average")
    if key is not None:
        _LF_MEMO[key] = L
        if len(_LF_MEMO) > _LF_MEMO_SIZE:
            _LF_MEMO.popitem(last=False)
    return L


def pick_eeg_variable(result: xr.Dataset) -> str | list[str]:
    """Name(s) of the variable(s) a simulation result is seen through on the scalp.

    ``attrs["eeg_variable"]`` when the simulator sets it; else ``v_pyr`` (Jansen–Rit,
    Wendling: pyramidal membrane potential); else ``v_p1`` + ``v_p2`` (LaNMM: the sum of both
    pyramidal layers, Sanchez-Todo et al. 2023); else the first (batch, time, region) variable.
    """
    if result.attrs.get("eeg_variable"):
        return result.attrs["eeg_variable"]
    if "v_pyr" in result:
        return "v_pyr"
    if "v_p1" in result and "v_p2" in result:
        return ["v_p1", "v_p2"]
    for name, var in result.data_vars.items():
        if set(var.dims) >= {"time", "region"}:
            return str(name)
    raise ValueError("result has no variable with dims (time, region) to project to EEG")


def as_region_signal(signal, variable=None) -> xr.DataArray:
    """The region signal (…, time, region) of a simulation result: ``variable`` (a name or a list
    of names, summed), by default :func:`pick_eeg_variable`; a DataArray is returned as is."""
    if isinstance(signal, xr.Dataset):
        var = variable or pick_eeg_variable(signal)
        names = [var] if isinstance(var, str) else list(var)
        missing = [v for v in names if v not in signal]
        if missing:
            raise ValueError(f"variable {missing} not in the result; available: {list(signal.data_vars)}")
        da = sum(signal[v] for v in names)
        # the dataset's attrs (provenance) plus the variables' own units, which the spectra carry on
        # (mV -> mV^2/Hz); a sum of variables in different units has none
        units = {signal[v].attrs.get("units") for v in names}
        da.attrs = dict(signal.attrs, variable="+".join(names))
        da.attrs.pop("units", None)
        if len(units) == 1 and None not in units:
            da.attrs["units"] = units.pop()
        return da
    if not isinstance(signal, xr.DataArray):
        raise TypeError(f"signal must be an xarray DataArray/Dataset with dims (…, time, region); got "
                        f"{type(signal).__name__}")
    return signal


def region_to_sensor(signal, connectome="tvb76", montage="standard_1020", head="sphere",
                     orientation="auto", moment_nAm_per_mV=DEFAULT_MOMENT_NAM_PER_MV,
                     reference="average", noise_uV: float = 0.0, seed=None,
                     variable=None, placement=None) -> xr.DataArray:
    """Project region signals (mV) to sensors (V).

    Parameters
    ----------
    signal : xarray.DataArray (…, time, region) in mV, or a simulation result Dataset
        Region labels must match the connectome's.
    connectome, montage, head, orientation, placement : see
        :func:`neurotwin_dash.observe.forward.forward_model`
    moment_nAm_per_mV : float or array (region,)
        Dipole moment per mV of mean-removed membrane potential.
    reference : ``"average"`` | ``"none"``
    noise_uV : float
        Standard deviation of white sensor noise (µV), added before referencing.
    seed : int, optional
        Seed of the sensor noise.

    Returns
    -------
    xarray.DataArray (…, time, sensor) in volts.
    """
    da = as_region_signal(signal, variable)
    if "time" not in da.dims or "region" not in da.dims:
        raise ValueError(f"signal dims {da.dims} must include 'time' and 'region'")
    if noise_uV < 0 or not np.isfinite(noise_uV):
        raise ValueError(f"noise_uV must be ≥ 0 µV, got {noise_uV}")
    L = cached_leadfield(connectome, montage, head, orientation, reference="none", placement=placement)
    regions = [str(r) for r in da["region"].values]
    if list(L["region"].values) != regions:
        missing = sorted(set(regions) - set(L["region"].values))
        if missing:
            raise ForwardError(f"signal regions {missing[:5]} are not in the connectome's labels")
        L = L.sel(region=regions)
    gain = np.asarray(moment_nAm_per_mV, float)
    if gain.ndim not in (0, 1) or (gain.ndim == 1 and gain.shape != (len(regions),)) or \
            np.any(~np.isfinite(gain)) or np.any(gain < 0):
        raise ValueError(f"moment_nAm_per_mV must be ≥ 0, scalar or shape ({len(regions)},); got {gain!r}")
    Lq = L.values * (gain * 1e-9)           # V per mV of region signal (nA·m → A·m)
    if reference == "average":
        Lq = Lq - Lq.mean(axis=0, keepdims=True)
    elif reference != "none":
        raise ValueError(f"reference {reference!r} unknown; allowed: 'average', 'none'")

    da = da.transpose(..., "time", "region")
    v = da.data
    v = v - v.mean(axis=-2, keepdims=True)
    with threadpool_limits(limits=1, user_api="blas"):     # see analysis.connectivity._corr_np
        x = v @ Lq.T
    if noise_uV > 0:
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal(x.shape) * noise_uV * 1e-6
        if reference == "average":
            noise = noise - noise.mean(axis=-1, keepdims=True)
        x = x + noise
    coords = {k: c for k, c in da.coords.items() if "region" not in c.dims}
    coords["sensor"] = list(L["sensor"].values)
    out = xr.DataArray(x, dims=da.dims[:-1] + ("sensor",), coords=coords,
                       attrs={"units": "V", "reference": reference, "moment_nAm_per_mV": float(gain.mean()),
                              "noise_uV": float(noise_uV), "montage": L.attrs.get("montage", ""),
                              "head": L.attrs.get("head", ""),
                              "orientation_source": L.attrs.get("orientation_source", ""),
                              "n_moved": L.attrs.get("n_moved", 0)})
    return out


def simulated_raw(sensor_signal: xr.DataArray, montage="standard_1020", batch=0):
    """Wrap a sensor DataArray (…, time, sensor) in volts as an ``mne.io.RawArray`` with montage.

    ``batch`` selects one member when a ``batch`` dim is present.
    """
    da = sensor_signal
    if "batch" in da.dims:
        da = da.isel(batch=batch)
    extra = [d for d in da.dims if d not in ("time", "sensor")]
    if extra:
        raise ValueError(f"sensor_signal has extra dims {extra}; select one member first")
    t = np.asarray(da["time"].values, float)
    if t.size < 2:
        raise ValueError("sensor_signal needs at least two time samples")
    dt = np.diff(t)
    if not np.allclose(dt, dt[0], rtol=1e-6, atol=1e-9):
        raise ValueError("sensor_signal time axis is not uniformly sampled")
    info = montage_info(montage, sfreq=1.0 / dt[0])
    names = list(da["sensor"].values)
    if names != list(info.ch_names):
        info = mne.pick_info(info, [info.ch_names.index(n) for n in names])
    data = np.asarray(da.transpose("sensor", "time").values, float)
    if not np.all(np.isfinite(data)):
        raise ValueError("sensor_signal contains NaN/Inf (diverged simulation?)")
    raw = mne.io.RawArray(data, info, first_samp=0, verbose=False)
    if da.attrs.get("reference") == "average":
        raw.set_eeg_reference("average", projection=False, verbose=False)
    return raw


def simulated_eeg(result, montage="standard_1020", connectome=None, batch=0, variable=None,
                  head="sphere", orientation="auto", moment_nAm_per_mV=DEFAULT_MOMENT_NAM_PER_MV,
                  noise_uV: float = 0.0, seed=None, placement=None):
    """Simulation result → average-referenced ``mne.io.RawArray`` with the montage set.

    Parameters
    ----------
    result : xarray.Dataset from :func:`neurotwin_dash.simulate.simulate` (or a DataArray
        (batch?, time, region) in mV).
    connectome : Connectome | str, optional
        Defaults to the catalog name in ``result.attrs["connectome"]``.
    batch : int
        Which batch member becomes the Raw.
    montage, variable, head, orientation, moment_nAm_per_mV, noise_uV, seed, placement
        As in :func:`region_to_sensor`.
    """
    if connectome is None:
        connectome = getattr(result, "attrs", {}).get("connectome") or "tvb76"
        if connectome == "none":
            raise ValueError("result has no connectome (single uncoupled node); EEG needs region centres — "
                             "pass connectome=")
    da = as_region_signal(result, variable)
    if "batch" in da.dims:
        da = da.isel(batch=batch)
    x = region_to_sensor(da, connectome, montage, head, orientation, moment_nAm_per_mV,
                         "average", noise_uV, seed, placement=placement)
    raw = simulated_raw(x, montage)
    raw.info["description"] = (f"neurotwin-dash simulated EEG: variable {da.attrs.get('variable', da.name)}, "
                               f"{x.attrs['moment_nAm_per_mV']:g} nA·m/mV, head {x.attrs['head']}, "
                               f"orientation {x.attrs['orientation_source']}")
    return raw
