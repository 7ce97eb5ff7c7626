"""The dashboards' compute jobs: plain functions of a picklable spec, run on Dask workers.

A dashboard never simulates in its own process. It builds a *spec* (a plain ``dict`` of numbers
and names, see :func:`explorer_spec`), submits :func:`explorer_job` to the Dask client and gets
back a small summary :class:`xarray.Dataset` (spectra, band powers, FC, a few seconds of EEG),
not the raw simulation. The functions live in the installed package so that worker processes
(local or on a remote cluster) can unpickle them.

Everything here is also usable from a notebook: ``explorer_job(explorer_spec(model="jansen_rit"))``.
"""
from __future__ import annotations

import json
import tempfile
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import xarray as xr

from .. import analysis as an
from .. import catalog
from ..io.files import write_dataset
from ..observe import bold as bold_mod
from ..observe import eeg as eeg_mod
from ..observe import forward
from ..simulate import Drive, SimulationPlan, plan, run_plan
from ..stimulation import coupling, effects, efield, waveforms
from ..stimulation.montage import Montage, user_limits
from ..stimulation.optimize import Target, optimize_montage
from ..twin import Twin
from .field3d import render_surface_png

__all__ = [
    "BANDS", "FC_MEASURES", "BOLD_FC_MIN_S", "explorer_spec", "explorer_plan", "build_connectome",
    "explorer_job", "welch_psd", "band_power", "fc_fit", "fc_measures",
    "sensor_layout_2d", "eeg_signals", "PREVIEW_S", "preview_spec", "job_superseded", "JobSuperseded",
]

#: Frequency bands (Hz): the analysis library's, so dashboard numbers equal ``neurotwin analyse``.
BANDS = an.BANDS

#: highest frequency kept in the spectra sent back to the dashboard
FMAX_HZ = 100.0

#: FC measures the explorer computes (name -> label). Band-limited phase and envelope measures
#: are what EEG-band FC is made of; BOLD FC needs minutes of simulated time (:data:`BOLD_FC_MIN_S`).
FC_MEASURES = {
    "plv_alpha": "PLV, alpha band",
    "aec_alpha": "AEC, alpha band",
    "aec_alpha_orth": "orthogonalised AEC, alpha band",
    "pearson": "Pearson of the raw signal",
    "bold": "BOLD FC (Balloon-Windkessel, Pearson)",
}

#: shortest analysed duration (s) for which the explorer computes BOLD FC: ~80 samples at a
#: TR of 0.72 s after the haemodynamic response has settled; shorter runs give no BOLD FC.
BOLD_FC_MIN_S = 60.0


#: simulated time (s, after the transient) of the explorer's quick preview under load
PREVIEW_S = 1.0


class JobSuperseded(RuntimeError):
    """A dashboard job stopped early because its session asked for a newer one."""


def job_superseded() -> bool:
    """Whether the Dask task running this code has been cancelled (its session moved on).

    Dask cannot interrupt a running task: a cancelled one keeps its worker busy to the end, and
    its result is thrown away. Jobs call this between their stages and stop early instead. False
    outside a Dask worker.
    """
    try:
        from distributed import get_worker   # optional here: jobs also run in-process (notebooks)
        worker = get_worker()
    except (ImportError, ValueError):
        return False
    key = worker.get_current_task()
    ts = worker.state.tasks.get(key) if key is not None else None
    return ts is None or ts.state in ("cancelled", "released", "forgotten")


def preview_spec(spec: dict, preview_s: float = PREVIEW_S) -> dict | None:
    """A quick version of an explorer spec: the same model, parameters, connectome, seed and
    transient, ``preview_s`` of analysed time instead of ``duration_s`` (``None`` when the run is
    not much longer than that). The result's ``spec`` attribute records ``preview_of_s``, the
    full run's duration, so the page can label it."""
    if spec["duration_s"] < 2 * preview_s:
        return None
    return dict(spec, duration_s=float(preview_s), preview_of_s=float(spec["duration_s"]))


def explorer_spec(model: str = "jansen_rit", connectome: str | None = "tvb76", params=None,
                  duration_s: float = 5.0, transient_s: float = 0.5, seed: int = 0,
                  dt_ms: float = 0.1, sample_rate_hz: float = 500.0, normalisation: str = "max",
                  weight_scale: float = 1.0, lesions=(), edges=(), montage: str | None = "standard_1020",
                  empirical_fc: str | None = None, output: str | None = None, drive=None,
                  head: str = "sphere") -> dict:
    """A complete, picklable description of one explorer simulation and its analysis.

    Parameters
    ----------
    model : str
        Model name (:data:`neurotwin_dash.models.MODELS`).
    connectome : str or None
        Catalog connectome, or ``None`` for one uncoupled node.
    params : dict
        Model and network parameter values (scalars).
    duration_s, transient_s : float
        Simulated time kept for analysis, and the initial period dropped before it.
    normalisation, weight_scale, lesions, edges
        Connectome edits, applied in this order: normalise the catalog weights, disconnect the
        ``lesions`` (region labels), set ``edges`` (``(target, source, weight)`` in normalised
        units, symmetric), then multiply all weights by ``weight_scale``.
    montage : str or None
        EEG montage (catalog or MNE name) for the sensor-level outputs.
    head : str
        Head model of the EEG lead field: ``"sphere"`` or ``"template_bem"`` (docs/science.md §10).
    empirical_fc : str or None
        Catalog dataset with an empirical FC (``fc_group``) to score the simulated FC against.
    output : str or None
        Recorded variable analysed (default: the model's first observed output).
    drive : dict or None
        Stimulation as ``{"spatial": list (n_region,), "frequency_hz": f, "phase_rad": φ,
        "target": "membrane"}`` (tACS; ``frequency_hz`` 0 means DC).
    """
    return {
        "model": str(model), "connectome": connectome, "params": dict(params or {}),
        "duration_s": float(duration_s), "transient_s": float(transient_s), "seed": int(seed),
        "dt_ms": float(dt_ms), "sample_rate_hz": float(sample_rate_hz),
        "normalisation": str(normalisation), "weight_scale": float(weight_scale),
        "lesions": [str(s) for s in lesions], "edges": [(str(t), str(s), float(w)) for t, s, w in edges],
        "montage": montage, "empirical_fc": empirical_fc, "output": output, "drive": drive,
        "head": str(head),
    }


def build_connectome(spec: dict):
    """The edited connectome of ``spec`` (``None`` for a single node); see :func:`explorer_spec`."""
    name = spec.get("connectome")
    if not name:
        return None
    con = catalog.load_connectome(name).normalise(spec.get("normalisation", "max"))
    for label in spec.get("lesions", ()):
        con = con.lesion_region(label)
    for target, source, weight in spec.get("edges", ()):
        con = con.set_edge(target, source, float(weight))
    scale = float(spec.get("weight_scale", 1.0))
    if scale != 1.0:
        con = con.scale(scale)
    return con


def welch_psd(x: np.ndarray, fs: float, window_s: float = 2.0, fmax: float = FMAX_HZ):
    """Welch PSD along axis 0 of a (time, channel) array by :func:`neurotwin_dash.analysis.welch`.

    Returns ``(freqs, psd)`` up to ``fmax`` in units²/Hz (psd is (frequency, channel)).
    """
    da = xr.DataArray(np.asarray(x, dtype=float), dims=("time", "channel"),
                      coords={"time": np.arange(np.shape(x)[0]) / float(fs)})
    p = an.welch(da, window_s=window_s, fmax=fmax)
    return p["frequency"].values, p.transpose("frequency", "channel").values


def band_power(freqs: np.ndarray, psd: np.ndarray, band) -> np.ndarray:
    """Power of ``psd`` (frequency along axis 0) in ``band`` (a name or ``(low, high)`` Hz), by
    :func:`neurotwin_dash.analysis.band_power` (same edges: ``low <= f < high``)."""
    da = xr.DataArray(np.asarray(psd, dtype=float), dims=("frequency", "channel"),
                      coords={"frequency": np.asarray(freqs, dtype=float)})
    return an.band_power(da, bands=[band]).isel(band=0).values


def fc_fit(fc_sim: np.ndarray, fc_emp: np.ndarray) -> float:
    """Pearson r between the upper triangles of two FC matrices (:func:`analysis.fc_fit_score`)."""
    return float(an.fc_fit_score(np.asarray(fc_sim, dtype=float), np.asarray(fc_emp, dtype=float)))


def fc_measures(x: xr.DataArray, bold: xr.DataArray | None = None) -> xr.DataArray:
    """Every explorer FC measure of ``x`` (time, region) stacked along ``measure``.

    ``bold`` (time, region) gives the BOLD FC; without it that layer is NaN.
    """
    n = x.sizes["region"]
    mats = {
        "plv_alpha": an.plv(x, band="alpha"),
        "aec_alpha": an.aec(x, band="alpha"),
        "aec_alpha_orth": an.aec(x, band="alpha", orthogonalise=True),
        "pearson": an.fc_pearson(x),
        "bold": an.fc_pearson(bold) if bold is not None else None,
    }
    out = np.full((len(FC_MEASURES), n, n), np.nan)
    for i, key in enumerate(FC_MEASURES):
        if mats[key] is not None:
            out[i] = np.asarray(mats[key].transpose(..., "region", "region2").values, dtype=float)
    labels = x["region"].values
    return xr.DataArray(out, dims=("measure", "region", "region2"),
                        coords={"measure": list(FC_MEASURES), "region": labels, "region2": labels},
                        attrs={"units": "1", "long_name": "functional connectivity"})


@lru_cache(maxsize=8)
def _empirical_fc(name: str, labels: tuple[str, ...]) -> np.ndarray:
    ds = catalog.load(name)
    fc = ds["fc_group"]
    emp_labels = [str(s) for s in fc["region"].values]
    if list(labels) != emp_labels:
        raise ValueError(f"empirical_fc {name!r} has {len(emp_labels)} regions that do not match the "
                         f"connectome's {len(labels)} regions; pick the matching connectome")
    return np.asarray(fc.values, dtype=float)


def sensor_layout_2d(positions_m: np.ndarray, centre_m) -> np.ndarray:
    """Azimuthal-equidistant projection of sensor positions for topomaps.

    The angle between a sensor and the vertex (the +z axis through the sphere centre
    ``centre_m``) becomes the radius, scaled so that the equator (T7, T8, Fpz, Oz) lies on the
    unit circle; nose up (+y), right to the right (+x).
    """
    d = np.asarray(positions_m, dtype=float) - np.asarray(centre_m, dtype=float)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    theta = np.arccos(np.clip(d[:, 2], -1, 1))
    phi = np.arctan2(d[:, 1], d[:, 0])
    r = theta / (np.pi / 2)
    return np.column_stack([r * np.cos(phi), r * np.sin(phi)])


def eeg_signals(sim: xr.Dataset, connectome, montage: str, head: str = "sphere"):
    """Scalp EEG (time, sensor) in µV of batch member 0 of a simulation result.

    :func:`neurotwin_dash.observe.eeg.region_to_sensor` (one fixed dipole per region, average
    reference, its default dipole-moment scale) on the variable
    :func:`~neurotwin_dash.observe.eeg.pick_eeg_variable` chooses.

    Returns
    -------
    eeg : xarray.DataArray (time, sensor), µV
    sensor_positions : ndarray (sensor, 3), head-frame metres
    sphere_centre : ndarray (3,), head-frame metres
    """
    x = eeg_mod.region_to_sensor(sim.isel(batch=0), connectome, montage, head=head)
    x = (x.transpose("time", "sensor") * 1e6).assign_attrs(x.attrs, units="µV")
    fwd = forward.forward_model(connectome, montage, head=head)
    pos = fwd["sensor_position"].sel(sensor=x["sensor"].values).values
    return x, pos, np.asarray(fwd.attrs.get("sphere_r0_m", [0.0, 0.0, 0.04]))


def _first_output(sim: xr.Dataset, output: str | None) -> str:
    names = [v for v in sim.data_vars if v != "diverged" and sim[v].dims[-1:] == ("region",)]
    if output:
        if output not in sim.data_vars:
            raise ValueError(f"output {output!r} not recorded; available: {', '.join(names)}")
        return output
    if not names:
        raise ValueError("the simulation recorded no (time, region) variable")
    return names[0]


def _drive(spec: dict, con):
    d = spec.get("drive")
    if not d:
        return None
    spatial = np.asarray(d["spatial"], dtype=float)
    f = float(d.get("frequency_hz", 0.0))
    phase = float(d.get("phase_rad", 0.0))
    if f > 0:
        def waveform(t, f=f, phase=phase):
            return np.sin(2 * np.pi * f * np.asarray(t) + phase)
    else:
        def waveform(t):
            return np.ones_like(np.asarray(t, dtype=float))
    return Drive(spatial=spatial, waveform=waveform, target=d.get("target", "membrane"))


def explorer_plan(spec: dict) -> SimulationPlan:
    """The :class:`~neurotwin_dash.simulate.SimulationPlan` of an explorer spec (what
    :func:`explorer_job` simulates): ``duration_s`` of analysed time after ``transient_s``, on the
    edited connectome of :func:`build_connectome` (already normalised)."""
    con = build_connectome(spec)
    return plan(model=spec["model"], connectome=con,
                duration_s=spec["duration_s"] + spec["transient_s"], dt_ms=spec["dt_ms"],
                params=spec["params"], seed=spec["seed"], sample_rate_hz=spec["sample_rate_hz"],
                transient_s=spec["transient_s"], drive=_drive(spec, con), normalisation="none")


def explorer_export_job(spec: dict) -> dict:
    """Files to take away from an explorer run (runs on a Dask worker): name -> bytes.

    ``run.nc`` (the full simulation, netCDF), ``twin.nc`` (a :class:`~neurotwin_dash.twin.Twin`
    that reproduces it bit for bit) and ``report.html`` (:func:`neurotwin_dash.report.report_html`).
    The run is simulated again from :func:`explorer_plan`; with the same seed it is the run on screen.
    """
    from ..report import report_html   # matplotlib: only loaded when someone exports
    resolved = explorer_plan(spec)
    sim = run_plan(resolved)
    twin = Twin.from_result(sim, connectome=resolved.connectome, drive=_drive(spec, resolved.connectome),
                            name="explorer")
    with tempfile.TemporaryDirectory(prefix="neurotwin-export-") as tmp:
        twin_bytes = twin.save(Path(tmp) / "twin.nc").read_bytes()
    return {"run.nc": netcdf_bytes(sim), "twin.nc": twin_bytes,
            "report.html": report_html(twin, result=sim).encode()}


def netcdf_bytes(ds: xr.Dataset) -> bytes:
    """``ds`` as netCDF-4 file contents (written by the package's writer into a private temp folder)."""
    with tempfile.TemporaryDirectory(prefix="neurotwin-export-") as tmp:
        return write_dataset(ds, Path(tmp) / "data.nc").read_bytes()


def explorer_job(spec: dict) -> xr.Dataset:
    """Simulate ``spec`` and return the explorer's summary (runs on a Dask worker).

    Returns
    -------
    xarray.Dataset
        ``psd_region`` (region, frequency), ``band_region`` (band, region) by the analysis
        library (:func:`neurotwin_dash.analysis.welch`, :func:`~neurotwin_dash.analysis.band_power`);
        on a connectome ``fc`` (measure, region, region2) for every :data:`FC_MEASURES` (BOLD FC
        NaN below :data:`BOLD_FC_MIN_S`; no ``fc`` in a preview), ``fc_sc_r`` and ``fc_fit`` (measure) — r with log10 SC
        and with the empirical FC (NaN without one) — ``centres`` (region, axis) RAS mm,
        ``weights``, ``hemisphere``; with a montage also ``psd_sensor`` (sensor, frequency),
        ``band_sensor`` (band, sensor), ``eeg`` (time_eeg, sensor), ``sensor_xy`` (sensor, xy)
        topomap positions; ``trace`` (time_eeg, region) of the source signal. attrs
        ``diverged``, ``elapsed_s``, ``spec`` (JSON).
    """
    t0 = time.perf_counter()
    if job_superseded():            # cancelled while it waited on the worker
        raise JobSuperseded("superseded before it started")
    resolved = explorer_plan(spec)
    sim = run_plan(resolved)
    con = resolved.connectome
    t_sim = time.perf_counter() - t0
    if job_superseded():            # its session moved on: skip the analysis
        raise JobSuperseded("superseded after the simulation")
    out = _first_output(sim, spec.get("output"))
    x = sim[out].isel(batch=0).transpose("time", "region")
    diverged = bool(np.asarray(sim["diverged"]).any()) if "diverged" in sim else False
    fs = float(sim.attrs.get("sample_rate_hz", spec["sample_rate_hz"]))
    xv = np.asarray(x.values, dtype=float)
    labels = [str(s) for s in x["region"].values]
    xa = x.fillna(0.0).assign_attrs(units=sim[out].attrs.get("units", "mV"))
    psd = an.welch(xa, fmax=FMAX_HZ).transpose("frequency", "region")
    f, p = psd["frequency"].values, psd.values
    bands = list(BANDS)
    bp = an.band_power(psd).transpose("band", "region").values
    bold = None
    if con is not None and spec["duration_s"] >= BOLD_FC_MIN_S:
        # the haemodynamic response takes ~10 s to settle: drop it before the BOLD FC
        b = bold_mod.bold_from_result(sim.isel(batch=0)[[out]], variable=out, tr_s=0.72)
        bold = b.sel(time=b["time"] >= b["time"].values[0] + 10.0).transpose("time", "region")
    # a preview's second of data gives no usable FC (shown with the full run): not computed,
    # which saves a third of a preview's work on the workers
    preview = float(spec.get("preview_of_s", 0.0) or 0.0) > 0
    fc = fc_measures(xa, bold) if xv.shape[1] > 1 and not preview else None
    # a few seconds of traces are enough to look at; keep at most ~250 Hz
    step = max(1, int(round(fs / 250.0)))
    n_keep = int(min(xv.shape[0], round(4.0 * fs)))
    t_tr = x["time"].values[:n_keep:step]
    data = {
        "psd_region": (("region", "frequency"), p.T, {"units": f"{sim[out].attrs.get('units', 'mV')}^2/Hz",
                                                      "long_name": f"PSD of {out}"}),
        "band_region": (("band", "region"), bp, {"long_name": "band power",
                                                  "units": f"{sim[out].attrs.get('units', 'mV')}^2"}),
        "trace": (("time_eeg", "region"), xv[:n_keep:step], {"units": sim[out].attrs.get("units", "mV")}),
    }
    coords = {"region": labels, "region2": labels, "frequency": f, "band": bands, "time_eeg": t_tr,
              "axis": ["x", "y", "z"]}
    coords["measure"] = list(FC_MEASURES)
    fit = np.full(len(FC_MEASURES), np.nan)
    sc_r = np.full(len(FC_MEASURES), np.nan)
    if fc is not None:
        data["fc"] = fc
        data["fc"].attrs["long_name"] = f"functional connectivity of {out}"
    if con is not None:
        data["centres"] = (("region", "axis"), con.centres, {"units": "mm"})
        data["weights"] = (("region", "region2"), con.weights)
        data["hemisphere"] = (("region",), np.asarray(con.ds["hemisphere"].values).astype(str))
        if fc is not None:
            sc_r = np.array([an.fc_sc_correlation(m, con.weights) if np.isfinite(m).any() else np.nan
                             for m in fc.values])
    if con is not None and spec.get("empirical_fc") and fc is not None:
        emp = _empirical_fc(spec["empirical_fc"], tuple(labels))
        fit = np.array([fc_fit(m, emp) if np.isfinite(m).any() else np.nan for m in fc.values])
        data["fc_empirical"] = (("region", "region2"), emp, {"units": "1", "long_name": "empirical FC"})
    data["fc_fit"] = (("measure",), fit, {"units": "1", "long_name": "r(simulated FC, empirical FC)"})
    data["fc_sc_r"] = (("measure",), sc_r, {"units": "1", "long_name": "r(simulated FC, log10 SC)"})
    if con is not None and spec.get("montage"):
        eeg, sens_pos, r0 = eeg_signals(sim, con, spec["montage"], spec.get("head", "sphere"))
        ev = np.asarray(eeg.values, dtype=float)
        pe = an.welch(eeg.fillna(0.0).assign_attrs(units="µV"), fmax=FMAX_HZ)
        data["psd_sensor"] = (("sensor", "frequency"), pe.transpose("sensor", "frequency").values,
                              {"units": "µV^2/Hz"})
        data["band_sensor"] = (("band", "sensor"), an.band_power(pe).transpose("band", "sensor").values,
                               {"units": "µV^2"})
        data["eeg"] = (("time_eeg", "sensor"), ev[:n_keep:step], {"units": "µV"})
        data["sensor_xy"] = (("sensor", "xy"), sensor_layout_2d(sens_pos, r0))
        coords["sensor"] = [str(s) for s in eeg["sensor"].values]
        coords["xy"] = ["x", "y"]
    res = xr.Dataset(data, coords=coords)
    res.attrs.update(
        model=spec["model"], connectome=spec.get("connectome") or "", output=out,
        diverged=int(diverged), sample_rate_hz=fs, simulate_s=t_sim,
        preview_of_s=float(spec.get("preview_of_s", 0.0)),
        elapsed_s=time.perf_counter() - t0, spec=json.dumps(spec, default=str),
    )
    return res


# --- montage designer ------------------------------------------------------------------------

def _montage(spec: dict):
    lim = spec.get("limits") or {}      # a session's setting: capped at the safety limits
    return Montage(dict(spec["currents_mA"]), layout=spec.get("layout", "standard_1020"),
                   return_electrode=spec.get("return_electrode") or None, limits=user_limits(**lim))


@lru_cache(maxsize=4)
def _layout_xy(connectome: str, layout: str, head: str = "sphere"):
    """All electrodes of a layout with their topomap positions (see :func:`sensor_layout_2d`)."""
    # electrode positions do not depend on conductivities: use the fields' set (one BEM solve, not two)
    fwd = forward.forward_model(connectome, layout, head=head, conductivity="tes")
    xy = sensor_layout_2d(fwd["sensor_position"].values, fwd.attrs.get("sphere_r0_m", [0.0, 0.0, 0.04]))
    return [str(s) for s in fwd["sensor"].values], xy


def montage_field_job(spec: dict) -> xr.Dataset:
    """Field of a montage at every region (and a 3D picture on the cortex when available).

    ``spec``: ``connectome``, ``layout``, ``currents_mA`` (dict), ``return_electrode``,
    ``limits`` (dict of :class:`~neurotwin_dash.stimulation.montage.Limits` fields),
    ``render_3d`` (bool), ``head`` (``"sphere"`` default or ``"template_bem"``). Returns ``E_n``, ``E_mag`` (region), ``centres`` (region, axis),
    ``electrode_xy`` (electrode, xy) for the whole layout, ``current_mA`` (electrode; 0 when
    unused); attrs ``png_3d`` (bytes) and ``backend_3d`` when rendered.
    """
    t0 = time.perf_counter()
    m = _montage(spec)
    con = catalog.load_connectome(spec["connectome"])
    head = spec.get("head", "sphere")
    fields = efield.electrode_fields(con, spec.get("layout", "standard_1020"), head=head)
    mf = efield.montage_field(m, fields)
    names, xy = _layout_xy(spec["connectome"], spec.get("layout", "standard_1020"), head)
    upper = {k.upper(): v for k, v in m.currents_mA.items()}
    cur = np.array([upper.get(n.upper(), 0.0) for n in names])
    res = xr.Dataset(
        {"E_n": mf["E_n"], "E_mag": mf["E_mag"],
         "centres": (("region", "axis"), con.centres),
         "electrode_xy": (("electrode", "xy"), xy), "current_mA": (("electrode",), cur)},
        coords={"region": mf["region"].values, "axis": ["x", "y", "z"], "electrode": names, "xy": ["x", "y"]},
        attrs={"montage": json.dumps(m.currents_mA), "total_injected_mA": m.total_injected_mA,
               "max_Emag": float(mf["E_mag"].max()), "max_abs_En": float(np.abs(mf["E_n"]).max()),
               "head": str(head)},
    )
    if spec.get("render_3d") and head == "sphere":      # cortex-surface fields exist for the sphere head
        try:
            sf = efield.montage_surface_field(m, connectome=spec["connectome"])
            surf = efield.cortex_surface(spec["connectome"])
            png, backend = render_surface_png(surf["vertices"].values, surf["triangles"].values,
                                              sf["E_n"].values,
                                              title="E_n (V/m), inward > 0 (range: 99th pct)")
            res.attrs.update(png_3d=png, backend_3d=backend)
        except efield.FieldError as exc:   # no cortex surface for this connectome
            res.attrs["note_3d"] = str(exc)
    res.attrs["elapsed_s"] = time.perf_counter() - t0
    return res


def montage_effect_job(spec: dict) -> xr.Dataset:
    """Simulated effect of a montage: stimulated vs sham over ``n_seeds`` noise seeds, one batch.

    Sham (zero field) and the montage with waveform ``frequency_hz`` (tACS; 0 = tDCS) and
    coupling ``stim_lambda_mV_per_V_m`` run for seeds ``seed … seed + n_seeds − 1`` in ONE
    batched simulation (:func:`neurotwin_dash.stimulation.effects.simulate_arms`); pair *k*
    shares its noise seed (common random numbers). Effects are paired differences with 95 % CIs
    (:func:`~neurotwin_dash.stimulation.effects.arm_effects`). ``spec`` adds ``model``,
    ``output``, ``band`` (name in :data:`BANDS`), ``params``, ``duration_s``, ``transient_s``,
    ``seed``, ``n_seeds`` (default 5), ``targets`` (region labels), ``head`` (field model, as
    for :func:`montage_field_job`) and ``noise_rng`` (default ``"counter"``: the noise drawn in
    the batch kernel, which keeps the panel responsive; recorded in the result's attrs).

    Returns
    -------
    xarray.Dataset
        ``band_power`` (condition, region) of ``output`` in ``band`` (mean over seeds),
        ``psd_target`` (condition, frequency) averaged over the targets (all regions without
        targets) and seeds, ``centres``; ``effect``, ``ci_low``, ``ci_high``, ``verdict``,
        ``stim``, ``sham`` over ``outcome`` (band power, PSD at the stimulation frequency and PLV
        to the waveform, in the targets); attrs ``n_seeds`` and the relative band-power change.
    """
    t0 = time.perf_counter()
    m = _montage(spec)
    con = catalog.load_connectome(spec["connectome"])
    f_hz = float(spec.get("frequency_hz", 40.0))
    n_seeds = int(spec.get("n_seeds", 5))
    wave = waveforms.TACS(f_hz) if f_hz > 0 else waveforms.TDCS()
    drives = coupling.tes_drives(m, wave, con, lambda_mV_per_V_m=spec.get("stim_lambda_mV_per_V_m"),
                                 head=spec.get("head", "sphere"))     # the head model the field map shows
    params = {k: float(v) for k, v in dict(spec.get("params") or {}).items()}
    params.setdefault("coupling", 0.0)
    seed0 = int(spec.get("seed", 0))
    sim = effects.simulate_arms(spec["model"], con, drives, seed0 + np.arange(n_seeds), params,
                                duration_s=spec["duration_s"] + spec["transient_s"], transient_s=spec["transient_s"],
                                dt_ms=0.1, sample_rate_hz=500.0, record=[spec.get("output")] if spec.get("output")
                                else None, noise_rng=spec.get("noise_rng", "counter"))
    out = _first_output(sim, spec.get("output"))
    x = np.nan_to_num(np.asarray(sim[out].transpose("batch", "time", "region").values, dtype=float))
    band_name = spec.get("band", "low_gamma")
    band = BANDS[band_name]
    labels = [str(s) for s in sim["region"].values]
    targets = [t for t in spec.get("targets") or [] if t in labels]
    idx = [labels.index(t) for t in targets] or list(range(len(labels)))
    bp, psd_t = [], []
    for b in range(x.shape[0]):
        f, p = welch_psd(x[b], 500.0)
        bp.append(band_power(f, p, band))
        psd_t.append(p[:, idx].mean(axis=1))
    arm = sim["arm"].values
    bp, psd_t = np.array(bp), np.array(psd_t)
    bp_arm = np.array([bp[arm == a].mean(axis=0) for a in (0, 1)])
    psd_arm = np.array([psd_t[arm == a].mean(axis=0) for a in (0, 1)])
    change = float(bp_arm[1, idx].mean() / max(bp_arm[0, idx].mean(), 1e-30) - 1.0)
    ref = wave(sim["time"].values) if f_hz > 0 else None
    outcomes = effects.stimulation_outcomes(sim.fillna(0.0), out, [labels[i] for i in idx], f_hz or None, ref, band)
    eff = effects.arm_effects(outcomes.assign_coords(arm=sim["arm"], seed=sim["seed"])).isel(arm=0, drop=True)
    res = xr.Dataset(
        {"band_power": (("condition", "region"), bp_arm, {"long_name": f"{band_name} power of {out}"}),
         "psd_target": (("condition", "frequency"), psd_arm),
         "centres": (("region", "axis"), con.centres),
         **{k: eff[k] for k in ("effect", "ci_low", "ci_high", "verdict", "stim", "sham")}},
        coords={"condition": ["no stimulation", "stimulation"], "region": labels, "frequency": f,
                "axis": ["x", "y", "z"]},
        attrs={"output": out, "band": band_name, "targets": ",".join(targets),
               "montage": json.dumps(m.currents_mA), "n_seeds": n_seeds, "seeds": f"{seed0}–{seed0 + n_seeds - 1}",
               "relative_change_targets": change, "diverged": int(np.asarray(sim["diverged"]).any()),
               "frequency_hz": f_hz, "noise_rng": sim.attrs["noise_rng"], "elapsed_s": time.perf_counter() - t0},
    )
    return res


def optimize_job(spec: dict) -> dict:
    """Stimweaver-style optimization for target regions; returns currents and metrics (a dict).

    ``spec``: ``connectome``, ``layout``, ``targets`` (labels), ``target_En_V_m``, ``limits``, ``head``.
    """
    con = catalog.load_connectome(spec["connectome"])
    fields = efield.electrode_fields(con, spec.get("layout", "standard_1020"), head=spec.get("head", "sphere"))
    res = optimize_montage(Target(list(spec["targets"]), en_V_m=float(spec.get("target_En_V_m", 0.5))),
                           fields=fields, limits=user_limits(**(spec.get("limits") or {})))
    return {"currents_mA": dict(res.montage.currents_mA),
            "metrics": {k: (float(v) if isinstance(v, (int, float, np.floating)) else v)
                        for k, v in res.metrics.items()}}
