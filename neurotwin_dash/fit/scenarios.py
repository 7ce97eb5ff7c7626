"""The Alzheimer's disease scenario: PV→P2 inhibition loss, gamma loss, and a 40 Hz tACS search.

Model: the laminar neural mass model (LaNMM; Sanchez-Todo et al. 2023) on the tvb-data
76-region connectome. In the **target regions** the PV → P2 connectivity ``C7`` follows the path
of Ruffini's code (SCIENCE.md §3/§9): 550 (healthy) → 300 (MCI) → 140 (AD); the other regions
stay healthy. Loss of fast (PV) inhibition onto the superficial pyramidal cells is the
interneuron dysfunction reported in AD models (Verret et al. 2012, Cell 149:708) and is what
40 Hz sensory/electrical stimulation was proposed to compensate (Iaccarino et al. 2016, Nature
540:230).

Measures per stage (mean over the target regions, common noise seeds so that stages differ
only by ``C7``):

* ``gamma_power``: P2 (``v_p2``, the superficial gamma generator) power in 30–50 Hz;
* ``alpha_power`` and ``alpha_peak_hz``: P1 (``v_p1``, deep-layer alpha) 8–12 Hz power and peak;
* ``p2_rate`` (s⁻¹): mean P2 firing rate — the E/I change (less inhibition, more excitation);
* ``aperiodic_exponent``: FOOOF exponent of P1's spectrum, an E/I proxy (Gao et al. 2017).

tACS search (:func:`tacs_search`): candidate montages for the targets from
:mod:`neurotwin_dash.stimulation` (the bipolar montage over the targets and Stimweaver-like QP
montages, all within the stimulator limits: ≤ 2 mA per electrode, ≤ 4 mA injected, ≤ 8
electrodes), each at several current multipliers, with a 40 Hz sine; each montage's doses run as
one batched simulation in one Dask task. The outcome is the **restored fraction of lost gamma**

    restoration = (γ_stim − γ_stage) / (γ_healthy − γ_stage)

in the targets. :func:`dose_response` asks the complementary question — how large a 40 Hz
soma polarisation (mV) in the targets must be to restore half of the lost gamma — so the search
result can be read against what the model needs.
"""
from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np
import xarray as xr

__all__ = ["AD_PATH", "DEFAULT_TARGETS", "ScenarioConfig", "ad_progression", "tacs_search",
           "dose_response", "alzheimer_scenario", "plot_scenario", "restoration"]

#: C7 (PV → P2) along the disease path (SCIENCE.md §3)
AD_PATH = {"healthy": 550.0, "MCI": 300.0, "AD": 140.0}
#: default targets: left/right intraparietal and superior parietal cortex (posterior parietal
#: cortex, an early site of AD hypometabolism; reachable by scalp tES)
DEFAULT_TARGETS = ("lPCIP", "rPCIP", "lPCS", "rPCS")


class ScenarioConfig(dict):
    """Settings shared by every simulation of the scenario (a plain dict, picklable)."""

    def __init__(self, regions=DEFAULT_TARGETS, path: Mapping[str, float] | None = None,
                 connectome: str = "tvb76", coupling: float = 1.0, duration_s: float = 8.0,
                 transient_s: float = 2.0, dt_ms: float = 0.1, sample_rate_hz: float = 500.0,
                 seeds: Sequence[int] = (0,), gamma_band=(30.0, 50.0), frequency_hz: float = 40.0,
                 lambda_mV_per_V_m: float = 0.2):
        from .. import catalog
        conn = catalog.load(connectome)
        regions = [str(r) for r in regions]
        for r in regions:
            conn.index(r)   # unknown label -> ConnectomeError naming known ones
        path = dict(AD_PATH if path is None else path)
        if list(path)[0] != "healthy":
            raise ValueError(f"path must start with 'healthy', got stages {list(path)}")
        super().__init__(regions=regions, path=path, connectome=connectome, coupling=float(coupling),
                         duration_s=float(duration_s), transient_s=float(transient_s), dt_ms=float(dt_ms),
                         sample_rate_hz=float(sample_rate_hz), seeds=[int(s) for s in seeds],
                         gamma_band=tuple(gamma_band), frequency_hz=float(frequency_hz),
                         lambda_mV_per_V_m=float(lambda_mV_per_V_m))


def _c7_map(cfg, value: float) -> np.ndarray:
    from .. import catalog
    conn = catalog.load(cfg["connectome"])
    c7 = np.full(conn.n_regions, cfg["path"]["healthy"])
    c7[[conn.index(r) for r in cfg["regions"]]] = value
    return c7


def _run(cfg, c7_rows: np.ndarray, spatial_mV=None, seeds=None):
    """One batched LaNMM run; member k has C7 map ``c7_rows[k]`` and drive amplitude row k."""
    from ..simulate import Drive, simulate
    n = c7_rows.shape[0]
    drive = None
    if spatial_mV is not None:
        f = cfg["frequency_hz"]
        drive = Drive(spatial=np.asarray(spatial_mV, float),
                      waveform=lambda t: np.sin(2 * np.pi * f * np.asarray(t)), target="membrane")
    return simulate("lanmm", cfg["connectome"], duration_s=cfg["duration_s"], dt_ms=cfg["dt_ms"],
                    params={"C7": c7_rows, "coupling": np.full(n, cfg["coupling"])},
                    seed=seeds if seeds is not None else cfg["seeds"][0],
                    sample_rate_hz=cfg["sample_rate_hz"], transient_s=cfg["transient_s"],
                    record=["v_p1", "v_p2", "rate_p2"], drive=drive)


def _measures(cfg, res: xr.Dataset, aperiodic: bool = True) -> xr.Dataset:
    from ..analysis import spectra
    tgt = res.sel(region=cfg["regions"])
    psd2 = spectra.welch(tgt["v_p2"], window_s=2.0)
    psd1 = spectra.welch(tgt["v_p1"], window_s=2.0)
    out = xr.Dataset({
        "gamma_power": spectra.band_power(psd2, {"g": cfg["gamma_band"]}).isel(band=0, drop=True).mean("region"),
        "alpha_power": spectra.band_power(psd1, {"a": (8.0, 12.0)}).isel(band=0, drop=True).mean("region"),
        "alpha_peak_hz": spectra.peak_frequency(psd1.mean("region"), (4.0, 14.0)),
        "gamma_peak_hz": spectra.peak_frequency(psd2.mean("region"), (20.0, 60.0)),
        "p2_rate": tgt["rate_p2"].mean(["time", "region"]),
    })
    if aperiodic:
        out["aperiodic_exponent"] = spectra.aperiodic_exponent(psd1.mean("region"), (2.0, 40.0))
    out = out.drop_vars([c for c in out.coords if c != "batch"], errors="ignore")
    return out


def stage_task(cfg, stage_values: Sequence[float], seed: int) -> xr.Dataset:
    """Dask task: all stages for one seed in one batched run (measures over the targets)."""
    c7 = np.array([_c7_map(cfg, v) for v in stage_values])
    return _measures(cfg, _run(cfg, c7, seeds=seed))


def ad_progression(config: ScenarioConfig | None = None, client=None) -> xr.Dataset:
    """Gamma, alpha and E/I measures along the disease path (dims ``stage``, ``seed``).

    One Dask task per seed, each simulating every stage in one batched call.
    """
    cfg = config or ScenarioConfig()
    stages = list(cfg["path"])
    values = [cfg["path"][s] for s in stages]
    parts = _map(client, stage_task, [(cfg, values, s) for s in cfg["seeds"]])
    ds = xr.concat([p.rename(batch="stage") for p in parts], dim="seed")
    ds = ds.assign_coords(stage=stages, seed=cfg["seeds"], C7=("stage", values))
    ds["gamma_power"].attrs.update(units="mV²", band_hz=list(cfg["gamma_band"]), signal="v_p2")
    ds["alpha_power"].attrs.update(units="mV²", band_hz=[8.0, 12.0], signal="v_p1")
    ds["p2_rate"].attrs.update(units="1/s")
    ds.attrs.update(regions=list(cfg["regions"]), model="lanmm", connectome=cfg["connectome"],
                    coupling=cfg["coupling"])
    return ds


def montage_task(cfg, montage_dict: dict, doses: Sequence[float], stage_c7: float, seed: int) -> xr.Dataset:
    """Dask task: one montage at several current multipliers, one batched run."""
    from ..stimulation.coupling import tes_drives
    from ..stimulation.montage import Montage
    from ..simulate import simulate
    montage = Montage.from_dict(montage_dict)
    doses = np.asarray(doses, dtype=float)
    drives = tes_drives(montage, f"tacs:{cfg['frequency_hz']:g}Hz", connectome=cfg["connectome"],
                        lambda_mV_per_V_m=cfg["lambda_mV_per_V_m"], dose=doses)
    c7 = np.repeat(_c7_map(cfg, stage_c7)[None, :], len(doses), axis=0)
    res = simulate("lanmm", cfg["connectome"], duration_s=cfg["duration_s"], dt_ms=cfg["dt_ms"],
                   params={"C7": c7, "coupling": np.full(len(doses), cfg["coupling"])}, seed=seed,
                   sample_rate_hz=cfg["sample_rate_hz"], transient_s=cfg["transient_s"],
                   record=["v_p1", "v_p2", "rate_p2"], drive=drives)
    out = _measures(cfg, res, aperiodic=False)
    spatial = drives[0].spatial
    sp = np.asarray(spatial.sel(region=cfg["regions"]).values if hasattr(spatial, "sel") else spatial)
    out["target_shift_mV"] = ("batch", np.abs(sp).reshape(len(doses), -1).mean(axis=1))
    return out


def restoration(gamma_stim, gamma_stage, gamma_healthy):
    """Fraction of the lost gamma restored: (γ_stim − γ_stage) / (γ_healthy − γ_stage)."""
    lost = np.asarray(gamma_healthy, float) - np.asarray(gamma_stage, float)
    return (np.asarray(gamma_stim, float) - np.asarray(gamma_stage, float)) / lost


def tacs_search(config: ScenarioConfig | None = None, stage: str = "MCI", montages=None,
                doses: Sequence[float] = (0.5, 1.0), progression: xr.Dataset | None = None,
                client=None) -> xr.Dataset:
    """Search 40 Hz tACS montages × doses for the largest gamma restoration in the targets.

    Parameters
    ----------
    stage : str
        Disease stage to treat (a key of the config's path).
    montages : mapping name -> Montage, optional
        Default: :func:`neurotwin_dash.stimulation.optimize.candidate_montages` for the targets
        (bipolar + QP at three focality weights), all within the stimulator limits.
    doses : sequence of float
        Current multipliers (≤ 1 keeps every montage within its limits; checked).
    progression : Dataset, optional
        Output of :func:`ad_progression` (computed when omitted) for the healthy/stage levels.

    Returns
    -------
    xarray.Dataset over ``candidate`` (montage × dose): ``gamma_power``, ``restoration``,
    ``target_E_n_V_m`` (mean normal field in the targets at that dose), ``max_abs_E_n_V_m``,
    ``total_injected_mA``, ``max_electrode_mA``, ``target_shift_mV``; attrs ``best`` and
    ``best_restoration``.
    """
    from ..stimulation.efield import electrode_fields, montage_field
    from ..stimulation.optimize import candidate_montages
    cfg = config or ScenarioConfig()
    if stage not in cfg["path"] or stage == "healthy":
        raise ValueError(f"stage must be one of {[s for s in cfg['path'] if s != 'healthy']}, got {stage!r}")
    prog = progression if progression is not None else ad_progression(cfg, client)
    fields = electrode_fields(cfg["connectome"])
    if montages is None:
        montages = candidate_montages(cfg["regions"], fields)
    names = list(montages)
    seed = cfg["seeds"][0]
    tasks = [(cfg, montages[n].to_dict(), list(doses), cfg["path"][stage], seed) for n in names]
    parts = _map(client, montage_task, tasks)
    g_h = float(prog["gamma_power"].sel(stage="healthy", seed=seed))
    g_s = float(prog["gamma_power"].sel(stage=stage, seed=seed))
    rows = []
    for name, part in zip(names, parts):
        m = montages[name]
        en = montage_field(m, fields)["E_n"]
        for k, d in enumerate(doses):
            scaled = m.scaled(float(d))     # raises if a dose breaks the limits
            rows.append({
                "montage": name, "dose": float(d),
                "gamma_power": float(part["gamma_power"].values[k]),
                "target_shift_mV": float(part["target_shift_mV"].values[k]),
                "target_E_n_V_m": float(d * en.sel(region=cfg["regions"]).mean()),
                "max_abs_E_n_V_m": float(d * abs(en).max()),
                "total_injected_mA": float(scaled.total_injected_mA),
                "max_electrode_mA": float(max(abs(v) for v in scaled.currents_mA.values())),
                "currents": str({k2: round(v, 3) for k2, v in scaled.currents_mA.items()}),
            })
    ds = xr.Dataset({key: ("candidate", np.array([r[key] for r in rows]))
                     for key in rows[0] if key not in ("montage", "dose")},
                    coords={"candidate": np.arange(len(rows)),
                            "montage": ("candidate", [r["montage"] for r in rows]),
                            "dose": ("candidate", [r["dose"] for r in rows])})
    ds["restoration"] = ("candidate", restoration(ds["gamma_power"].values, g_s, g_h))
    best = int(np.nanargmax(ds["restoration"].values))
    ds.attrs.update(stage=stage, gamma_healthy=g_h, gamma_stage=g_s, frequency_hz=cfg["frequency_hz"],
                    lambda_mV_per_V_m=cfg["lambda_mV_per_V_m"], best=best,
                    best_montage=rows[best]["montage"], best_dose=rows[best]["dose"],
                    best_restoration=float(ds["restoration"].values[best]),
                    limits="≤ 2 mA per electrode, ≤ 4 mA injected, ≤ 8 electrodes")
    return ds


def dose_task(cfg, amplitudes_mV: Sequence[float], stage_c7: float, seed: int) -> xr.Dataset:
    """Dask task: uniform 40 Hz soma polarisation of the targets at several amplitudes."""
    from .. import catalog
    conn = catalog.load(cfg["connectome"])
    idx = [conn.index(r) for r in cfg["regions"]]
    a = np.asarray(amplitudes_mV, float)
    sp = np.zeros((len(a), conn.n_regions))
    sp[:, idx] = a[:, None]
    c7 = np.repeat(_c7_map(cfg, stage_c7)[None, :], len(a), axis=0)
    return _measures(cfg, _run(cfg, c7, spatial_mV=sp, seeds=seed), aperiodic=False)


def dose_response(config: ScenarioConfig | None = None, stage: str = "MCI",
                  amplitudes_mV: Sequence[float] = (0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0),
                  progression: xr.Dataset | None = None, client=None) -> xr.Dataset:
    """Restoration vs the amplitude (mV) of a 40 Hz soma polarisation confined to the targets.

    ``amplitude = λ · E_n``: divide by λ (0.2 mV per V/m by default) for the field it needs.
    Attribute ``half_restoration_mV``: the smallest tested amplitude restoring ≥ 50 % (NaN if none).
    """
    cfg = config or ScenarioConfig()
    prog = progression if progression is not None else ad_progression(cfg, client)
    seed = cfg["seeds"][0]
    amps = [float(a) for a in amplitudes_mV]
    half = max(1, len(amps) // 2)
    chunks = [amps[:half], amps[half:]] if len(amps) > 1 else [amps]
    parts = _map(client, dose_task, [(cfg, c, cfg["path"][stage], seed) for c in chunks if c])
    ds = xr.concat([p for p in parts], dim="batch").rename(batch="amplitude_mV")
    ds = ds.assign_coords(amplitude_mV=amps)
    g_h = float(prog["gamma_power"].sel(stage="healthy", seed=seed))
    g_s = float(prog["gamma_power"].sel(stage=stage, seed=seed))
    ds["restoration"] = ("amplitude_mV", restoration(ds["gamma_power"].values, g_s, g_h))
    ds["field_needed_V_m"] = ("amplitude_mV", np.array(amps) / cfg["lambda_mV_per_V_m"])
    ok = np.flatnonzero(ds["restoration"].values >= 0.5)
    ds.attrs.update(stage=stage, gamma_healthy=g_h, gamma_stage=g_s,
                    lambda_mV_per_V_m=cfg["lambda_mV_per_V_m"],
                    half_restoration_mV=float(amps[ok[0]]) if ok.size else float("nan"))
    return ds


def alzheimer_scenario(config: ScenarioConfig | None = None, stage: str = "MCI", doses=(0.5, 1.0),
                       amplitudes_mV=(0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0), client=None) -> dict:
    """Progression, tACS search and dose-response in one call: ``{"progression", "search", "dose"}``."""
    cfg = config or ScenarioConfig()
    t0 = time.perf_counter()
    prog = ad_progression(cfg, client)
    search = tacs_search(cfg, stage=stage, doses=doses, progression=prog, client=client)
    dose = dose_response(cfg, stage=stage, amplitudes_mV=amplitudes_mV, progression=prog, client=client)
    for ds in (prog, search, dose):
        ds.attrs["scenario_seconds"] = time.perf_counter() - t0
    return {"progression": prog, "search": search, "dose": dose}


def plot_scenario(result: dict, path=None):
    """Three panels: gamma/alpha along the path, restoration per candidate, dose-response."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    prog, search, dose = result["progression"], result["search"], result["dose"]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.8))
    g = prog["gamma_power"].mean("seed")
    a = prog["alpha_power"].mean("seed")
    x = np.arange(prog.sizes["stage"])
    ax[0].bar(x - 0.2, g, 0.4, label="P2 gamma 30–50 Hz")
    ax[0].bar(x + 0.2, a, 0.4, label="P1 alpha 8–12 Hz")
    ax[0].set_xticks(x, [f"{s}\nC7={c:g}" for s, c in zip(prog["stage"].values, prog["C7"].values)])
    ax[0].set_ylabel("power in targets (mV²)")
    ax[0].set_title("LaNMM: PV→P2 loss in targets")
    ax[0].legend(fontsize=8)
    labels = [f"{m}\n×{d:g}" for m, d in zip(search["montage"].values, search["dose"].values)]
    ax[1].bar(np.arange(search.sizes["candidate"]), 100 * search["restoration"], color="tab:purple")
    ax[1].axhline(50, ls="--", c="k", lw=1)
    ax[1].set_xticks(np.arange(search.sizes["candidate"]), labels, fontsize=6, rotation=90)
    ax[1].set_ylabel("lost gamma restored (%)")
    ax[1].set_title(f"40 Hz tACS within limits ({search.attrs['stage']})")
    ax[2].plot(dose["amplitude_mV"], 100 * dose["restoration"], "o-")
    ax[2].axhline(50, ls="--", c="k", lw=1)
    safe_max = float(search["target_shift_mV"].max())
    ax[2].axvline(safe_max, c="tab:purple", lw=1, label=f"strongest safe montage ({safe_max:.2f} mV)")
    ax[2].set_xlabel("40 Hz soma polarisation in targets (mV)")
    ax[2].set_ylabel("lost gamma restored (%)")
    ax[2].set_title("what the model needs")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def _map(client, func, arg_tuples):
    """Run ``func(*args)`` for each tuple: one Dask submission (or in-process with ``"sync"``)."""
    if client == "sync":
        return [func(*a) for a in arg_tuples]
    from ..cluster import get_client
    client = get_client(client)
    cols = list(zip(*arg_tuples))
    futures = client.map(func, *cols, pure=False, retries=1)
    return client.gather(futures)
