"""Larger personalisation runs than CI affords, with figures for the README.

``hcp``: CMA-ES fit of the HCP group FC with 20-minute BOLD per candidate (the CI test uses
5 minutes), printed beside the trivial log-structural-weight baseline; figure
``bench/figures/hcp_fc_fit.png`` (empirical vs simulated FC, scatter of upper triangles,
best r per generation).

``ad``: the Alzheimer's scenario at full length (dense C7 path of 9 values x 5 noise seeds, the
montage x dose search and the dose-response at every stage, 10 s runs; every effect with its 95 %
CI), then the montage designer's 5-seed effect job; figure ``bench/figures/ad_scenario.png``.

    python bench/bench_fit.py hcp [--generations 6 --popsize 8 --duration 1210]
    python bench/bench_fit.py ad

``personal``: personal twins of the catalog subjects (``neurotwin personalize``): held-out r beside
every baseline, the 12 × 12 identifiability matrix, robustness at ±5 % coupling; wall time per
subject and in all, evaluations per minute; figures ``bench/figures/personal_identifiability.png``
and ``bench/figures/personal_<first subject>.png``.

    python bench/bench_fit.py personal [--subjects hcp:101309 gw:NAP_001 ...] [--out DIR]
        [--coupling effective [--robust-drop 0.05|none] [--robust-criterion first_half|bound]]

``personal-alpha``: the alpha (E–I) twin's spectrum beside the excitatory twin's (same subject,
same SAR fit; peak over the FOOOF aperiodic fit in 8–12 Hz, mean ± sd over regions × seeds) and
tACS at its peak frequency (PLV to the drive vs sham, paired over seeds, 95 % CI); figure
``bench/figures/personal_alpha_spectrum.png``, numbers ``bench/figures/personal_alpha.json``.

``twin-band TWIN.nc``: the same spectrum and tACS measures for a personal twin file as it was fitted
(its parameters, connectome, speed and start; e.g. an effective twin from ``personal``).

    python bench/bench_fit.py twin-band twins/hcp_101309/twin.nc

``personal-linear``: the same split-half evaluation for all 12 subjects in minutes, with the twin
replaced by its exact linearisation around its fixed point (``personal.linearized_fc``; no
simulation): held-out r, baselines, ±5 % coupling, identifiability. It bounds what the simulated
twin can reach and shows where the goals stand for subjects the simulated loop has not reached.

``personal-ec``: the linear-model study of a personal effective connectivity (``personal.fit_effective``:
one weight per SC edge, penalty chosen by inner cross-validation inside the first half) beside the
one-gain + regional-noise SAR model and the first-half FC itself, all 12 subjects, held-out r and
identifiability; ``bench/figures/personal_ec.png`` and ``.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

FIG = Path(__file__).resolve().parent / "figures"


def hcp(args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from neurotwin_dash import catalog
    from neurotwin_dash.analysis.connectivity import upper_triangle
    from neurotwin_dash.cluster import get_client
    from neurotwin_dash.fit.hcp import empirical_fc, hcp_fc_problem, structural_baseline_r
    from neurotwin_dash.fit.objectives import Features
    from neurotwin_dash.fit.optimizers import fit
    from neurotwin_dash.report import plot_region_matrix
    from neurotwin_dash.simulate import simulate

    client = get_client(quiet=True)
    prob = hcp_fc_problem(duration_s=args.duration)
    t0 = time.perf_counter()
    res = fit(prob, method="cmaes", generations=args.generations, popsize=args.popsize, seed=0,
              client=client, x0={"coupling": 6.0, "x_ext": 1.0, "noise_sd": 0.1, "speed_m_s": 6.0},
              sigma0=0.1, checkpoint=args.checkpoint, progress=True)
    wall = time.perf_counter() - t0
    base = structural_baseline_r()
    best = res.scores["fc_r"]
    print(f"HCP group FC, {args.duration:g} s per candidate, CMA-ES {args.generations} x {args.popsize}: "
          f"best r = {best:.3f}; log-weight baseline r = {base:.3f}; {res.evaluations} evaluations, "
          f"{wall / 60:.1f} min")
    print("best parameters:", {k: round(float(v), 4) for k, v in res.best.items()})
    h = res.history
    gens = np.unique(h["generation"].values)
    per_gen = [float(np.nanmax(h["fc_r"].values[h["generation"].values == g])) for g in gens]
    print("best r per generation:", [round(v, 3) for v in per_gen])

    # the best candidate's FC (re-simulated: deterministic)
    out = simulate(**prob.simulate_kwargs(res.best_unit[None, :]))
    fc = Features(out).fc("bold", "exc").isel(batch=0).values
    emp = empirical_fc().values
    a, b = upper_triangle(fc), upper_triangle(emp)
    r_check = float(np.corrcoef(a, b)[0, 1])
    # the fit saw one noise realisation (common random numbers); fresh seeds show how much of
    # the score is the parameters and how much that realisation
    fresh = simulate(**dict(prob.simulate_kwargs(np.repeat(res.best_unit[None, :], 2, axis=0)), seed=[1, 2]))
    fresh_fc = Features(fresh).fc("bold", "exc")
    r_fresh = [float(np.corrcoef(upper_triangle(fresh_fc.isel(batch=k).values), b)[0, 1]) for k in range(2)]
    print(f"best parameters with fresh noise seeds 1, 2: r = {r_fresh[0]:.3f}, {r_fresh[1]:.3f}; "
          f"mean simulated FC {float(a.mean()):.2f} (empirical {float(b.mean()):.2f})")
    FIG.mkdir(exist_ok=True)
    with plt.rc_context({"font.size": 13, "axes.titlesize": 14, "legend.fontsize": 11}):  # readable on a slide
        fig, ax = plt.subplots(1, 4, figsize=(24, 6))
        # the two FC matrices share one symmetric colour scale, so their strengths compare by eye
        lim = float(max(np.abs(a).max(), np.abs(b).max()))
        hcp = catalog.load("hcp80")
        for axis, m, title in ((ax[0], emp, "HCP group FC (80 AAL2)"), (ax[1], fc, f"simulated BOLD FC, r = {r_check:.3f}")):
            m = np.array(m, dtype=float)
            np.fill_diagonal(m, np.nan)
            plot_region_matrix(axis, m, hcp, title, "RdBu_r", -lim, lim, "FC (Pearson r)")
        ax[2].plot(a, b, ".", ms=2, alpha=0.4)
        ax[2].set_xlabel("simulated FC (Pearson r)")
        ax[2].set_ylabel("empirical FC (Pearson r)")
        ax[2].set_title(f"region pairs (upper triangles), r = {r_check:.3f}")
        ax[3].plot(gens, per_gen, "o-", label="fit (best per generation)")
        ax[3].axhline(base, ls="--", c="k", label=f"log-weight baseline {base:.2f}")
        ax[3].set_xlabel("generation")
        ax[3].set_ylabel("r(FC)")
        ax[3].legend()
        fig.tight_layout()
        fig.savefig(FIG / "hcp_fc_fit.png", dpi=100)
    summary = {"best_r": best, "recomputed_r": r_check, "fresh_seed_r": r_fresh, "baseline_r": base, "best": {k: float(v) for k, v in res.best.items()},
               "duration_s": args.duration, "generations": args.generations, "popsize": args.popsize,
               "evaluations": res.evaluations, "minutes": wall / 60, "per_generation": per_gen}
    (FIG / "hcp_fc_fit.json").write_text(json.dumps(summary, indent=2))
    print(f"figure: {FIG / 'hcp_fc_fit.png'}")


def ad(args):
    from neurotwin_dash.cluster import get_client
    from neurotwin_dash.fit.scenarios import ScenarioConfig, alzheimer_scenario, describe_effect, plot_scenario
    from neurotwin_dash.ui.compute import montage_effect_job
    from neurotwin_dash.ui.montage import MontageState
    if args.effect_only:
        designer_effect(montage_effect_job, MontageState)
        return
    client = get_client(quiet=True)
    cfg = ScenarioConfig(duration_s=args.duration, transient_s=2.0)          # 9 C7 values x 5 seeds
    t0 = time.perf_counter()
    r = alzheimer_scenario(cfg, doses=(0.5, 1.0), amplitudes_mV=(0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
                           client=client)
    wall = time.perf_counter() - t0
    summ, s, d = r["summary"], r["search"], r["dose"]
    n = len(cfg["seeds"])
    print(f"targets {cfg['regions']}, C7 path {cfg['c7_path']}, {n} seeds, {args.duration:g} s runs: "
          f"full scenario {wall:.0f} s on {len(client.scheduler_info()['workers'])} workers")

    def cell(m, c7):
        x = summ.sel(measure=m, c7=c7)
        return f"{float(x['mean']):.3g} [{float(x['ci_low']):.3g}, {float(x['ci_high']):.3g}]"
    cols = ["gamma_power", "gamma_peak_band_power", "gamma_peak_hz", "alpha_power", "p2_rate",
            "aperiodic_exponent", "pac_mi"]
    print("| C7 | stage | " + " | ".join(cols) + " | band-edge share |")
    for c7, st, share in zip(summ["c7"].values, summ["stage"].values, summ["band_edge_share"].values):
        print(f"| {c7:g} | {st} | " + " | ".join(cell(m, c7) for m in cols) + f" | {share:.3f} |")
    a = summ.attrs
    print(f"gamma max {a['gamma_max']:.2f} mV² at C7 = {a['gamma_max_c7']:g} ({a['gamma_max_ratio']:.2f} x healthy); "
          f"last C7: {100 * a['gamma_last_ratio']:.3f} % of healthy; stage points {r['stages']}")
    print(f"tACS search at the {s.attrs['stage']} stage (C7 = {s.attrs['stage_c7']:g}, 40 Hz, "
          f"λ = {s.attrs['lambda_mV_per_V_m']} mV per V/m, {s.attrs['limits']}):")
    for k in range(s.sizes["candidate"]):
        print(f"  {s['montage'].values[k]:9s} x{s['dose'].values[k]:.2f}: target E_n {float(s['target_E_n_V_m'][k]):.3f} V/m "
              f"({float(s['target_shift_mV'][k]):.3f} mV), {float(s['total_injected_mA'][k]):.2f} mA")
        for o in s["outcome"].values:
            print(f"      {o:10s} {describe_effect(s, str(o), candidate=k)}")
        print(f"      restored fraction of lost gamma {100 * float(s['restoration'][k]):.2f} % "
              f"[{100 * float(s['restoration_ci_low'][k]):.2f}, {100 * float(s['restoration_ci_high'][k]):.2f}]")
    print(f"  best by lower CI bound: {s.attrs['best_montage']} x{s.attrs['best_dose']}: {s.attrs['best_verdict']}")
    print("dose-response (40 Hz soma polarisation confined to the targets), thresholds = smallest amplitude "
          "whose 95 % CI excludes 0:")
    for st in d["stage"].values:
        for o in d["outcome"].values:
            t = float(d["threshold_mV"].sel(stage=st, outcome=o))
            print(f"  {st:14s} {o:10s} threshold {t:.3g} mV = {t / d.attrs['lambda_mV_per_V_m']:.3g} V/m")
            for amp in d["amplitude_mV"].values:
                e = d.sel(stage=st, outcome=o, amplitude_mV=amp)
                print(f"      {amp:5.2f} mV: {float(e['effect']):+.4g} [{float(e['ci_low']):+.4g}, "
                      f"{float(e['ci_high']):+.4g}] (sham {float(e['sham']):.4g} ± sd {float(e['sham_sd']):.3g})")
    FIG.mkdir(exist_ok=True)
    plot_scenario(r, FIG / "ad_scenario.png")
    print(f"figure: {FIG / 'ad_scenario.png'}")

    designer_effect(montage_effect_job, MontageState)


def designer_effect(montage_effect_job, MontageState):
    """The montage designer's effect: 5 seeds x (sham, stimulated), 2 s each, tvb76, one batch
    (with the designer's noise generator, and with NumPy's for comparison)."""
    spec = MontageState(mode="sync").spec()
    spec["targets"] = ["lPFCDL"]
    for rng in ("counter", "numpy"):
        spec["noise_rng"] = rng
        montage_effect_job(spec)                                  # warm (JIT cache, fields)
        times = []
        for _ in range(3):
            t1 = time.perf_counter()
            res = montage_effect_job(spec)
            times.append(time.perf_counter() - t1)
        print(f"montage designer effect ({spec['model']}), {res.attrs['n_seeds']} seeds x 2 arms, "
              f"{spec['duration_s']:g} s (+{spec['transient_s']:g} s transient), tvb76, noise_rng={rng}, "
              f"in-process: {min(times):.2f} s best of 3 ({', '.join(f'{t:.2f}' for t in times)}); "
              f"load average {os.getloadavg()[0]:.1f}")


def personal(args):
    import shutil
    from neurotwin_dash.fit import personal as P
    subs = args.subjects or P.available_subjects()
    out = Path(args.out or tempfile.mkdtemp(prefix="neurotwin_personal_"))
    robust_drop = None if args.robust_drop.lower() == "none" else float(args.robust_drop)
    st = P.PersonalSettings(generations=args.generations, popsize=args.popsize, dt_ms=args.dt_ms,
                            regime=args.regime, coupling=args.coupling, robust_drop=robust_drop,
                            simulated_check=not args.no_simulated_check,
                            robust_criterion=args.robust_criterion, refit_weights=not args.no_refit_weights)
    t0 = time.perf_counter()
    res = P.personalize_all(subs, out, st, overwrite=args.overwrite)
    wall = time.perf_counter() - t0
    rows = res["subjects"]
    n_eval = sum(r["evaluations"] for r in rows.values())
    fit_s = sum(r["seconds"] for r in rows.values())
    rs = np.array([r["heldout"]["r"] for r in rows.values()])
    print(f"settings: {json.dumps(rows[subs[0]]['settings'])}")
    print(f"{len(subs)} subject(s): {wall / 60:.1f} min in all ({fit_s / len(subs):.0f} s per subject), "
          f"{n_eval} CMA-ES evaluations, {n_eval / (fit_s / 60):.1f} evaluations/min (2 shared cores)")
    print(f"held-out r: mean {rs.mean():.3f} (min {rs.min():.3f}, max {rs.max():.3f})")
    for name in dict.fromkeys(k for r in rows.values() for k in r["baselines"]):
        have = [r for r in rows.values() if name in r["baselines"]]
        b = np.array([r["baselines"][name]["r"] for r in have])
        beaten = sum(r["beats"][name] for r in have)
        print(f"  baseline {name:23s} mean r {np.nanmean(b):.3f} over {len(have)}; twin better for {beaten}/{len(have)}")
    drops = np.array([r["heldout"]["robustness_drop"] for r in rows.values()])
    print(f"robustness: r drop at ±5 % coupling mean {drops.mean():.3f}, max {drops.max():.3f}; "
          f"≤ 0.05 for {(drops <= 0.05).sum()}/{len(subs)}")
    if args.coupling == "effective":
        print("gain margin (cap chosen on the first half; linearised first-half drop): " + ", ".join(
            f"{s} {m['cap']} ({m['drop']:.3f})" if m else f"{s} off"
            for s, m in ((s, r.get("margin")) for s, r in rows.items())))
        checked = {s: r["margin"]["simulated"] for s, r in rows.items() if (r.get("margin") or {}).get("simulated")}
        for s, tries in checked.items():
            print(f"  simulated first-half check {s}: " + " -> ".join(
                f"{t['source']} cap {t['cap']} K {t['coupling']:.3f} drop {t['train_drop']:.3f} "
                f"bound {t['bound']:.3f}" for t in tries))
    # figures of the excitatory twin (the README's first 12-subject run) keep their names
    tag = ("" if args.regime == "excitatory" else f"_{args.regime}") + (
        "" if args.coupling == "structural" else f"_{args.coupling}") + (
        "_margin" if args.coupling == "effective" and robust_drop is not None else "") + (
        "_bound" if args.robust_criterion == "bound" else "") + (
        "_refit" if args.coupling == "effective" and robust_drop is not None and not args.no_refit_weights else "")
    if "identified" in res:
        print(f"identifiability: own subject best for {res['identified']}/{len(subs)}; ranks {res['own_rank']}")
    if args.subjects is None:          # the README's figures come from runs over all subjects only
        FIG.mkdir(exist_ok=True)
        if "identified" in res:
            shutil.copyfile(out / "identifiability.png", FIG / f"personal_identifiability{tag}.png")
        shutil.copyfile(out / subs[0].replace(":", "_") / "report.png",
                        FIG / f"personal_{subs[0].replace(':', '_')}{tag}.png")
    print(f"outputs in {out}")


def _alpha_band(res):
    """Welch spectra (4-s windows) of a run's ``exc``: the peak over the aperiodic fit in 8–12 Hz per
    region and seed, the region- and seed-mean PSD, and that mean's peak frequency in 2–30 Hz."""
    from neurotwin_dash.analysis import spectra
    psd = spectra.welch(res["exc"], window_s=4.0)
    mean_psd = psd.mean(("region", "batch"))
    f = mean_psd["frequency"].values
    sel = (f >= 2) & (f <= 30)
    return (spectra.peak_over_aperiodic(psd, band=(8.0, 12.0)), mean_psd,
            float(f[sel][np.argmax(mean_psd.values[sel])]))


def twin_band(args):
    """Spectrum (peak over the aperiodic fit in 8–12 Hz, region-mean PSD peak) and tACS at the peak
    (PLV vs sham, paired over seeds, 95 % CI) of a personal twin file, with its own parameters."""
    from neurotwin_dash.simulate import Drive, simulate
    from neurotwin_dash.stimulation.effects import stimulation_effect
    from neurotwin_dash.stimulation.waveforms import TACS
    from neurotwin_dash.twin import Twin
    kw = Twin.load(args.twin).simulate_kwargs()
    prm, conn, start, norm = kw["params"], kw["connectome"], kw.get("initial"), kw["normalisation"]
    t0 = time.perf_counter()
    res = simulate(kw["model"], conn, params=prm, duration_s=args.duration + 5.0, dt_ms=kw["dt_ms"],
                   sample_rate_hz=200.0, transient_s=5.0, normalisation=norm, record=["exc"],
                   seed=list(range(args.seeds)), initial=start)
    pk, _, f_mean = _alpha_band(res)
    print(f"{args.twin}: peak/aperiodic in 8-12 Hz {float(pk.ratio.mean()):.2f} ± {float(pk.ratio.std()):.2f} at "
          f"{float(pk.peak_frequency.mean()):.1f} ± {float(pk.peak_frequency.std()):.1f} Hz (regions × {args.seeds} "
          f"seeds); region-mean PSD peak (2-30 Hz) {f_mean:.2f} Hz; speed "
          f"{float(prm['speed_m_s']):.1f} m/s; {time.perf_counter() - t0:.0f} s", flush=True)
    f_drive = round(float(pk.peak_frequency.mean()) * 2) / 2
    for amp in args.amplitudes:
        eff = stimulation_effect(kw["model"], conn, Drive(spatial=np.full(len(conn.weights), amp),
                                                          waveform=TACS(frequency_hz=f_drive)),
                                 n_seeds=args.seeds, variable="exc", frequency_hz=f_drive, params=prm,
                                 duration_s=args.tacs_duration + 2.0, transient_s=2.0, dt_ms=kw["dt_ms"],
                                 sample_rate_hz=200.0, band=(8.0, 12.0), normalisation=norm, initial=start)
        per, e = eff["per_seed"].sel(outcome="plv"), eff.sel(outcome="plv")
        print(f"tACS {f_drive} Hz, amplitude {amp}: PLV sham {float(per.sel(condition=0).mean()):.3f}, stimulated "
              f"{float(per.sel(condition=1).mean()):.3f}; paired effect {float(e['effect'].squeeze()):+.3f} "
              f"(95 % CI {float(e['ci_low'].squeeze()):+.3f} … {float(e['ci_high'].squeeze()):+.3f})", flush=True)


def personal_linear(args):
    from neurotwin_dash.fit import personal as P
    subs = args.subjects or P.available_subjects()
    others = {s: P.fc_matrix(P.load_subject(s)["bold"].values) for s in P.available_subjects()}
    fc_twin, fc_test, rows = {}, {}, {}
    t0 = time.perf_counter()
    for s in subs:
        ds = P.load_subject(s)
        w = ds["weights"].values
        half = P.split_subject(s)
        lin_g = P.fit_linear(w, half.fc_train, per_region=False)
        lin = P.fit_linear(w, half.fc_train)
        base = P.baselines(w, half, [v for k, v in others.items() if k != s], linear_global=lin_g,
                           linear_regional=lin)
        xs, _ = P.choose_operating_point(w, lin, half.fc_train, regime=args.regime)
        p = P.twin_from_linear(w, lin, 1.0, xs, args.regime)
        ws = P.subject_connectome(ds).normalise("spectral").weights
        rs = [P.heldout_scores(P.linearized_fc(ws, p["coupling"] * f, p["x_ext"], p["noise_sd"], xs, args.regime),
                               half)["r"] for f in (0.95, 1.0, 1.05)]
        fc_twin[s] = P.linearized_fc(ws, p["coupling"], p["x_ext"], p["noise_sd"], xs, args.regime)
        fc_test[s] = half.fc_test
        split = np.corrcoef(half.fc_train[np.triu_indices(94, 1)], half.fc_test[np.triu_indices(94, 1)])[0, 1]
        rows[s] = dict(r=rs[1], drop=rs[1] - min(rs), x_star=xs, split_half=split,
                       **{k: v["r"] for k, v in base.items()})
        print(f"{s}: linearised twin r {rs[1]:.3f} (±5 % coupling: {rs[0]:.3f} / {rs[2]:.3f}, x* {xs}); "
              f"first-vs-second-half FC r {split:.3f}; baselines "
              + ", ".join(f"{k} {v['r']:.3f}" for k, v in base.items()), flush=True)
    mat = P.identifiability(fc_twin, fc_test)
    ranks = P.own_ranks(mat)
    r = np.array([v["r"] for v in rows.values()])
    print(f"{len(subs)} subjects, {time.perf_counter() - t0:.0f} s: linearised twin held-out r mean {r.mean():.3f} "
          f"(hcp {np.mean([v['r'] for k, v in rows.items() if k.startswith('hcp')]):.3f}, "
          f"gw {np.mean([v['r'] for k, v in rows.items() if k.startswith('gw')]):.3f}); "
          f"max drop at ±5 % {max(v['drop'] for v in rows.values()):.3f}")
    for k in ("log_sc", "strength", "regression", "linear_global", "linear_regional", "group_others"):
        b = np.array([v[k] for v in rows.values()])
        print(f"  {k:16s} mean {b.mean():.3f}; linearised twin better for {(r > b).sum()}/{len(subs)}")
    print(f"identifiability (linearised twins): own subject best for {sum(v == 1 for v in ranks.values())}/"
          f"{len(subs)}; ranks {ranks}")


def personal_ec(args):
    """Linear-model study: personal effective connectivity vs the one-gain + regional-noise SAR
    model, all fitted on the first half only, scored on the second; identifiability of each."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from neurotwin_dash.fit import personal as P
    subs = args.subjects or P.available_subjects()
    fcs = {"sar_regional": {}, "effective": {}, "first_half_fc": {}}
    fc_test, rows = {}, {}
    t_all = time.perf_counter()
    for s in subs:
        t0 = time.perf_counter()
        w = P.load_subject(s)["weights"].values
        half = P.split_subject(s)
        lin = P.fit_linear(w, half.fc_train)
        ec = P.fit_effective(w, half.train)
        fcs["sar_regional"][s] = P.baseline_fcs(w, half, linear_regional=lin)["linear_regional"]
        fcs["effective"][s] = P.effective_fc(w, ec)
        fcs["first_half_fc"][s] = half.fc_train
        fc_test[s] = half.fc_test
        rows[s] = {k: P.heldout_scores(v[s], half)["r"] for k, v in fcs.items()}
        rows[s].update(effective_train_r=ec.r_train, penalty=ec.penalty, cv=ec.cv, seconds=time.perf_counter() - t0)
        print(f"{s}: held-out r SAR + regional noise {rows[s]['sar_regional']:.3f}, effective connectivity "
              f"{rows[s]['effective']:.3f} (first half {ec.r_train:.3f}, penalty {ec.penalty:g} by inner CV "
              f"{ {k: round(v, 3) for k, v in ec.cv.items()} }), first-half FC itself {rows[s]['first_half_fc']:.3f}; "
              f"{rows[s]['seconds']:.0f} s", flush=True)
    out = {"subjects": rows, "seconds": time.perf_counter() - t_all, "summary": {}}
    mats = {}
    for k, v in fcs.items():
        m = P.identifiability(v, fc_test)
        mats[k] = m
        ranks = P.own_ranks(m)
        r = np.array([rows[s][k] for s in subs])
        out["summary"][k] = {"mean_r": float(r.mean()), "sd_r": float(r.std(ddof=1)) if len(r) > 1 else 0.0,
                             "hcp": float(np.mean([rows[s][k] for s in subs if s.startswith("hcp")] or [np.nan])),
                             "gw": float(np.mean([rows[s][k] for s in subs if s.startswith("gw")] or [np.nan])),
                             "identified": int(sum(v == 1 for v in ranks.values())), "ranks": ranks}
        print(f"{k:14s}: held-out r {r.mean():.3f} ± {out['summary'][k]['sd_r']:.3f} (hcp {out['summary'][k]['hcp']:.3f}, "
              f"gw {out['summary'][k]['gw']:.3f}); own subject best for {out['summary'][k]['identified']}/{len(subs)}; "
              f"ranks {list(ranks.values())}")
    d = np.array([rows[s]["effective"] - rows[s]["sar_regional"] for s in subs])
    if len(d) > 1:
        boot = np.random.default_rng(0).choice(d, (10000, len(d))).mean(1)
        out["summary"]["gain_ci95"] = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]
        print(f"effective − SAR: {d.mean():+.3f} (95 % bootstrap CI over subjects {out['summary']['gain_ci95'][0]:+.3f}"
              f"…{out['summary']['gain_ci95'][1]:+.3f}), better for {(d > 0).sum()}/{len(d)}")
    print(f"{len(subs)} subjects in {out['seconds'] / 60:.1f} min")
    FIG.mkdir(exist_ok=True)
    (FIG / "personal_ec.json").write_text(json.dumps(out, indent=1))
    fig, ax = plt.subplots(1, 2, figsize=(14, 5.5), constrained_layout=True)
    x = np.arange(len(subs))
    for i, (k, lab) in enumerate([("sar_regional", "SAR + regional noise"), ("effective", "effective connectivity"),
                                  ("first_half_fc", "first-half FC itself")]):
        ax[0].bar(x + (i - 1) * 0.27, [rows[s][k] for s in subs], 0.27, label=lab)
    ax[0].set_xticks(x, subs, rotation=60)
    ax[0].set(ylim=(0.4, 1.0), ylabel="held-out r (2nd half)", title="linear models fitted on the 1st half")
    ax[0].legend(fontsize=8)
    m = mats["effective"]
    ax[1].imshow(m.values, cmap="viridis")
    ax[1].plot(np.nanargmax(m.values, 1), x, "rx")
    ax[1].set_xticks(x, subs, rotation=90)
    ax[1].set_yticks(x, subs)
    ax[1].set_title(f"effective connectivity: r(model FC, held-out FC), own best "
                    f"{out['summary']['effective']['identified']}/{len(subs)}")
    fig.savefig(FIG / "personal_ec.png", dpi=90)


def personal_alpha(args):
    """EEG-band dynamics of the personal twin: spectrum of the E–I (alpha) twin beside the
    excitatory twin of the same subject and linear fit, and tACS entrainment (PLV vs sham)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from neurotwin_dash.simulate import Drive, simulate
    from neurotwin_dash.fit import personal as P
    from neurotwin_dash.stimulation.effects import format_effect, stimulation_effect
    from neurotwin_dash.stimulation.waveforms import TACS
    out = {"settings": {"seeds": args.seeds, "duration_s": args.duration, "speed_m_s": args.speed,
                        "noise_level": 0.01, "dt_ms": 1.0, "welch_window_s": 4.0, "band_hz": [8, 12],
                        "aperiodic": "FOOOF knee, 1-40 Hz", "tacs_amplitudes": args.amplitudes}}
    fig, axes = plt.subplots(1, len(args.subjects), figsize=(6 * len(args.subjects), 4), squeeze=False)
    for ax, s in zip(axes[0], args.subjects):
        t0 = time.perf_counter()
        ds = P.load_subject(s)
        w = ds["weights"].values
        half = P.split_subject(s)
        lin = P.fit_linear(w, half.fc_train)
        conn = P.subject_connectome(ds)
        row = {}
        for regime in ("alpha", "excitatory"):
            xs, _ = P.choose_operating_point(w, lin, half.fc_train, regime=regime)
            prm = dict(P.twin_from_linear(w, lin, 0.01, xs, regime), speed_m_s=args.speed)
            start = np.array([xs, P.REGIMES[regime].y_star])
            res = simulate("wilson_cowan", conn, params=prm, duration_s=args.duration + 5.0, dt_ms=1.0,
                           sample_rate_hz=200.0, transient_s=5.0, normalisation="spectral", record=["exc"],
                           seed=list(range(args.seeds)), initial=start)
            pk, mean_psd, f_mean = _alpha_band(res)
            f = mean_psd["frequency"].values
            row[regime] = {"x_star": xs, "coupling": float(prm["coupling"]),
                           "peak_hz": [float(pk.peak_frequency.mean()), float(pk.peak_frequency.std())],
                           "ratio": [float(pk.ratio.mean()), float(pk.ratio.std())],
                           "ratio_regions_over_1_5": float((pk.ratio > 1.5).mean()),
                           "mean_psd_peak_hz_2_30": f_mean}
            ax.semilogy(f, mean_psd.values, label=f"{regime} twin (x* {xs})")
            print(f"{s} {regime}: x* {xs}, peak/aperiodic in 8-12 Hz {pk.ratio.mean().item():.2f} ± "
                  f"{pk.ratio.std().item():.2f} at {pk.peak_frequency.mean().item():.1f} ± "
                  f"{pk.peak_frequency.std().item():.1f} Hz (regions × {args.seeds} seeds); region-mean PSD "
                  f"peak (2-30 Hz) {f_mean:.2f} Hz", flush=True)
        f_drive = round(row["alpha"]["peak_hz"][0] * 2) / 2
        for regime in ("alpha", "excitatory"):
            xs = row[regime]["x_star"]
            prm = dict(P.twin_from_linear(w, lin, 0.01, xs, regime), speed_m_s=args.speed)
            drive = Drive(spatial=np.outer(args.amplitudes, np.ones(len(w))), waveform=TACS(frequency_hz=f_drive))
            eff = stimulation_effect("wilson_cowan", conn, drive, n_seeds=args.seeds, variable="exc",
                                     frequency_hz=f_drive, params=prm, duration_s=args.tacs_duration + 2.0,
                                     transient_s=2.0, dt_ms=1.0, sample_rate_hz=200.0, band=(8.0, 12.0),
                                     normalisation="spectral", initial=np.array([xs, P.REGIMES[regime].y_star]))
            per = eff["per_seed"].sel(outcome="plv")
            pow_f = eff["per_seed"].sel(outcome="power_at_f")
            row[regime]["tacs"] = {"frequency_hz": f_drive, "plv_sham": [float(per.sel(condition=0).mean()),
                                                                      float(per.sel(condition=0).std())],
                                   "power_at_f_sham": float(pow_f.sel(condition=0).mean())}
            for k, a in enumerate(args.amplitudes, start=1):
                e = eff.sel(arm=k, outcome="plv")
                # driven power at f above sham, per unit drive power: the twin's response gain at f
                gain = float((pow_f.sel(condition=k) - pow_f.sel(condition=0)).mean()) / a ** 2
                row[regime]["tacs"][f"amp_{a:g}"] = {
                    "plv": [float(per.sel(condition=k).mean()), float(per.sel(condition=k).std())],
                    "effect": float(e["effect"]), "ci": [float(e["ci_low"]), float(e["ci_high"])],
                    "driven_power_per_drive_power": gain}
                print(f"{s} {regime}: tACS {f_drive:g} Hz amplitude {a:g}: PLV {float(per.sel(condition=k).mean()):.3f} "
                      f"vs sham {float(per.sel(condition=0).mean()):.3f}; paired effect "
                      + format_effect(float(e["effect"]), float(e["ci_low"]), float(e["ci_high"]), args.seeds)
                      + f"; driven power at f / drive power {gain:.3g}", flush=True)
        row["seconds"] = time.perf_counter() - t0
        out[s] = row
        ax.set(xlabel="frequency (Hz)", ylabel="excitatory PSD (mean over regions, seeds)", xlim=(1, 40),
               title=f"{s}: personal twins, same SAR fit")
        ax.legend()
    FIG.mkdir(exist_ok=True)
    fig.savefig(FIG / "personal_alpha_spectrum.png", dpi=90)
    (FIG / "personal_alpha.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out["settings"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    h = sub.add_parser("hcp")
    h.add_argument("--generations", type=int, default=6)
    h.add_argument("--popsize", type=int, default=8)
    h.add_argument("--duration", type=float, default=1210.0)
    h.add_argument("--checkpoint", default=os.path.join(tempfile.gettempdir(), "neurotwin_hcp_fit.json"),
                   help="fit checkpoint, JSON (re-running resumes / replays it)")
    a = sub.add_parser("ad")
    a.add_argument("--duration", type=float, default=10.0, help="simulated seconds per run (incl. 2 s transient)")
    a.add_argument("--effect-only", action="store_true", help="only the montage designer's 5-seed effect")
    p = sub.add_parser("personal")
    p.add_argument("--subjects", nargs="*", default=None, help="catalog subjects (default: all 12)")
    p.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
    p.add_argument("--generations", type=int, default=2)
    p.add_argument("--popsize", type=int, default=4)
    p.add_argument("--dt-ms", type=float, default=1.0, help="Euler step (the README run used 2)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--regime", default="alpha", help="twin's local node: alpha (default) or excitatory")
    p.add_argument("--coupling", default="structural", help="twin's weights: structural (default) or effective")
    p.add_argument("--robust-drop", default="0.05",
                   help="effective twin's gain margin: largest linearised first-half r drop at ±5 %% coupling "
                        "(default 0.05; 'none': no margin, the uncapped run of the README)")
    p.add_argument("--no-simulated-check", action="store_true",
                   help="effective twin: choose the gain margin on the linearisation only (no first-half check "
                        "of the simulated twin at ±5 %% coupling)")
    p.add_argument("--no-refit-weights", action="store_true",
                   help="effective twin's gain caps: keep the uncapped fit's weights and refit only the noise "
                        "variances (the effective twins measured before this option)")
    p.add_argument("--robust-criterion", choices=["first_half", "bound"], default="first_half",
                   help="effective twin's simulated check: the drop against the first-half FC (default) or "
                        "the data-free bound sqrt(2 (1 - r(FC at K, FC at 0.95/1.05 K))), which bounds the drop "
                        "against any FC, the held-out one included")
    q = sub.add_parser("personal-linear")
    q.add_argument("--subjects", nargs="*", default=None)
    q.add_argument("--regime", default="alpha", help="twin's local node: alpha (default) or excitatory")
    q3 = sub.add_parser("personal-ec")
    q3.add_argument("--subjects", nargs="*", default=None)
    q2 = sub.add_parser("personal-alpha")
    q2.add_argument("--subjects", nargs="*", default=["hcp:101309"])
    q2.add_argument("--seeds", type=int, default=5)
    q2.add_argument("--duration", type=float, default=60.0, help="simulated s per spectrum run")
    q2.add_argument("--tacs-duration", type=float, default=20.0, help="simulated s per tACS arm")
    q2.add_argument("--speed", type=float, default=10.0, help="conduction speed (m/s)")
    q2.add_argument("--amplitudes", type=float, nargs="*", default=[0.0005, 0.002],
                    help="tACS amplitudes (excitatory input units; noise level 0.01 per 1-ms sample)")
    q4 = sub.add_parser("twin-band")
    q4.add_argument("twin", help="a personal twin file (twin.nc)")
    q4.add_argument("--seeds", type=int, default=5)
    q4.add_argument("--duration", type=float, default=60.0, help="simulated s per spectrum run")
    q4.add_argument("--tacs-duration", type=float, default=20.0, help="simulated s per tACS arm")
    q4.add_argument("--amplitudes", type=float, nargs="*", default=[0.0005, 0.002],
                    help="tACS amplitudes (excitatory input units)")
    args = ap.parse_args()
    logging.getLogger("distributed").setLevel(logging.WARNING)
    {"hcp": hcp, "ad": ad, "personal": personal,
     "personal-linear": personal_linear, "personal-alpha": personal_alpha,
     "personal-ec": personal_ec, "twin-band": twin_band}[args.what.replace("_", "-")](args)


if __name__ == "__main__":
    main()
