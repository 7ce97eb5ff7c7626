"""A trained amortised posterior: sampling, MAP, posterior predictive, calibration, safe files.

The neural posterior estimator (sbi's normalising flow) maps an observation's feature vector to
a density over the inferred parameters in the prior's uniform coordinates (see
:mod:`neurotwin_dash.infer.priors`). Sampling 1,000 draws takes milliseconds, for any observation,
without new simulations.

**Files.** :meth:`Posterior.save` writes a directory holding ``posterior.json`` (the inference
spec, the network architecture, feature names, training and held-out data hashes, the sweep
fingerprints, calibration, versions) and ``weights.safetensors`` (the network's state dict as
plain tensors). :meth:`Posterior.load` rebuilds the network from the JSON and loads the tensors
with ``safetensors``: nothing in the files is executed (no pickle, no ``torch.load``), and a
weights file whose SHA-256 differs from the one recorded is refused.
"""
from __future__ import annotations

# torch, sbi and safetensors (the optional "infer" extra, ~200 MB) are imported inside the functions
# that need them, so that features, priors and specs work without them.
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np
import xarray as xr
from scipy import stats

from .. import __version__
from ..analysis import band_power, welch
from ..analysis.biomarkers import region_signal
from ..simulate import simulate
from ..sweep import build_simulate_kwargs
from .features import compute_features
from .spec import InferError, InferSpec

__all__ = ["Posterior", "load_posterior", "calibrate", "LEVELS", "FORMAT"]

#: Credible levels of the expected-coverage check.
LEVELS = (0.5, 0.8, 0.95)
#: Identifiable from the features: on average the posterior sd is at most half the prior sd
#: (shrinkage 1 - var_post / var_prior ≥ 0.75). A weaker contraction leaves the posterior mean
#: no better than the prior mean for a sizeable share of truths (about 1 in 4 at shrinkage 0.6).
IDENTIFIABLE_SHRINKAGE = 0.75
FORMAT = "neurotwin-dash posterior 1"
_JSON, _WEIGHTS = "posterior.json", "weights.safetensors"


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run torch with ``n`` intra-op threads inside the block (restored afterwards)."""
    import torch  # optional heavy: torch (extra "infer", ~3 s)
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def _seeded(seed):
    """Seed torch's global generator inside the block without changing it for the caller."""
    import torch  # optional heavy: torch (extra "infer", ~3 s)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(int(seed))
        yield


def build_estimator(estimator: Mapping, n_params: int, n_features: int):
    """An untrained flow of the given architecture (its z-score buffers are set by the state dict)."""
    import torch  # optional heavy: torch (extra "infer", ~3 s)
    from sbi.neural_nets import posterior_nn
    build = posterior_nn(model=estimator["model"], hidden_features=int(estimator["hidden_features"]),
                         num_transforms=int(estimator["num_transforms"]))
    with _seeded(0):
        theta = torch.randn(8, n_params)
        x = torch.randn(8, n_features)
    return build(theta, x)


def _sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_hash(theta: np.ndarray, x: np.ndarray, names) -> str:
    """SHA-256 of a training set (float64 θ and x bytes and the feature names)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(theta, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(x, dtype=np.float64).tobytes())
    h.update(json.dumps(list(names)).encode())
    return h.hexdigest()


class Posterior:
    """An amortised posterior p(θ | features) for one :class:`InferSpec`.

    Built by :func:`neurotwin_dash.infer.train` or :meth:`load`; not constructed by hand.

    Attributes
    ----------
    spec : InferSpec
    prior : Prior
    feature_names : list of str
    info : dict
        Hashes, data counts (diverged and invalid fractions), timings, versions.
    calibration : dict
        :func:`calibrate` on the held-out simulations (``n_test`` ≥ 20 of them).
    """

    def __init__(self, spec: InferSpec, net, info: dict | None = None, calibration: dict | None = None):
        from sbi.inference.posteriors import DirectPosterior  # optional heavy: sbi (extra "infer", ~6 s)
        self.spec = spec
        self.prior = spec.prior
        self.feature_names = spec.feature_names
        self.net = net.eval()
        self.info = dict(info or {})
        self.calibration = dict(calibration or {})
        self._posterior = DirectPosterior(posterior_estimator=self.net, prior=self.prior.torch_prior())

    @property
    def param_names(self) -> list[str]:
        return self.prior.names

    def __repr__(self):
        return (f"Posterior({self.spec.name or self.spec.model}: {', '.join(self.param_names)} | "
                f"{len(self.feature_names)} features, {self.info.get('n_train', '?')} simulations)")

    # --- observations ---
    def check_observation(self, observed) -> np.ndarray:
        """The observation as a feature matrix (n_obs, n_features), or a clear error.

        Accepted: a mapping ``{feature name: value}`` with exactly the posterior's features; a
        DataArray with a ``feature`` coordinate (any order; extra leading dims are observations);
        an array whose last axis has one value per feature, in :attr:`feature_names` order.
        """
        names = self.feature_names
        if isinstance(observed, Mapping):
            missing = [n for n in names if n not in observed]
            extra = [n for n in observed if n not in names]
            if missing or extra:
                raise InferError(f"observation features do not match the posterior's: missing {missing}, "
                                 f"unexpected {extra}; expected {names}")
            x = np.array([[float(np.asarray(observed[n], dtype=float)) for n in names]])
        elif isinstance(observed, xr.DataArray):
            if "feature" not in observed.dims or "feature" not in observed.coords:
                raise InferError(f"observation DataArray needs a 'feature' dim with names; got dims {observed.dims}")
            got = [str(v) for v in observed.feature.values]
            missing = [n for n in names if n not in got]
            extra = [n for n in got if n not in names]
            if missing or extra:
                raise InferError(f"observation features do not match the posterior's: missing {missing}, "
                                 f"unexpected {extra}; expected {names}")
            da = observed.sel(feature=names).transpose(..., "feature")
            x = np.asarray(da.values, dtype=float).reshape(-1, len(names))
        else:
            try:
                x = np.asarray(observed, dtype=float)
            except (TypeError, ValueError):
                raise InferError(f"observation must be a mapping, DataArray or numeric array; "
                                 f"got {type(observed).__name__}") from None
            if x.ndim == 0 or x.ndim > 2 or x.shape[-1] != len(names):
                raise InferError(f"observation has shape {x.shape}; expected ({len(names)},) or "
                                 f"(n, {len(names)}): one value per feature {names}")
            x = x.reshape(-1, len(names))
        bad = ~np.isfinite(x)
        if bad.any():
            cols = sorted({names[j] for j in np.nonzero(bad)[1]})
            raise InferError(f"observation features {cols} are not finite (a diverged or silent "
                             "signal has no posterior here)")
        return x

    # --- posterior ---
    def sample_z(self, observed, n: int = 1000, seed=0) -> np.ndarray:
        """Draws in the prior's uniform coordinates: (n, n_params), or (n, n_obs, n_params)."""
        import torch  # optional heavy: torch (extra "infer", ~3 s)
        x = torch.as_tensor(self.check_observation(observed), dtype=torch.float32)
        with torch.no_grad(), _seeded(seed):
            if x.shape[0] == 1:
                z = self._posterior.sample((int(n),), x=x[0], show_progress_bars=False)
            else:
                # sbi caps draws × observations per pass at 100,000 (memory): ask for that directly
                z = self._posterior.sample_batched((int(n),), x=x, show_progress_bars=False,
                                                   max_sampling_batch_size=max(1, 100_000 // x.shape[0]))
        return z.numpy().astype(float)

    def sample(self, observed, n: int = 1000, seed=0) -> np.ndarray:
        """``n`` posterior draws of θ for an observation, shape (n, n_params) in :attr:`param_names` order.

        Several observations (a (k, n_features) array) give (n, k, n_params). The same seed gives
        the same draws.
        """
        return self.prior.from_z(self.sample_z(observed, n, seed))

    def samples_dataset(self, observed, n: int = 1000, seed=0) -> xr.Dataset:
        """:meth:`sample` as a Dataset with one variable per parameter (dim ``draw``), units attached."""
        th = self.sample(observed, n, seed)
        return xr.Dataset({p.name: ("draw", th[:, j], {"units": p.unit}) for j, p in enumerate(self.prior.params)})

    def log_prob(self, theta, observed) -> np.ndarray:
        """Log posterior density of θ (rows) given one observation, in the uniform coordinates."""
        import torch  # optional heavy: torch (extra "infer", ~3 s)
        x = torch.as_tensor(self.check_observation(observed)[0], dtype=torch.float32)
        z = torch.as_tensor(self.prior.to_z(theta), dtype=torch.float32)
        with torch.no_grad():
            return self._posterior.log_prob(z, x=x).numpy().astype(float)

    def map(self, observed, seed=0, num_iter: int = 300, num_init_samples: int = 200) -> dict:
        """Maximum a posteriori estimate ``{name: value}`` (gradient ascent from the best of
        ``num_init_samples`` posterior draws; deterministic for a seed)."""
        import torch  # optional heavy: torch (extra "infer", ~3 s)
        x = torch.as_tensor(self.check_observation(observed)[0], dtype=torch.float32)
        with _seeded(seed):
            self._posterior.set_default_x(x)
            z = self._posterior.map(num_iter=num_iter, num_init_samples=num_init_samples,
                                    num_to_optimize=min(20, num_init_samples), show_progress_bars=False,
                                    force_update=True)
        th = self.prior.from_z(z.detach().numpy().reshape(-1))
        return {n: float(v) for n, v in zip(self.param_names, th)}

    def summary_stats(self, observed, n: int = 1000, seed=0) -> dict:
        """Posterior mean, sd, 5/50/95 % quantiles and shrinkage per parameter."""
        th = self.sample(observed, n, seed)
        z = self.prior.to_z(th)
        out = {}
        for j, p in enumerate(self.prior.params):
            q = np.quantile(th[:, j], [0.05, 0.5, 0.95])
            out[p.name] = {"mean": float(th[:, j].mean()), "sd": float(th[:, j].std()),
                           "q05": float(q[0]), "median": float(q[1]), "q95": float(q[2]),
                           "shrinkage": float(1 - z[:, j].var() / p.z_sd() ** 2)}
        return out

    # --- posterior predictive ---
    def simulate_draws(self, theta, seed=0, duration_s: float | None = None) -> xr.Dataset:
        """Simulate parameter sets θ (rows) with the spec's settings; returns the simulation result."""
        th = np.atleast_2d(np.asarray(theta, dtype=float))
        sweep = self.spec.sweep_spec("train")
        if duration_s is not None:
            sweep.duration_s = float(duration_s)
        sweep.seed = int(seed)
        batch = {p.name: th[:, j] for j, p in enumerate(self.prior.params)}
        return simulate(**build_simulate_kwargs(sweep, batch, list(range(th.shape[0]))))

    def predictive(self, observed, n: int = 16, seed=0, duration_s: float | None = None) -> xr.Dataset:
        """Posterior predictive check: simulate ``n`` posterior draws, compare their features.

        Returns a Dataset with ``theta`` (draw, param), ``features`` (draw, feature), the region-mean
        ``log_psd`` (draw, frequency; log10 of the PSD of the analysed variable), ``observed``
        (feature) and ``z_distance`` (draw): the RMS over features of (predicted − observed)
        divided by the features' sd over the training set.
        """
        x = self.check_observation(observed)[0]
        th = self.sample(observed, n, seed)
        res = self.simulate_draws(th, seed=seed, duration_s=duration_s)
        feats = compute_features(res, self.spec.features, connectome=self.spec.connectome)
        sig = region_signal(res, self.spec.features.get("variable"))
        f = self.spec.features
        psd = welch(sig, window_s=float(f.get("window_s", 2.0)), fmin=1.0,
                    fmax=min(80.0, self.spec.sample_rate_hz / 2))
        if f.get("relative"):           # on the scale of the features: relative to the total power
            lo, hi = f.get("total_range_hz", [1.0, 45.0])
            psd = psd / band_power(psd, {"total": (lo, hi)}).isel(band=0, drop=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_psd = np.log10(psd).mean("region")
        sd = np.asarray(self.info.get("feature_sd", np.ones(len(x))), dtype=float)
        dist = np.sqrt(np.nanmean(((feats.values - x) / sd) ** 2, axis=-1))
        return xr.Dataset(
            {"theta": (("draw", "param"), th), "features": (("draw", "feature"), feats.values),
             "log_psd": (("draw", "frequency"), log_psd.values), "observed": ("feature", x),
             "z_distance": ("draw", dist), "diverged": ("draw", res["diverged"].values)},
            coords={"param": self.param_names, "feature": self.feature_names,
                    "frequency": psd.frequency.values},
            attrs={"seed": int(seed), "duration_s": float(duration_s or self.spec.duration_s)})

    # --- calibration report ---
    def calibration_table(self) -> str:
        """Markdown table of the held-out calibration (coverage, z-score, shrinkage, identifiability)."""
        c = self.calibration
        if not c:
            return "no held-out calibration recorded"
        head = ("| parameter | " + " | ".join(f"coverage {int(100 * lv)} %" for lv in c["levels"])
                + " | mean z-score | mean shrinkage | closer than prior mean | identifiable |")
        rows = [head, "|" + "---|" * (len(c["levels"]) + 5)]
        for name, p in c["params"].items():
            cov = " | ".join(f"{p['coverage'][str(lv)]:.2f}" for lv in c["levels"])
            rows.append(f"| {name} | {cov} | {p['z_score_mean']:.2f} | {p['shrinkage_mean']:.2f} | "
                        f"{p['closer_than_prior_mean']:.2f} | {'yes' if p['identifiable'] else 'no'} |")
        return "\n".join(rows) + f"\n\n{c['n']} held-out simulations, {c['n_samples']} draws each."

    # --- files ---
    def to_json(self) -> dict:
        import sbi
        import torch  # optional heavy: torch (extra "infer", ~3 s)
        return {"format": FORMAT, "spec": self.spec.to_dict(), "spec_sha256": self.spec.fingerprint(),
                "architecture": {"estimator": self.spec.estimator, "n_params": len(self.param_names),
                                 "n_features": len(self.feature_names), "library": "sbi posterior_nn"},
                "param_names": self.param_names, "feature_names": self.feature_names,
                "info": self.info, "calibration": self.calibration,
                "versions": {"neurotwin_dash": __version__, "sbi": sbi.__version__, "torch": torch.__version__}}

    def save(self, path, overwrite: bool = False) -> Path:
        """Write the posterior directory (``posterior.json`` + ``weights.safetensors``).

        Written into a temporary directory beside ``path`` and renamed into place; an existing
        ``path`` is refused unless ``overwrite`` (and then only if it is a posterior directory).
        """
        from safetensors.torch import save_file  # optional heavy: imports torch (extra "infer")
        path = Path(path)
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
            if not (path / _JSON).is_file():
                raise InferError(f"{path} exists and is not a posterior directory; not replacing it")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            state = {k: v.detach().contiguous().clone() for k, v in self.net.state_dict().items()}
            save_file(state, str(tmp / _WEIGHTS))
            doc = self.to_json()
            doc["weights_sha256"] = _sha256_file(tmp / _WEIGHTS)
            (tmp / _JSON).write_text(json.dumps(doc, indent=1))
            if path.exists():
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                os.rename(path, old)
                os.rename(tmp, path)
                shutil.rmtree(old)
            else:
                os.rename(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path) -> "Posterior":
        """Read a posterior directory written by :meth:`save` (no code is executed)."""
        from safetensors.torch import load_file  # optional heavy: imports torch (extra "infer")
        path = Path(path)
        if not (path / _JSON).is_file() or not (path / _WEIGHTS).is_file():
            raise InferError(f"{path} is not a posterior directory (needs {_JSON} and {_WEIGHTS})")
        try:
            doc = json.loads((path / _JSON).read_text())
        except json.JSONDecodeError as exc:
            raise InferError(f"{path / _JSON} is not valid JSON: {exc}") from None
        if doc.get("format") != FORMAT:
            raise InferError(f"{path}: unknown posterior format {doc.get('format')!r}; expected {FORMAT!r}")
        digest = _sha256_file(path / _WEIGHTS)
        if digest != doc.get("weights_sha256"):
            raise InferError(f"{path / _WEIGHTS}: SHA-256 {digest[:12]}… differs from the recorded "
                             f"{str(doc.get('weights_sha256'))[:12]}…; the file was changed")
        spec = InferSpec.from_dict(doc["spec"])
        if spec.feature_names != doc["feature_names"] or spec.param_names != doc["param_names"]:
            raise InferError(f"{path}: the spec's features/parameters differ from the recorded ones")
        arch = doc["architecture"]
        net = build_estimator(arch["estimator"], int(arch["n_params"]), int(arch["n_features"]))
        state = load_file(str(path / _WEIGHTS))
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise InferError(f"{path}: the weights do not fit the recorded architecture: {exc}") from None
        return cls(spec, net, info=doc.get("info"), calibration=doc.get("calibration"))


def load_posterior(path) -> Posterior:
    """Shorthand for :meth:`Posterior.load`."""
    return Posterior.load(path)


def calibrate(posterior: Posterior, theta, x, n_samples: int = 500, levels=LEVELS, seed=0) -> dict:
    """Calibration of a posterior on held-out simulations (θ_i, x_i) drawn from the prior.

    Per parameter, in the prior's uniform coordinates:

    * **expected coverage**: the fraction of held-out θ inside the central (equal-tailed)
      marginal credible interval at each level (a calibrated posterior gives the level itself);
    * **SBC ranks** (Talts et al. 2018): the rank of θ among the draws, as a 10-bin histogram
      (flat when calibrated) and the χ² p-value of its uniformity;
    * **posterior z-score** |mean − θ| / sd and **shrinkage** 1 − var_post / var_prior (means
      over the held-out set; Betancourt's "posterior z-score vs shrinkage" diagnostic);
    * the fraction of held-out sets whose posterior mean is closer to θ than the prior mean;
    * ``identifiable``: mean shrinkage ≥ :data:`IDENTIFIABLE_SHRINKAGE` (posterior sd at most half
      the prior sd on average).
    """
    theta = np.atleast_2d(np.asarray(theta, dtype=float))
    z_true = posterior.prior.to_z(theta)
    zs = posterior.sample_z(x, n_samples, seed)              # (n_samples, n_obs, n_params)
    if zs.ndim == 2:
        zs = zs[:, None, :]
    prior_sd = posterior.prior.z_sd()
    prior_mean = posterior.prior.z_mean()
    out = {"levels": list(levels), "n": int(theta.shape[0]), "n_samples": int(n_samples), "params": {}}
    for j, p in enumerate(posterior.prior.params):
        draws, t = zs[:, :, j], z_true[:, j]
        cov = {}
        for lv in levels:
            lo, hi = np.quantile(draws, [(1 - lv) / 2, (1 + lv) / 2], axis=0)
            cov[str(lv)] = float(np.mean((t >= lo) & (t <= hi)))
        ranks = (draws < t[None, :]).sum(axis=0)
        hist = np.histogram(ranks, bins=10, range=(0, n_samples + 1))[0]
        mean, sd = draws.mean(axis=0), draws.std(axis=0)
        z = np.abs(mean - t) / sd
        shrink = 1 - sd ** 2 / prior_sd[j] ** 2
        closer = np.abs(mean - t) < np.abs(prior_mean[j] - t)
        out["params"][p.name] = {
            "coverage": cov, "sbc_rank_hist": hist.tolist(),
            "sbc_uniform_p": float(stats.chisquare(hist).pvalue) if theta.shape[0] >= 10 else None,
            "z_score_mean": float(np.mean(z)), "shrinkage_mean": float(np.mean(shrink)),
            "closer_than_prior_mean": float(np.mean(closer)),
            "identifiable": bool(np.mean(shrink) >= IDENTIFIABLE_SHRINKAGE)}
    return out
