"""Amortised inference: training-data throughput, training time, sampling time, budget vs calibration.

Use case (a) of ``neurotwin_dash.infer`` (one Jansen–Rit column, A, B, C from 19 spectral
features; 11 s per simulation at dt 0.1 ms), simulations on a Dask LocalCluster of single-threaded
worker processes, torch on one thread. For each budget (training simulations) it prints

* simulations per minute while the training data is generated (features included, zarr writes),
* training time (sbi NPE, masked autoregressive flow, early stopping),
* the 80 % credible-interval coverage and mean shrinkage of every parameter on 200 held-out
  simulations, and whether all coverages lie in 0.65–0.95;

and, for the largest budget, the time to draw 1,000 posterior samples (median of 20; target < 1 s).

    python bench/bench_infer.py                       # budgets 250 500 1000 2000
    python bench/bench_infer.py --budgets 1000 4000 --workers 2
"""
from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", type=int, nargs="+", default=[250, 500, 1000, 2000])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--n-test", type=int, default=200)
    args = ap.parse_args()
    logging.getLogger("distributed").setLevel(logging.ERROR)
    from neurotwin_dash.cluster import close_client, get_client
    from neurotwin_dash.infer.usecases import jansen_rit_column

    client = get_client(n_workers=args.workers, quiet=True)
    work = Path(tempfile.mkdtemp(prefix="bench_infer_"))
    rows, post = [], None
    try:
        from neurotwin_dash import infer
        # warm the workers (imports, numba cache) outside the timing
        infer.simulate_training_data(jansen_rit_column(n_simulations=20, n_test=20), work / "warm", client=client)
        for n in args.budgets:
            spec = jansen_rit_column(n_simulations=n, n_test=args.n_test)
            post = infer.train(spec, work / f"b{n}", client=client, threads=1)
            i, cal = post.info, post.calibration["params"]
            cov = {k: v["coverage"]["0.8"] for k, v in cal.items()}
            rows.append({"budget": n, "sims_per_min": 60 * (n + args.n_test) / i["simulate_seconds"],
                         "train_s": i["train_seconds"], "epochs": i["epochs"], "cov80": cov,
                         "shrink": {k: v["shrinkage_mean"] for k, v in cal.items()},
                         "closer": {k: v["closer_than_prior_mean"] for k, v in cal.items()},
                         "ok": all(0.65 <= c <= 0.95 for c in cov.values()),
                         "diverged": i["diverged_fraction"]})
            r = rows[-1]
            print(f"budget {n}: {r['sims_per_min']:.0f} sims/min, training {r['train_s']:.1f} s "
                  f"({r['epochs']} epochs), 80 % coverage {fmt(r['cov80'])}, shrinkage {fmt(r['shrink'])}, "
                  f"closer than prior mean {fmt(r['closer'])}, diverged {r['diverged']:.1%}", flush=True)
        x = post.info["feature_mean"]
        times = []
        for k in range(21):
            t0 = time.perf_counter()
            post.sample(x, 1000, seed=k)
            times.append(time.perf_counter() - t0)
        times = np.array(times[1:])
        print(f"\nsampling 1,000 draws: median {1e3 * np.median(times):.1f} ms "
              f"(min {1e3 * times.min():.1f}, max {1e3 * times.max():.1f}) — target < 1 s")
        ok = [r["budget"] for r in rows if r["ok"]]
        print(f"smallest budget with every 80 % coverage in 0.65–0.95: {min(ok) if ok else 'none'}")
        print("\n| budget | sims/min | training (s) | 80 % coverage A / B / C | shrinkage A / B / C |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['budget']} | {r['sims_per_min']:.0f} | {r['train_s']:.1f} | "
                  f"{' / '.join(f'{v:.2f}' for v in r['cov80'].values())} | "
                  f"{' / '.join(f'{v:.2f}' for v in r['shrink'].values())} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        close_client()


def fmt(d: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in d.items())


if __name__ == "__main__":
    main()
