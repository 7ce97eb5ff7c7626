"""Amortised simulation-based inference: a posterior over model parameters from summary features.

Train once (simulations from the prior on Dask, neural posterior estimation with ``sbi``'s
normalising flows), then get the posterior of any observation in milliseconds::

    from neurotwin_dash import infer
    spec = infer.InferSpec(model="jansen_rit", params={"A": {"low": 2.5, "high": 5}, "B": {}, "C": {}},
                           features={"psd_hz": [4, 8, 10, 12, 16, 25, 40], "alpha_peak": True})
    post = infer.train(spec, "runs/jr")            # sweeps runs/jr/train.zarr, runs/jr/test.zarr
    post.save("runs/jr/posterior")                 # posterior.json + weights.safetensors (no pickle)
    post.sample(observed_features, 1000)           # (1000, 3) draws of A, B, C
    print(post.calibration_table())                # coverage at 50/80/95 %, z-score, shrinkage

Needs the optional dependencies of the ``infer`` extra (PyTorch CPU, sbi, safetensors); the
features and priors work without them.
"""
from .features import FeatureError, compute_features, feature_names, signal_features
from .priors import ParamPrior, Prior
from .spec import InferError, InferSpec
from .posterior import LEVELS, Posterior, calibrate, load_posterior
from .train import load_training_data, simulate_training_data, train

__all__ = ["FeatureError", "compute_features", "feature_names", "signal_features", "ParamPrior", "Prior",
           "InferError", "InferSpec", "LEVELS", "Posterior", "calibrate", "load_posterior",
           "load_training_data", "simulate_training_data", "train"]
