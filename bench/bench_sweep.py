"""Sweep throughput through Dask: Jansen–Rit, 76 regions (tvb76), 10 s per simulation.

Prints simulations per minute for a LocalCluster of 1 and of 2 single-threaded worker
processes (targets on the 2-core reference machine: ≥ 60 per minute with 2 workers, issue 20:
≥ 1,000), the
scaling between them, and the share of worker time in the numba batch calls. Everything a
user sweep does is included: the spec, the batched ``simulate()`` per Dask task, the metrics
computed in the task (alpha peak frequency, alpha power) and the incremental zarr writes. The
sweep's own default noise generator (``noise_rng="counter"``, drawn in the batch kernel) unless
``--noise-rng numpy``.

    python bench/bench_sweep.py            # 96 simulations per configuration, one block of lanes per task
    python bench/bench_sweep.py --n 48 --batch-size 4 --noise-rng numpy
    python bench/bench_sweep.py --dtype both   # float64, then float32 (allowed for sweeps)
    python bench/bench_sweep.py --math-mode fast   # float64 with the degree-9 exponential
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time

import numpy as np


def _spec(n: int, batch_size: int, duration_s: float, noise_rng: str = "counter", dtype: str = "float64",
          math_mode: str = "default"):
    from neurotwin_dash.sweep import SweepSpec
    return SweepSpec(model="jansen_rit", connectome="tvb76", duration_s=duration_s, transient_s=1.0,
                     dt_ms=0.1, sample_rate_hz=250.0, sampling="lhs", n_samples=n, sample_seed=1,
                     axes={"coupling": {"low": 0.0, "high": 20.0}, "p": {"low": 120.0, "high": 300.0}},
                     batch_size=batch_size,
                     metrics=[{"name": "peak_frequency", "band": [2, 30]}, "alpha_power"], noise_rng=noise_rng, dtype=dtype,
                     math_mode=math_mode)


def run(n_workers: int, n: int, batch_size: int, duration_s: float, noise_rng: str = "counter",
        dtype: str = "float64", math_mode: str = "default") -> dict:
    from neurotwin_dash.cluster import close_client, get_client
    from neurotwin_dash.sweep import run_sweep
    close_client()
    client = get_client(n_workers=n_workers, quiet=True)
    # warm the workers (imports, catalog, numba cache) outside the timing
    warm_dir = tempfile.mkdtemp(prefix="bench_sweep_warm_")
    run_sweep(_spec(2 * n_workers, 1, 1.5, noise_rng, dtype, math_mode), os.path.join(warm_dir, "w.zarr"), client=client,
              progress=False)
    shutil.rmtree(warm_dir, ignore_errors=True)
    store_dir = tempfile.mkdtemp(prefix="bench_sweep_")
    try:
        t0 = time.perf_counter()
        res = run_sweep(_spec(n, batch_size, duration_s, noise_rng, dtype, math_mode), os.path.join(store_dir, "s.zarr"), client=client,
                        progress=False)
        wall = time.perf_counter() - t0
        ds = res.dataset.compute()
    finally:
        shutil.rmtree(store_dir, ignore_errors=True)
    close_client()
    busy = float(ds["batch_seconds"].sum())
    return {"workers": n_workers, "sims": n, "wall_s": wall, "sims_per_min": 60.0 * n / wall,
            "worker_s": busy, "efficiency": busy / (wall * n_workers),
            "median_peak_hz": float(np.nanmedian(ds["peak_frequency"].values)),
            "diverged": int(ds["diverged"].sum())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=96, help="simulations per configuration")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="simulations per Dask task (default: the sweep's, one batch-kernel block: 16 in float64, "
                         "32 in float32)")
    ap.add_argument("--noise-rng", default="counter", choices=("counter", "numpy"))
    ap.add_argument("--dtype", default="float64", choices=("float64", "float32", "both"),
                    help="batch-kernel float type (issue 20 allows float32 for sweeps); 'both' runs each")
    ap.add_argument("--math-mode", default="default", choices=("default", "fast"),
                    help="'fast': the degree-9 exponential (float64 and counter noise only, see README)")
    ap.add_argument("--duration", type=float, default=10.0, help="simulated seconds per simulation")
    args = ap.parse_args()
    logging.getLogger("distributed").setLevel(logging.WARNING)
    dtypes = ("float64", "float32") if args.dtype == "both" else (args.dtype,)
    for dtype in dtypes:
        report(args, dtype)


def report(args, dtype: str) -> None:
    # the sweep's own default: one batch-kernel block per task (Jansen-Rit: two 512-bit vectors,
    # 16 members in float64, 32 in float32)
    from neurotwin_dash.sweep import default_batch_size
    batch_size = args.batch_size or default_batch_size("jansen_rit", dtype)
    print(f"Jansen–Rit, tvb76 (76 regions), {args.duration:g} s per simulation, dt 0.1 ms, "
          f"{args.n} simulations, {batch_size} per Dask task, noise_rng={args.noise_rng}, dtype={dtype}"
          f"{', math_mode=fast' if args.math_mode == 'fast' else ''}; "
          f"cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    rows = [run(w, args.n, batch_size, args.duration, args.noise_rng, dtype, args.math_mode) for w in (1, 2)]
    print("| workers | wall (s) | simulations / min | worker busy / wall | median peak (Hz) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['wall_s']:.1f} | {r['sims_per_min']:.0f} | {r['efficiency']:.2f} | "
              f"{r['median_peak_hz']:.2f} |")
    print(f"scaling 1 → 2 workers: ×{rows[1]['sims_per_min'] / rows[0]['sims_per_min']:.2f}")
    for target in (60.0, 1000.0):
        ok = rows[1]["sims_per_min"] >= target
        print(f"target ≥ {target:.0f} simulations/min with 2 workers: {'met' if ok else 'NOT met'}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
