"""The Alzheimer's disease scenario: the PV→P2 loss path, densely, and 40 Hz tACS with its uncertainty.

Model: the laminar neural mass model (LaNMM; Sanchez-Todo et al. 2023) on the tvb-data
76-region connectome. In the **target regions** the PV → P2 connectivity ``C7`` is lowered from
the healthy 550 towards 140 (the AD end point of Ruffini's code; docs/science.md §3) over a dense path
(default nine values, :data:`DENSE_C7`); the other regions stay healthy. Loss of fast (PV)
inhibition onto the superficial pyramidal cells is the interneuron dysfunction reported in AD
models (Verret et al. 2012, Cell 149:708) and is what 40 Hz stimulation was proposed to
compensate (Iaccarino et al. 2016, Nature 540:230).

**What the model says** (measured, README): the course is biphasic. Moderate PV loss first makes
the superficial PING loop *hyperexcitable* (more and faster gamma than healthy, maximum near
C7 = 450), then gamma declines and finally collapses (< 1 % of healthy at C7 = 140, where P2
sits near a fixed point). Stages are therefore **defined from the curve**, not from hand-picked
values (:func:`classify_stages`): *hyperexcitable* = target gamma above healthy with a 95 % CI
that excludes 0 (paired by seed); *collapsed* = below :data:`COLLAPSE_FRACTION` of healthy;
*declining* = the rest after the maximum.

Measures per C7 value and noise seed (mean over the targets; every C7 value of a seed in one
batched run, so values differ only by C7 — common random numbers), each summarised as mean and
95 % CI over seeds (:func:`summarise_progression`):

* ``gamma_power``: P2 (``v_p2``) power in the fixed 30–50 Hz band; ``gamma_peak_hz`` its peak
  (20–80 Hz); ``gamma_peak_band_power``: power in the band that **follows the peak**
  (peak ± :data:`PEAK_HALF_WIDTH_HZ`). As C7 falls the peak moves up to ≈ 48–50 Hz, the edge of
  30–50 Hz; ``band_edge_share`` in the summary is the part of the fixed-band loss that is only
  the peak leaving the band;
* ``alpha_power`` / ``alpha_peak_hz``: P1 (``v_p1``) 8–12 Hz power and 4–14 Hz peak;
* ``p2_rate`` (s⁻¹): P2 firing rate (E/I); ``aperiodic_exponent``: FOOOF exponent of P1;
* ``pac_mi``: Tort modulation index of P1 alpha (8–12 Hz) phase and P2 gamma (30–80 Hz) amplitude.

Stimulation (one estimator for every effect: :mod:`neurotwin_dash.stimulation.effects`): every
stimulated arm is compared with sham over the same noise seeds (paired differences, mean and
95 % t CI, verdict "indistinguishable from sham" when the CI contains 0), on three outcomes in
the targets — P2 power in the gamma band, P2 PSD at exactly the stimulation frequency, and the
phase locking of P2 to the 40 Hz waveform (against sham's locking to the same reference).

* :func:`tacs_search`: candidate montages for the targets (bipolar + Stimweaver-like QP, all
  within ≤ 2 mA per electrode, ≤ 4 mA injected, ≤ 8 electrodes; fields from
  :mod:`neurotwin_dash.stimulation`) × current multipliers, ranked by the **lower CI bound** of
  the gamma effect;
* :func:`dose_response`: a 40 Hz soma polarisation confined to the targets at growing amplitude,
  per stage; the **threshold** of each outcome is the smallest amplitude (mV, and V/m at λ) whose
  CI excludes 0.

Dask: one task per noise seed for the path, one per (stage, seed) for the stimulation runs; each
task is one batched simulation. ``client="sync"`` runs them in this process.
"""
from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np
import xarray as xr

from .. import catalog
from ..analysis import pac, spectra
from ..cluster import get_client
from ..simulate import Drive, simulate
from ..stimulation.coupling import STIM_PARAMS, tes_drives
from ..stimulation.effects import (OUTCOMES, arm_effects, format_effect, mean_ci, paired_effect,
                                   simulate_arms, stimulation_outcomes)
from ..stimulation.efield import electrode_fields, montage_field
from ..stimulation.optimize import candidate_montages
from ..stimulation.waveforms import TACS

__all__ = ["AD_PATH", "DENSE_C7", "DEFAULT_TARGETS", "STAGES", "COLLAPSE_FRACTION", "PEAK_HALF_WIDTH_HZ",
           "ScenarioConfig", "ad_progression", "summarise_progression", "classify_stages", "stage_points",
           "tacs_search", "dose_response", "alzheimer_scenario", "describe_effect", "plot_scenario",
           "restoration", "path_task", "arms_task"]

#: C7 (PV → P2) at the three named points of Ruffini's code (docs/science.md §3)
AD_PATH = {"healthy": 550.0, "MCI": 300.0, "AD": 140.0}
#: the dense disease path: healthy (first) → AD (last)
DENSE_C7 = (550.0, 500.0, 450.0, 400.0, 350.0, 300.0, 250.0, 200.0, 140.0)
#: stage names (healthy is the first C7 value; the others come from the gamma curve)
STAGES = ("healthy", "hyperexcitable", "declining", "collapsed")
#: gamma below this fraction of healthy counts as collapsed
COLLAPSE_FRACTION = 0.05
#: half-width (Hz) of the gamma band that follows the P2 peak
PEAK_HALF_WIDTH_HZ = 10.0
#: default targets: left/right intraparietal and superior parietal cortex (posterior parietal
#: cortex, an early site of AD hypometabolism; reachable by scalp tES)
DEFAULT_TARGETS = ("lPCIP", "rPCIP", "lPCS", "rPCS")
_RECORD = ["v_p1", "v_p2", "rate_p2"]



class ScenarioConfig(dict):
    """Settings shared by every simulation of the scenario (a plain dict, picklable).

    Parameters
    ----------
    regions : region labels of the targets (where C7 changes and effects are measured)
    c7_path : C7 values, healthy first, strictly decreasing (default :data:`DENSE_C7`)
    seeds : noise seeds (≥ 2 distinct; every mean comes with a CI over them)
    lambda_mV_per_V_m : λ of the field → soma coupling; default the stimulation package's
        (``STIM_PARAMS``)
    """

    def __init__(self, regions=DEFAULT_TARGETS, c7_path: Sequence[float] = DENSE_C7,
                 connectome: str = "tvb76", coupling: float = 1.0, duration_s: float = 8.0,
                 transient_s: float = 2.0, dt_ms: float = 0.1, sample_rate_hz: float = 500.0,
                 seeds: Sequence[int] = (0, 1, 2, 3, 4), gamma_band=(30.0, 50.0), frequency_hz: float = 40.0,
                 lambda_mV_per_V_m: float | None = None):
        conn = catalog.load(connectome)
        regions = [str(r) for r in regions]
        for r in regions:
            conn.index(r)   # unknown label -> ConnectomeError naming known ones
        c7 = [float(v) for v in c7_path]
        if len(c7) < 2 or np.any(np.diff(c7) >= 0):
            raise ValueError(f"c7_path must hold ≥ 2 strictly decreasing values, healthy first; got {c7}")
        seeds = [int(s) for s in seeds]
        if len(seeds) < 2 or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be ≥ 2 distinct integers (CIs are over seeds); got {seeds}")
        spec = STIM_PARAMS["stim_lambda_mV_per_V_m"]
        lam = float(spec.check(spec.default if lambda_mV_per_V_m is None else lambda_mV_per_V_m))
        super().__init__(regions=regions, c7_path=c7, connectome=connectome, coupling=float(coupling),
                         duration_s=float(duration_s), transient_s=float(transient_s), dt_ms=float(dt_ms),
                         sample_rate_hz=float(sample_rate_hz), seeds=seeds,
                         gamma_band=tuple(float(b) for b in gamma_band), frequency_hz=float(frequency_hz),
                         lambda_mV_per_V_m=lam)


def _c7_map(cfg, value: float) -> np.ndarray:
    conn = catalog.load(cfg["connectome"])
    c7 = np.full(conn.n_regions, cfg["c7_path"][0])
    c7[[conn.index(r) for r in cfg["regions"]]] = value
    return c7


def _sim_kwargs(cfg) -> dict:
    return dict(duration_s=cfg["duration_s"], dt_ms=cfg["dt_ms"], sample_rate_hz=cfg["sample_rate_hz"],
                transient_s=cfg["transient_s"])


# --- the disease path --------------------------------------------------------------------------

def _measures(cfg, res: xr.Dataset) -> xr.Dataset:
    tgt = res.sel(region=cfg["regions"])
    psd2 = spectra.welch(tgt["v_p2"], window_s=2.0)
    psd1 = spectra.welch(tgt["v_p1"], window_s=2.0)
    p2 = psd2.mean("region")
    peak = spectra.peak_frequency(p2, (20.0, 80.0))
    f = p2["frequency"].values
    # the band that follows the peak, per member
    follow = np.array([np.trapezoid(row[(f >= pk - PEAK_HALF_WIDTH_HZ) & (f < pk + PEAK_HALF_WIDTH_HZ)],
                                f[(f >= pk - PEAK_HALF_WIDTH_HZ) & (f < pk + PEAK_HALF_WIDTH_HZ)])
                       if np.isfinite(pk) else np.nan for row, pk in zip(p2.values, peak.values)])
    mi = pac.phase_amplitude_coupling(tgt["v_p1"], (8.0, 12.0), (30.0, 80.0), amp_signal=tgt["v_p2"],
                                      n_surrogates=0)["mi"]
    out = xr.Dataset({
        "gamma_power": spectra.band_power(psd2, {"g": cfg["gamma_band"]}).isel(band=0, drop=True).mean("region"),
        "gamma_peak_hz": peak,
        "gamma_peak_band_power": ("batch", follow),
        "alpha_power": spectra.band_power(psd1, {"a": (8.0, 12.0)}).isel(band=0, drop=True).mean("region"),
        "alpha_peak_hz": spectra.peak_frequency(psd1.mean("region"), (4.0, 14.0)),
        "p2_rate": tgt["rate_p2"].mean(["time", "region"]),
        "aperiodic_exponent": spectra.aperiodic_exponent(psd1.mean("region"), (2.0, 40.0)),
        "pac_mi": mi.mean("region"),
    })
    return out.drop_vars([c for c in out.coords if c != "batch"], errors="ignore")


_UNITS = {"gamma_power": "mV²", "gamma_peak_hz": "Hz", "gamma_peak_band_power": "mV²", "alpha_power": "mV²",
          "alpha_peak_hz": "Hz", "p2_rate": "1/s", "aperiodic_exponent": "1", "pac_mi": "1"}


def path_task(cfg, c7_values: Sequence[float], seed: int) -> xr.Dataset:
    """Dask task: every C7 value for one seed in one batched run (measures over the targets)."""
    c7 = np.array([_c7_map(cfg, v) for v in c7_values])
    res = simulate("lanmm", cfg["connectome"], params={"C7": c7, "coupling": np.full(len(c7), cfg["coupling"])},
                   seed=seed, record=_RECORD, **_sim_kwargs(cfg))
    return _measures(cfg, res)


def ad_progression(config: ScenarioConfig | None = None, client=None) -> xr.Dataset:
    """Every measure along the C7 path, per seed: dims ``(c7, seed)``.

    One Dask task per seed, each simulating every C7 value in one batched call.
    """
    cfg = config or ScenarioConfig()
    values = list(cfg["c7_path"])
    parts = _map(client, path_task, [(cfg, values, s) for s in cfg["seeds"]])
    ds = xr.concat([p.rename(batch="c7") for p in parts], dim="seed")
    ds = ds.assign_coords(c7=values, seed=cfg["seeds"]).transpose("c7", "seed")
    for k, u in _UNITS.items():
        ds[k].attrs["units"] = u
    ds["gamma_power"].attrs.update(band_hz=list(cfg["gamma_band"]), signal="v_p2")
    ds["gamma_peak_band_power"].attrs.update(band=f"P2 peak ± {PEAK_HALF_WIDTH_HZ:g} Hz", signal="v_p2")
    ds["alpha_power"].attrs.update(band_hz=[8.0, 12.0], signal="v_p1")
    ds.attrs.update(regions=list(cfg["regions"]), model="lanmm", connectome=cfg["connectome"],
                    coupling=cfg["coupling"], duration_s=cfg["duration_s"])
    return ds


def classify_stages(prog: xr.Dataset, collapse_fraction: float = COLLAPSE_FRACTION) -> np.ndarray:
    """Stage name per C7 value, from the gamma curve (see the module notes).

    ``healthy`` (first value); ``collapsed`` (mean gamma < ``collapse_fraction`` × healthy);
    ``hyperexcitable`` (gamma − healthy gamma > 0 with a 95 % CI, paired by seed); after the
    maximum the rest is ``declining``; before it, a value not distinguishable from healthy stays
    ``healthy``.
    """
    g = prog["gamma_power"]
    vs = paired_effect(g, g.isel(c7=0), "seed")
    mean = g.mean("seed").values
    imax = int(np.nanargmax(mean))
    out = []
    for k in range(g.sizes["c7"]):
        if k == 0:
            out.append("healthy")
        elif mean[k] < collapse_fraction * mean[0]:
            out.append("collapsed")
        elif float(vs["ci_low"].values[k]) > 0:
            out.append("hyperexcitable")
        else:
            out.append("declining" if k > imax else "healthy")
    return np.array(out)


def summarise_progression(prog: xr.Dataset) -> xr.Dataset:
    """Mean and 95 % CI (over seeds) of every measure per C7 value, the stages, and the key numbers.

    Returns a Dataset over ``(c7, measure)`` with ``mean``, ``ci_low``, ``ci_high``; coordinate
    ``stage`` (per C7); ``gamma_vs_healthy`` (paired effect, mV², with CI) and
    ``band_edge_share`` (per C7: part of the fixed-band gamma loss that is only the peak moving
    out of the band, from the means; NaN where there is no loss). Attrs: ``gamma_max``,
    ``gamma_max_c7``, ``gamma_max_ratio`` (max / healthy), ``gamma_last_ratio`` (last C7 / healthy).
    """
    measures = list(prog.data_vars)
    arr = xr.concat([prog[m] for m in measures], dim=xr.DataArray(measures, dims="measure", name="measure"))
    s = mean_ci(arr, "seed")
    out = xr.Dataset({"mean": s["mean"], "ci_low": s["ci_low"], "ci_high": s["ci_high"]})
    out = out.transpose("c7", "measure")
    stages = classify_stages(prog)
    out = out.assign_coords(stage=("c7", stages))
    g = prog["gamma_power"]
    vs = paired_effect(g, g.isel(c7=0), "seed")
    out["gamma_vs_healthy"] = vs["effect"]
    out["gamma_vs_healthy_ci_low"] = vs["ci_low"]
    out["gamma_vs_healthy_ci_high"] = vs["ci_high"]
    gm = g.mean("seed").values
    pm = prog["gamma_peak_band_power"].mean("seed").values
    loss_fixed = gm[0] - gm
    loss_follow = pm[0] - pm
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(loss_fixed > 0, (loss_fixed - loss_follow) / loss_fixed, np.nan)
    out["band_edge_share"] = ("c7", share)
    imax = int(np.nanargmax(gm))
    out.attrs.update(prog.attrs, gamma_max=float(gm[imax]), gamma_max_c7=float(prog["c7"].values[imax]),
                     gamma_max_ratio=float(gm[imax] / gm[0]), gamma_healthy=float(gm[0]),
                     gamma_last_ratio=float(gm[-1] / gm[0]), n_seeds=int(prog.sizes["seed"]),
                     confidence=s.attrs["confidence"], stages=list(STAGES))
    return out


def stage_points(summary: xr.Dataset) -> dict:
    """One C7 value per stage present on the path, for the stimulation runs.

    hyperexcitable: the gamma maximum; declining: the declining value whose gamma is closest to
    half of healthy; collapsed: the last value (the AD end point).
    """
    stages = summary["stage"].values
    c7 = summary["c7"].values
    g = summary["mean"].sel(measure="gamma_power").values
    out = {}
    hyp = np.flatnonzero(stages == "hyperexcitable")
    if hyp.size:
        out["hyperexcitable"] = float(c7[hyp[np.argmax(g[hyp])]])
    dec = np.flatnonzero(stages == "declining")
    if dec.size:
        out["declining"] = float(c7[dec[np.argmin(np.abs(g[dec] / g[0] - 0.5))]])
    col = np.flatnonzero(stages == "collapsed")
    if col.size:
        out["collapsed"] = float(c7[col[-1]])
    return out


# --- stimulation ------------------------------------------------------------------------------

def arms_task(cfg, stage_c7: float, spatial_mV: np.ndarray, seed: int) -> xr.Dataset:
    """Dask task: sham + every stimulated arm (rows of ``spatial_mV``, mV) for one seed, one
    batched run; the outcomes of :func:`~neurotwin_dash.stimulation.effects.stimulation_outcomes`."""
    wave = TACS(cfg["frequency_hz"])
    res = simulate_arms("lanmm", cfg["connectome"], Drive(np.asarray(spatial_mV, float), wave, "membrane", "mV"),
                        [seed], params={"C7": _c7_map(cfg, stage_c7), "coupling": cfg["coupling"]},
                        record=["v_p2"], **_sim_kwargs(cfg))
    out = stimulation_outcomes(res, "v_p2", cfg["regions"], cfg["frequency_hz"], wave(res["time"].values),
                               cfg["gamma_band"])
    return out.assign_coords(arm=res["arm"], seed=res["seed"])


def _effects(cfg, stage_c7, spatial, client):
    """Paired effects of every row of ``spatial`` (arm, region) at one C7, one task per seed."""
    parts = _map(client, arms_task, [(cfg, stage_c7, spatial, s) for s in cfg["seeds"]])
    return arm_effects(xr.concat(parts, dim="batch"))


def restoration(gamma_stim, gamma_stage, gamma_healthy):
    """Fraction of the lost gamma restored: (γ_stim − γ_stage) / (γ_healthy − γ_stage)."""
    lost = np.asarray(gamma_healthy, float) - np.asarray(gamma_stage, float)
    return (np.asarray(gamma_stim, float) - np.asarray(gamma_stage, float)) / lost


def tacs_search(config: ScenarioConfig | None = None, stage_c7: float = 300.0, montages=None,
                doses: Sequence[float] = (0.5, 1.0), gamma_healthy: float | None = None,
                client=None) -> xr.Dataset:
    """40 Hz tACS montages × doses at one point of the path, every effect with its 95 % CI.

    Parameters
    ----------
    stage_c7 : float
        C7 of the targets (e.g. from :func:`stage_points`).
    montages : mapping name -> Montage, optional
        Default: :func:`neurotwin_dash.stimulation.optimize.candidate_montages` for the targets
        (bipolar + QP at three focality weights), all within the stimulator limits.
    doses : current multipliers (≤ 1 keeps every montage within its limits; checked)
    gamma_healthy : float, optional
        Healthy target gamma (mV²); with it, ``restoration`` (and its CI) is the effect on gamma
        divided by the gamma lost at this stage (NaN where the stage lost none).

    Returns
    -------
    Dataset over ``(candidate, outcome)``: ``effect``, ``ci_low``, ``ci_high``, ``verdict``,
    ``stim``, ``sham``; per candidate ``montage``, ``dose``, ``target_E_n_V_m``,
    ``target_shift_mV``, ``max_abs_E_n_V_m``, ``total_injected_mA``, ``max_electrode_mA``,
    ``restoration`` (+ CI). Attrs ``best`` (largest lower CI bound of the gamma effect),
    ``best_montage``, ``best_dose``, ``best_verdict``.
    """
    cfg = config or ScenarioConfig()
    fields = electrode_fields(cfg["connectome"])
    if montages is None:
        montages = candidate_montages(cfg["regions"], fields)
    doses = [float(d) for d in doses]
    rows, spatial = [], []
    for name, m in montages.items():
        drv = tes_drives(m, TACS(cfg["frequency_hz"]), cfg["connectome"], cfg["lambda_mV_per_V_m"],
                         dose=doses, fields=fields)[0]
        sp = drv.spatial.values                                    # (dose, region) mV
        en = montage_field(m, fields)["E_n"]
        for k, d in enumerate(doses):
            scaled = m.scaled(d)     # raises if a dose breaks the limits
            spatial.append(sp[k])
            rows.append({
                "montage": name, "dose": d,
                "target_shift_mV": float(np.abs(drv.spatial.sel(region=cfg["regions"]).values[k]).mean()),
                "target_E_n_V_m": float(d * en.sel(region=cfg["regions"]).mean()),
                "max_abs_E_n_V_m": float(d * abs(en).max()),
                "total_injected_mA": float(scaled.total_injected_mA),
                "max_electrode_mA": float(max(abs(v) for v in scaled.currents_mA.values())),
                "currents": str({k2: round(v, 3) for k2, v in scaled.currents_mA.items()}),
            })
    eff = _effects(cfg, stage_c7, np.array(spatial), client)
    per_seed = eff["per_seed"]
    eff = eff.drop_vars("per_seed").rename(arm="candidate").assign_coords(candidate=np.arange(len(rows)))
    for key in rows[0]:
        vals = [r[key] for r in rows]
        if key in ("montage", "dose"):
            eff = eff.assign_coords({key: ("candidate", vals)})
        else:
            eff[key] = ("candidate", np.array(vals))
    g_stage = float(per_seed.sel(outcome="band_power", condition=0).mean())
    if gamma_healthy is not None and gamma_healthy > g_stage:
        lost = gamma_healthy - g_stage
        for v in ("effect", "ci_low", "ci_high"):
            eff[f"restoration_{v}" if v != "effect" else "restoration"] = eff[v].sel(outcome="band_power") / lost
    score = eff["ci_low"].sel(outcome="band_power").values
    best = int(np.nanargmax(score))
    eff.attrs.update(stage_c7=float(stage_c7), gamma_stage=g_stage,
                     gamma_healthy=float("nan") if gamma_healthy is None else float(gamma_healthy),
                     frequency_hz=cfg["frequency_hz"], lambda_mV_per_V_m=cfg["lambda_mV_per_V_m"], best=best,
                     best_montage=rows[best]["montage"], best_dose=rows[best]["dose"],
                     best_verdict=str(eff["verdict"].sel(outcome="band_power").values[best]),
                     ranked_by="lower 95 % CI bound of the gamma effect",
                     limits="≤ 2 mA per electrode, ≤ 4 mA injected, ≤ 8 electrodes")
    return eff


def dose_response(config: ScenarioConfig | None = None, stages: Mapping[str, float] | None = None,
                  amplitudes_mV: Sequence[float] = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
                  client=None) -> xr.Dataset:
    """Effects of a 40 Hz soma polarisation confined to the targets vs its amplitude, per stage.

    Parameters
    ----------
    stages : mapping stage name -> C7 (default: the MCI point 300 as ``"declining"``)
    amplitudes_mV : peak polarisation amplitudes (mV); ``amplitude = λ · E_n``

    Returns
    -------
    Dataset over ``(stage, amplitude_mV, outcome)``: ``effect``, ``ci_low``, ``ci_high``,
    ``verdict``, ``stim``, ``sham``; ``threshold_mV`` and ``threshold_V_m`` over
    ``(stage, outcome)``: the smallest amplitude whose CI excludes 0 (NaN if none) and the
    normal field it needs at λ; ``field_needed_V_m`` per amplitude.
    """
    cfg = config or ScenarioConfig()
    stages = dict(stages or {"declining": AD_PATH["MCI"]})
    conn = catalog.load(cfg["connectome"])
    in_t = np.isin(conn.labels, cfg["regions"]).astype(float)
    amps = np.array([float(a) for a in amplitudes_mV])
    if np.any(amps <= 0) or np.any(np.diff(amps) <= 0):
        raise ValueError(f"amplitudes_mV must be positive and increasing, got {list(amps)}")
    spatial = amps[:, None] * in_t[None, :]
    parts = []
    for name, c7 in stages.items():
        e = _effects(cfg, c7, spatial, client).drop_vars("per_seed")
        e = e.rename(arm="amplitude_mV").assign_coords(amplitude_mV=amps)
        parts.append(e.expand_dims(stage=[name]).assign_coords(stage_c7=("stage", [float(c7)])))
    ds = xr.concat(parts, dim="stage")
    excl = ds["excludes_zero"].transpose("stage", "outcome", "amplitude_mV").values
    thr = np.where(excl.any(axis=-1), amps[np.argmax(excl, axis=-1)], np.nan)
    ds["threshold_mV"] = (("stage", "outcome"), thr)
    ds["threshold_V_m"] = ds["threshold_mV"] / cfg["lambda_mV_per_V_m"]
    ds["field_needed_V_m"] = ("amplitude_mV", amps / cfg["lambda_mV_per_V_m"])
    ds.attrs.update(lambda_mV_per_V_m=cfg["lambda_mV_per_V_m"], frequency_hz=cfg["frequency_hz"],
                    n_seeds=len(cfg["seeds"]),
                    threshold="smallest tested amplitude whose 95 % CI excludes 0")
    return ds


def alzheimer_scenario(config: ScenarioConfig | None = None, doses=(0.5, 1.0),
                       amplitudes_mV=(0.05, 0.1, 0.2, 0.5, 1.0, 2.0), search_stage: str = "declining",
                       dose_stages: Sequence[str] | None = None, client=None) -> dict:
    """The path, its stages, the tACS search and the dose-response in one call.

    Returns ``{"progression", "summary", "search", "dose", "stages"}``: per-seed measures, their
    mean/CI summary with stages, the montage × dose search at ``search_stage`` and the
    dose-response at ``dose_stages`` (default every stage found on the path), every effect with
    its 95 % CI over the config's seeds.
    """
    cfg = config or ScenarioConfig()
    t0 = time.perf_counter()
    prog = ad_progression(cfg, client)
    summary = summarise_progression(prog)
    points = stage_points(summary)
    if search_stage not in points:
        raise ValueError(f"search_stage {search_stage!r} is not on this path; stages found: {list(points)}")
    search = tacs_search(cfg, points[search_stage], doses=doses, gamma_healthy=summary.attrs["gamma_healthy"],
                         client=client)
    search.attrs["stage"] = search_stage
    wanted = list(points) if dose_stages is None else list(dose_stages)
    dose = dose_response(cfg, {s: points[s] for s in wanted if s in points}, amplitudes_mV, client=client)
    dose.attrs["safe_max_shift_mV"] = float(search["target_shift_mV"].max())
    for ds in (prog, summary, search, dose):
        ds.attrs["scenario_seconds"] = time.perf_counter() - t0
    return {"progression": prog, "summary": summary, "search": search, "dose": dose, "stages": points}


def describe_effect(ds: xr.Dataset, outcome: str, **where) -> str:
    """The effect of ``outcome`` at ``where`` (e.g. ``candidate=0``) as one line of text."""
    e = ds.sel(outcome=outcome, **where)
    unit = OUTCOMES[outcome][1]
    return format_effect(e["effect"], e["ci_low"], e["ci_high"], ds.attrs["n_seeds"], unit)


# --- figure ------------------------------------------------------------------------------------

_STAGE_COLOURS = {"healthy": "tab:green", "hyperexcitable": "tab:orange", "declining": "tab:red",
                  "collapsed": "0.3"}


def _errorbar(ax, x, mean, low, high, **kw):
    ax.errorbar(x, mean, yerr=[np.asarray(mean) - np.asarray(low), np.asarray(high) - np.asarray(mean)],
                capsize=3, **kw)


def plot_scenario(result: dict, path=None):
    """Path measures (mean ± 95 % CI, coloured by stage), the search and the dose-response
    (effects vs sham with 95 % CIs) in one figure."""
    import matplotlib  # ~1 s to import; only the figure needs it
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    summ, search, dose = result["summary"], result["search"], result["dose"]
    fig, ax = plt.subplots(4, 3, figsize=(15, 15))
    c7 = summ["c7"].values
    stages = summ["stage"].values
    panels = [("gamma_power", f"P2 gamma {summ.attrs.get('gamma_band', '30–50 Hz')}"),
              ("gamma_peak_hz", "P2 peak frequency (Hz)"), ("alpha_power", "P1 alpha 8–12 Hz (mV²)"),
              ("p2_rate", "P2 firing rate (1/s)"), ("aperiodic_exponent", "P1 aperiodic exponent"),
              ("pac_mi", "PAC: P1 alpha phase → P2 gamma amp (MI)")]
    for a, (m, title) in zip(ax[:2].ravel(), panels):
        s = summ.sel(measure=m)
        for st in STAGES:
            k = stages == st
            if k.any():
                _errorbar(a, c7[k], s["mean"].values[k], s["ci_low"].values[k], s["ci_high"].values[k],
                          fmt="o", color=_STAGE_COLOURS[st], label=st)
        a.plot(c7, s["mean"].values, color="0.7", lw=1, zorder=0)
        a.set(xlabel="C7 (PV → P2) in the targets", title=title)
        a.invert_xaxis()
    g = summ.sel(measure="gamma_peak_band_power")
    _errorbar(ax[0, 0], c7, g["mean"], g["ci_low"], g["ci_high"], fmt="s", mfc="none", color="tab:blue",
              label=f"band following the peak (± {PEAK_HALF_WIDTH_HZ:g} Hz)")
    ax[0, 0].set_yscale("log")
    ax[0, 0].set_ylabel("power in targets (mV²)")
    ax[0, 0].set_title("P2 gamma: 30–50 Hz (filled) and peak band")
    ax[0, 0].legend(fontsize=7)
    # search: one panel per outcome
    cand = [f"{m}\n×{d:g}" for m, d in zip(search["montage"].values, search["dose"].values)]
    x = np.arange(search.sizes["candidate"])
    for a, o in zip(ax[2], search["outcome"].values):
        e = search.sel(outcome=o)
        _errorbar(a, x, e["effect"], e["ci_low"], e["ci_high"], fmt="o", color="tab:purple")
        a.axhline(0, c="k", lw=1)
        a.set_xticks(x, cand, fontsize=6, rotation=90)
        a.set_title(f"safe 40 Hz tACS ({search.attrs.get('stage', '')}, C7 = {search.attrs['stage_c7']:g}):\n"
                    f"Δ {OUTCOMES[str(o)][0]} vs sham", fontsize=9)
        a.set_ylabel(f"stimulated − sham ({OUTCOMES[str(o)][1] or 'PLV'})")
    # dose-response: one panel per outcome, one line per stage
    amps = dose["amplitude_mV"].values
    for a, o in zip(ax[3], dose["outcome"].values):
        for st in dose["stage"].values:
            e = dose.sel(outcome=o, stage=st)
            _errorbar(a, amps, e["effect"], e["ci_low"], e["ci_high"], fmt="o-", color=_STAGE_COLOURS.get(str(st)),
                      label=f"{st} (C7 = {float(e['stage_c7']):g}); threshold "
                            f"{float(e['threshold_mV']):.2g} mV")
        a.axhline(0, c="k", lw=1)
        if o == "band_power":     # what restoring the healthy level would take, per stage
            for st in dose["stage"].values:
                lost = summ.attrs["gamma_healthy"] - float(summ["mean"].sel(
                    measure="gamma_power", c7=float(dose["stage_c7"].sel(stage=st))))
                if lost > 0:
                    a.axhline(lost, color=_STAGE_COLOURS.get(str(st)), ls=":", lw=1.5,
                              label=f"gamma lost at {st} ({lost:.2g} mV²)")
        a.axvline(dose.attrs.get("safe_max_shift_mV", np.nan), c="tab:purple", ls="--", lw=1,
                  label="strongest safe montage")
        a.set_xscale("log")
        a.set(xlabel=f"40 Hz soma polarisation in targets (mV; ÷ λ = {dose.attrs['lambda_mV_per_V_m']:g} → V/m)",
              ylabel=f"stimulated − sham ({OUTCOMES[str(o)][1] or 'PLV'})", title=f"dose-response: {OUTCOMES[str(o)][0]}")
        a.legend(fontsize=6)
    ax[0, 1].legend(fontsize=7)
    fig.suptitle(f"LaNMM on {summ.attrs.get('connectome', '')}, targets {', '.join(summ.attrs.get('regions', []))}: "
                 f"mean ± 95 % CI over {summ.attrs['n_seeds']} seeds", fontsize=11)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def _map(client, func, arg_tuples):
    """Run ``func(*args)`` for each tuple: one Dask submission (or in-process with ``"sync"``)."""
    if client == "sync":
        return [func(*a) for a in arg_tuples]
    client = get_client(client)
    cols = list(zip(*arg_tuples))
    futures = client.map(func, *cols, pure=False, retries=1)
    return client.gather(futures)
