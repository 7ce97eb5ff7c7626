"""Training: simulations from the prior on Dask (a resumable sweep), then neural posterior estimation."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..sweep import open_sweep, run_sweep
from .posterior import Posterior, calibrate, data_hash, torch_threads
from .spec import InferError, InferSpec

__all__ = ["simulate_training_data", "load_training_data", "train"]


class _NoTracker:
    """sbi's experiment-tracker protocol, recording nothing: sbi's default writes TensorBoard logs
    into ``./sbi-logs`` of whatever directory the user runs from. The losses stay in ``NPE.summary``."""

    log_dir = None

    def log_metric(self, name, value, step=None):
        pass

    def log_metrics(self, metrics, step=None):
        pass

    def log_params(self, params):
        pass

    def add_figure(self, name, figure, step=None):
        pass

    def flush(self):
        pass


def simulate_training_data(spec: InferSpec, workdir, client=None, progress: bool = False) -> dict:
    """Run (or resume) the training and held-out sweeps of ``spec`` into ``workdir``.

    ``workdir/train.zarr`` and ``workdir/test.zarr`` are ordinary sweep stores
    (:func:`neurotwin_dash.sweep.run_sweep`): a re-run computes only the batches not yet done, and a
    store made by a different spec is refused. Returns ``{"train": SweepResult, "test": ...}``.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out = {}
    for part in ("train", "test"):
        out[part] = run_sweep(spec.sweep_spec(part), workdir / f"{part}.zarr", client=client, progress=progress)
    return out


def load_training_data(spec: InferSpec, store) -> dict:
    """θ (n, n_params), features x (n, n_features) of the usable simulations of a sweep store.

    Diverged simulations (flagged by the simulator) and simulations with a non-finite feature
    (e.g. a silent signal whose log power is −inf) are excluded and counted: the posterior is
    then a posterior given that the dynamics did not diverge, and the fractions are reported.
    """
    ds = open_sweep(store)
    if "features" not in ds:
        raise InferError(f"{store}: no 'features' variable; not a training sweep of this spec")
    got = [str(v) for v in ds.feature.values]
    if got != spec.feature_names:
        raise InferError(f"{store}: features {got} differ from the spec's {spec.feature_names}")
    ds = ds.load()
    theta = np.stack([ds[name].values for name in spec.param_names], axis=1).astype(float)
    x = np.asarray(ds["features"].values, dtype=float)
    diverged = np.asarray(ds["diverged"].values, dtype=bool)
    finite = np.all(np.isfinite(x), axis=1)
    keep = ~diverged & finite
    n = theta.shape[0]
    return {"theta": theta[keep], "x": x[keep], "n_total": n, "n_diverged": int(diverged.sum()),
            "n_invalid": int((~diverged & ~finite).sum()),
            "diverged_fraction": float(diverged.mean()) if n else 0.0,
            "invalid_fraction": float((~diverged & ~finite).mean()) if n else 0.0,
            "theta_diverged": theta[diverged], "fingerprint": ds.attrs.get("fingerprint"),
            "sim_seconds": float(np.nansum(ds["batch_seconds"].values))}


def train(spec: InferSpec | dict, workdir, client=None, threads: int | None = 1, progress: bool = False,
          calibration_samples: int = 500) -> Posterior:
    """Train an amortised posterior for ``spec``: simulate (Dask, zarr, resumable), fit, calibrate.

    Parameters
    ----------
    spec : InferSpec or its dict
    workdir : path
        Folder of the sweep stores (``train.zarr``, ``test.zarr``); reusing it resumes or reuses
        the simulations.
    client : None, scheduler address, distributed.Client or ``"sync"``
        Where the simulations run (:func:`neurotwin_dash.sweep.run_sweep`).
    threads : int, optional
        Torch threads while training (restored afterwards).
    calibration_samples : int
        Posterior draws per held-out simulation for the calibration.

    Returns
    -------
    Posterior
        With ``info`` (data hashes, sweep fingerprints, diverged/invalid fractions, timings) and
        ``calibration`` (:func:`~neurotwin_dash.infer.posterior.calibrate` on the held-out set).
    """
    import torch                                   # optional heavy dependency (extra "infer")
    from sbi.inference import NPE
    from sbi.neural_nets import posterior_nn

    if not isinstance(spec, InferSpec):
        spec = InferSpec.from_dict(spec)
    t0 = time.perf_counter()
    runs = simulate_training_data(spec, workdir, client=client, progress=progress)
    t_sim = time.perf_counter() - t0
    data = load_training_data(spec, Path(workdir) / "train.zarr")
    if data["theta"].shape[0] < 20:
        raise InferError(f"only {data['theta'].shape[0]} usable simulations of {data['n_total']} "
                         f"({data['n_diverged']} diverged, {data['n_invalid']} with non-finite features); "
                         "narrow the prior or change the features")
    est = spec.estimator
    z = spec.prior.to_z(data["theta"])
    t1 = time.perf_counter()
    with torch_threads(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        build = posterior_nn(model=est["model"], hidden_features=int(est["hidden_features"]),
                             num_transforms=int(est["num_transforms"]))
        npe = NPE(prior=spec.prior.torch_prior(), density_estimator=build, show_progress_bars=False,
                  tracker=_NoTracker())
        npe.append_simulations(torch.as_tensor(z, dtype=torch.float32),
                               torch.as_tensor(data["x"], dtype=torch.float32))
        net = npe.train(training_batch_size=int(est["training_batch_size"]),
                        learning_rate=float(est["learning_rate"]),
                        validation_fraction=float(est["validation_fraction"]),
                        stop_after_epochs=int(est["stop_after_epochs"]),
                        max_num_epochs=int(est["max_num_epochs"]))
        summary = npe.summary
    t_train = time.perf_counter() - t1
    info = {
        "n_train": int(data["theta"].shape[0]), "n_total": data["n_total"],
        "n_diverged": data["n_diverged"], "n_invalid": data["n_invalid"],
        "diverged_fraction": data["diverged_fraction"], "invalid_fraction": data["invalid_fraction"],
        "train_data_sha256": data_hash(data["theta"], data["x"], spec.feature_names),
        "train_sweep_fingerprint": data["fingerprint"],
        "feature_mean": np.mean(data["x"], axis=0).tolist(), "feature_sd": np.std(data["x"], axis=0).tolist(),
        "epochs": int(summary.get("epochs_trained", [0])[-1]) if summary.get("epochs_trained") else None,
        "best_validation_loss": float(summary["best_validation_loss"][-1]) if summary.get("best_validation_loss") else None,
        "simulate_seconds": t_sim, "simulation_busy_seconds": data["sim_seconds"], "train_seconds": t_train,
    }
    post = Posterior(spec, net, info=info)
    test = load_training_data(spec, Path(workdir) / "test.zarr")
    if test["theta"].shape[0] < 10:
        raise InferError(f"only {test['theta'].shape[0]} usable held-out simulations of {test['n_total']}: "
                         "too few to calibrate; raise n_test or narrow the prior")
    t2 = time.perf_counter()
    with torch_threads(threads):
        post.calibration = calibrate(post, test["theta"], test["x"], n_samples=calibration_samples,
                                     seed=spec.seed)
    post.info.update(test_data_sha256=data_hash(test["theta"], test["x"], spec.feature_names),
                     test_sweep_fingerprint=test["fingerprint"], n_test_used=int(test["theta"].shape[0]),
                     test_diverged_fraction=test["diverged_fraction"],
                     test_invalid_fraction=test["invalid_fraction"],
                     calibration_seconds=time.perf_counter() - t2)
    del runs
    return post
