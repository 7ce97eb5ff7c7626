"""EEG in: a recording (any format MNE reads, or a BIDS dataset) → fitting targets.

:func:`read_eeg` opens EDF/BDF, BrainVision, EEGLAB, FIF, Neuroelectrics NEDF (``.nedf``, via
``mne.io.read_raw_nedf``) and every other format ``mne.io.read_raw`` knows, or a BIDS dataset
through :func:`mne_bids.read_raw_bids` (channel types, bad channels and electrode positions
then come from its sidecars). :func:`eeg_targets` turns any ``mne.io.Raw`` — a recording or
the simulated EEG of :func:`neurotwin_dash.observe.eeg.simulated_eeg` — into the same
``xarray.Dataset`` of targets, so empirical and simulated EEG are compared like for like:

* ``psd`` (sensor, frequency): Welch spectrum (Hann, 2 s windows → 0.5 Hz), V²/Hz;
* ``band_power`` / ``relative_band_power`` (sensor, band): the band table of docs/science.md §6
  (:data:`neurotwin_dash.analysis.spectra.BANDS`);
* ``alpha_peak_hz`` (sensor), ``alpha_peak_hz_mean`` (peak of the mean spectrum) and
  ``dominant_peak_hz``;
* ``gamma_power`` (sensor), 30–80 Hz;

(these come from :func:`neurotwin_dash.analysis.biomarkers.spectral_metrics`, the function
that summarises simulations);

* ``fc`` (fc_band, sensor, sensor2): band-limited sensor FC (amplitude-envelope correlation
  by default; PLV or coherence on request).

:func:`source_targets` inverts the sensor data through the same lead field the simulator uses
(:mod:`neurotwin_dash.observe.forward`) with a Tikhonov-regularised minimum-norm estimate
(Hämäläinen & Ilmoniemi 1994) and computes the same targets per connectome region.
:func:`import_eeg` chains reading, checks and targets, and writes a netCDF file without
overwriting anything.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import mne
import numpy as np
import xarray as xr

from ..analysis import connectivity as conn
from ..analysis import spectra
from ..analysis.biomarkers import spectral_metrics
from ..observe import forward
from ..observe.forward import resolve_montage
from .files import DataImportError, check_input, one_bids_match, write_new

__all__ = ["FORMATS", "FC_METHODS", "read_eeg", "require_channels", "eeg_targets", "source_targets",
           "import_eeg"]

#: file endings read here (``mne.io.read_raw`` dispatches on them), with their format names.
FORMATS = {".edf": "EDF", ".bdf": "BDF", ".gdf": "GDF", ".vhdr": "BrainVision", ".set": "EEGLAB",
           ".fif": "FIF", ".fif.gz": "FIF", ".nedf": "Neuroelectrics NEDF", ".cnt": "Neuroscan CNT",
           ".mff": "EGI MFF", ".cdt": "Curry", ".bdf+": "BDF"}
FC_METHODS = ("aec", "plv", "coh")
_MIN_DURATION_S = 4.0


def _ending(p: Path) -> str:
    return ".fif.gz" if p.name.endswith(".fif.gz") else p.suffix.lower()


def _bids_root_of(path: Path):
    for parent in path.parents:
        if (parent / "dataset_description.json").exists():
            return parent
    return None


def read_eeg(path, subject=None, task=None, session=None, run=None, preload: bool = True):
    """Open an EEG recording or a BIDS dataset's EEG run.

    Parameters
    ----------
    path : str | Path
        A recording file (:data:`FORMATS`), or a BIDS root folder (then ``subject`` — and
        ``task``/``session``/``run`` when the dataset has several — select the run). A file
        inside a BIDS dataset is read through mne-bids so its sidecars apply.
    subject, task, session, run : str, optional
        BIDS entities.

    Returns
    -------
    mne.io.Raw
        Preloaded, with only EEG channels kept (stimulus, accelerometer … dropped).

    Raises
    ------
    DataImportError
        Missing/empty file, unknown format, a reader error, a BIDS query that matches no run
        (or several), or a recording with no EEG channel. The message names the file.
    """

    p = check_input(path, "EEG recording")
    if p.is_dir():
        if not (p / "dataset_description.json").exists():
            raise DataImportError(f"EEG recording {p} is a folder without dataset_description.json; "
                                  "give a recording file or a BIDS root")
        raw, where = _read_bids(p, subject, task, session, run), str(p)
    else:
        ending = _ending(p)
        if ending not in FORMATS:
            raise DataImportError(f"EEG recording {p}: file type {ending!r} not supported; allowed: "
                                  f"{', '.join(sorted(set(FORMATS) - {'.bdf+'}))}")
        root = _bids_root_of(p)
        where = str(p)
        raw = None
        if root is not None and p.name.startswith("sub-") and ending in (".edf", ".bdf", ".vhdr", ".set"):
            from mne_bids import get_bids_path_from_fname  # mne-bids (~0.2 s): only for BIDS inputs
            try:
                bp = get_bids_path_from_fname(p)
                bp.update(root=root)
                raw = _read_bids_path(bp, where)
            except (ValueError, RuntimeError, KeyError):
                raw = None  # not a well-formed BIDS name: read the file as it is
        if raw is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    raw = mne.io.read_raw(p, preload=preload, verbose="error")
            except Exception as exc:  # each reader raises its own types
                raise DataImportError(f"EEG recording {p}: {FORMATS[ending]} reader failed "
                                      f"({type(exc).__name__}: {exc})") from None
    if preload and not raw.preload:
        raw.load_data(verbose="error")
    picks = mne.pick_types(raw.info, eeg=True, exclude=[])
    if picks.size == 0:
        types = sorted(set(raw.get_channel_types()))
        raise DataImportError(f"EEG recording {where}: no EEG channels (channel types present: {types}); "
                              "field 'ch_types'")
    raw.pick(picks)
    if raw.n_times / raw.info["sfreq"] < _MIN_DURATION_S:
        raise DataImportError(f"EEG recording {where}: {raw.n_times / raw.info['sfreq']:.2f} s long; need at "
                              f"least {_MIN_DURATION_S:g} s for 0.5-Hz spectra (field 'n_times')")
    raw.info["description"] = where
    return raw


def _read_bids_path(bp, where):
    from mne_bids import read_raw_bids  # mne-bids (~0.2 s): only for BIDS inputs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            return read_raw_bids(bp, verbose="error")
        except FileNotFoundError as exc:
            raise DataImportError(f"BIDS EEG {where}: {exc}") from None


def _read_bids(root: Path, subject, task, session, run):
    from mne_bids import BIDSPath  # mne-bids (~0.2 s): only for BIDS inputs
    bp = BIDSPath(root=root, subject=subject, task=task, session=session, run=run, datatype="eeg",
                  suffix="eeg")
    hits = [h for h in bp.match() if h.extension in (".edf", ".bdf", ".vhdr", ".set")]
    hit = one_bids_match(hits, root, "EEG run", dict(subject=subject, task=task, session=session, run=run),
                         narrow="subject/task/session/run")
    return _read_bids_path(hit, str(hit.fpath))


def require_channels(raw, channels, where: str | None = None):
    """Keep (and order) ``channels``; raise naming the file and the missing names otherwise.

    Names match case-insensitively (``FP1`` in an EDF equals ``Fp1`` of a 10-20 montage) and
    take the spelling given in ``channels``. A required channel marked bad counts as missing.
    """
    where = where or raw.info.get("description") or "EEG recording"
    wanted = [str(c) for c in channels]
    lower = {c.lower(): c for c in raw.ch_names}
    missing = [c for c in wanted if c.lower() not in lower]
    bad = [c for c in wanted if c.lower() in lower and lower[c.lower()] in raw.info["bads"]]
    if missing or bad:
        msg = f"EEG recording {where}: "
        if missing:
            msg += f"missing channel(s) {missing} (field 'channels')"
        if bad:
            msg += ("; " if missing else "") + f"channel(s) {bad} are marked bad"
        raise DataImportError(msg + f"; present: {raw.ch_names[:12]}{' …' if len(raw.ch_names) > 12 else ''}")
    raw = raw.copy().pick([lower[c.lower()] for c in wanted])
    raw.rename_channels({lower[c.lower()]: c for c in wanted if lower[c.lower()] != c})
    return raw


def _fc(data: xr.DataArray, band, method: str) -> xr.DataArray:
    """Band-limited FC (sensor × sensor2) via the analysis library."""
    lo, hi = spectra.resolve_band(band)
    if method == "aec":
        return conn.aec(data, band=(lo, hi))
    if method == "plv":
        return conn.plv(data, band=(lo, hi))
    return conn.coherence(data, band=(lo, hi))


def _targets(x: xr.DataArray, dim: str, window_s, fmax, aperiodic, fc_bands, fc_method) -> xr.Dataset:
    """The target set for signals ``x`` (time, dim): the analysis library's spectral metrics
    (the same function that summarises simulations) plus band-limited FC."""

    fs = spectra.sampling_rate(x)
    ds = spectral_metrics(x.transpose("time", dim), window_s=window_s, fmax=fmax, aperiodic=aperiodic)
    ds["alpha_peak_hz_mean"] = spectra.peak_frequency(ds["psd"].mean(dim), "alpha")
    if fc_bands:
        if fc_method not in FC_METHODS:
            raise DataImportError(f"fc_method {fc_method!r}: allowed {', '.join(FC_METHODS)}")
        keep = [b for b in fc_bands if spectra.resolve_band(b)[1] < fs / 2]
        if keep:
            names = [b if isinstance(b, str) else f"{b[0]:g}-{b[1]:g}Hz" for b in keep]
            fc = xr.concat([_fc(x, b, fc_method) for b in keep], dim=xr.DataArray(names, dims="fc_band"))
            ds["fc"] = fc.assign_attrs(method=fc_method, units="1")
    return ds


def eeg_targets(raw, channels=None, window_s: float = 2.0, fmax: float = 80.0,
                reference: str | None = "average", fc_bands=("alpha", "beta", "gamma"),
                fc_method: str = "aec", aperiodic: bool = False, crop_s: tuple | None = None) -> xr.Dataset:
    """Fitting targets from an EEG recording (or simulated EEG).

    Parameters
    ----------
    raw : mne.io.Raw
    channels : sequence of str, optional
        Required channels (e.g. the montage the twin simulates); see :func:`require_channels`.
        Default: every good EEG channel.
    window_s : float
        Welch window (s); 2 s gives 0.5 Hz resolution.
    fmax : float
        Highest frequency kept in ``psd``.
    reference : "average" | None
        Re-reference to the average (what simulated EEG uses) or keep the recording's.
    fc_bands : sequence
        Bands of the sensor FC; empty for none.
    fc_method : {"aec", "plv", "coh"}
        Amplitude-envelope correlation, phase-locking value or coherence (analysis library).
    aperiodic : bool
        Add the FOOOF aperiodic exponent per sensor (~10 ms per channel).
    crop_s : (start, stop), optional
        Use only this part of the recording (s).

    Returns
    -------
    xarray.Dataset
        Variables listed in the module docstring; dims ``sensor``, ``frequency``, ``band``,
        ``fc_band``, ``sensor2``; attrs ``source``, ``sample_rate_hz``, ``duration_s``,
        ``reference``, ``kind = "eeg_targets"``.
    """

    where = raw.info.get("description") or "EEG recording"
    raw = raw.copy()
    if not raw.preload:
        raw.load_data(verbose="error")
    raw.pick(mne.pick_types(raw.info, eeg=True, exclude="bads"))
    if channels is not None:
        raw = require_channels(raw, channels, where)
    if crop_s is not None:
        raw.crop(*crop_s)
    if reference == "average":
        if len(raw.ch_names) < 2:
            raise DataImportError(f"EEG recording {where}: average reference needs ≥ 2 channels")
        raw.set_eeg_reference("average", projection=False, verbose="error")
    elif reference is not None:
        raise DataImportError(f"reference {reference!r}: allowed 'average' or None")
    data = raw.get_data()
    if not np.all(np.isfinite(data)):
        raise DataImportError(f"EEG recording {where}: contains NaN or Inf samples")
    flat = [c for c, s in zip(raw.ch_names, data.std(axis=1)) if not s > 0]
    if flat:
        raise DataImportError(f"EEG recording {where}: flat channel(s) {flat[:8]} (zero variance); "
                              "mark them bad or choose channels")
    x = xr.DataArray(data.T, dims=("time", "sensor"),
                     coords={"time": raw.times, "sensor": list(raw.ch_names)}, attrs={"units": "V"})
    ds = _targets(x, "sensor", window_s, fmax, aperiodic, fc_bands, fc_method)
    pos = np.array([ch["loc"][:3] for ch in raw.info["chs"]])
    if np.all(np.isfinite(pos)) and np.any(pos):
        ds["sensor_position"] = (("sensor", "axis"), pos, {"units": "m", "frame": "MNE head"})
        ds = ds.assign_coords(axis=["x", "y", "z"])
    ds.attrs.update(kind="eeg_targets", source=str(where), sample_rate_hz=float(raw.info["sfreq"]),
                    duration_s=float(raw.n_times / raw.info["sfreq"]), reference=str(reference),
                    window_s=float(window_s), channels=json.dumps(list(raw.ch_names)))
    return ds


def source_targets(raw, connectome="tvb76", snr: float = 3.0, head: str = "sphere",
                   window_s: float = 2.0, fmax: float = 80.0, fc_bands=("alpha",),
                   fc_method: str = "aec") -> xr.Dataset:
    """Region-level targets: the recording inverted through the simulator's lead field.

    The minimum-norm estimate with Tikhonov regularisation (Hämäläinen & Ilmoniemi 1994)::

        q̂(t) = Lᵀ (L Lᵀ + λ² I)⁻¹ x(t),     λ² = tr(L Lᵀ) / (n_sensors · snr²)

    with ``L`` the average-referenced fixed-orientation lead field of the connectome's region
    dipoles (:func:`neurotwin_dash.observe.forward.leadfield`) at the template (10-05) positions
    of the recording's channel names — the same head the simulator sees — and ``x`` the
    average-referenced data. ``snr`` = 3 is MNE's usual choice for continuous
    data. The estimate is blurred (a handful of electrodes cannot resolve 76 regions); use
    it for spatially smooth targets (regional alpha/gamma maps), not single regions.

    Returns
    -------
    xarray.Dataset
        Same variables as :func:`eeg_targets` over ``region`` (moments in A·m), plus
        ``resolution`` (region, region2): the resolution matrix ``K L`` (rows near one-hot
        mean a region is recoverable).
    """


    where = raw.info.get("description") or "EEG recording"
    raw = raw.copy()
    raw.pick(mne.pick_types(raw.info, eeg=True, exclude="bads"))
    raw.set_eeg_reference("average", projection=False, verbose="error")
    try:
        L = forward.leadfield(connectome, montage=list(raw.ch_names), head=head)
    except (ValueError, KeyError) as exc:
        raise DataImportError(f"EEG recording {where}: no lead field for its channels ({exc}); "
                              "channel names must be 10-05 names") from None
    L = L.sel(sensor=list(raw.ch_names))
    G = L.values - L.values.mean(axis=0, keepdims=True)
    n = G.shape[0]
    if not snr > 0:
        raise DataImportError(f"snr must be > 0, got {snr}")
    lam2 = np.trace(G @ G.T) / (n * snr ** 2)
    K = G.T @ np.linalg.inv(G @ G.T + lam2 * np.eye(n))
    q = K @ raw.get_data()
    x = xr.DataArray(q.T, dims=("time", "region"),
                     coords={"time": raw.times, "region": L["region"].values}, attrs={"units": "A·m"})
    ds = _targets(x, "region", window_s, fmax, False, fc_bands, fc_method)
    R = K @ G
    ds["resolution"] = (("region", "region2"), R, {"long_name": "resolution matrix K·L"})
    ds = ds.assign_coords(region2=L["region"].values)
    ds.attrs.update(kind="eeg_source_targets", source=str(where), inverse="Tikhonov minimum norm",
                    snr=float(snr), lambda2=float(lam2), head=str(head),
                    connectome=str(getattr(connectome, "name", connectome)),
                    sample_rate_hz=float(raw.info["sfreq"]))
    return ds


def import_eeg(path, out=None, channels=None, subject=None, task=None, session=None, run=None,
               overwrite: bool = False, source_connectome=None, head: str = "sphere",
               **target_kw) -> xr.Dataset:
    """Read a recording, check it, compute :func:`eeg_targets`, write ``out`` (netCDF).

    ``channels`` may be a list of names or a montage name (``"standard_1020"``,
    ``"starstim20"`` …; its channels are then required). With ``source_connectome`` the
    region-level :func:`source_targets` are added as variables prefixed ``source_``, inverted
    through the lead field of ``head`` (``"sphere"``, ``"template_bem"`` or a BEM file). ``out`` is never replaced unless ``overwrite``.
    """
    raw = read_eeg(path, subject=subject, task=task, session=session, run=run)
    if isinstance(channels, str):
        channels = _montage_channels(channels)
    ds = eeg_targets(raw, channels=channels, **target_kw)
    if source_connectome is not None:
        src = source_targets(raw if channels is None else require_channels(raw, channels),
                             connectome=source_connectome, head=head)
        for name, var in src.data_vars.items():
            ds[f"source_{name}"] = var.rename({d: f"source_{d}" for d in var.dims
                                               if d in ("frequency", "band", "fc_band")})
    if out is not None:
        write_new(out, lambda tmp: ds.to_netcdf(tmp), overwrite=overwrite)
    return ds


def _montage_channels(name: str) -> list[str]:
    try:
        montage, _ = resolve_montage(name)
    except (ValueError, KeyError, LookupError) as exc:
        raise DataImportError(f"channels {name!r}: not a channel list or known montage ({exc})") from None
    return list(montage.ch_names)
