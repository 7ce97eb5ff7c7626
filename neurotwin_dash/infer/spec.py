"""What an amortised posterior is trained on: :class:`InferSpec` (JSON/YAML-able)."""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..io.files import read_yaml_mapping
from ..sweep import SweepError, SweepSpec, spec_fingerprint
from .features import SWEEP_METRIC, check_features, feature_names
from .priors import Prior

__all__ = ["InferError", "InferSpec", "ESTIMATOR_DEFAULTS", "FEATURE_METRIC"]

#: The sweep metric computing a feature set on the workers (registered by infer.features).
FEATURE_METRIC = SWEEP_METRIC

#: Density estimator and training settings (sbi's ``posterior_nn`` and ``NPE.train`` arguments).
ESTIMATOR_DEFAULTS = {"model": "maf", "hidden_features": 50, "num_transforms": 5,
                      "training_batch_size": 100, "learning_rate": 5e-4, "validation_fraction": 0.1,
                      "stop_after_epochs": 20, "max_num_epochs": 500}
_MODELS = ("maf", "nsf", "mdn", "made")


class InferError(ValueError):
    """An inference spec, posterior file or observation is not usable; the message names the field."""


@dataclass
class InferSpec:
    """A simulation-based inference problem, trained once and then amortised.

    Parameters
    ----------
    model : str
        Model name (``jansen_rit``, ``lanmm``, ...).
    params : mapping or list
        Inferred parameters and their priors (:class:`~neurotwin_dash.infer.priors.Prior`):
        ``{name: {low, high, log, regions}}``; bounds default to the declared ones.
    features : mapping
        Feature set (:mod:`neurotwin_dash.infer.features`).
    connectome : str or None
        Catalog connectome, or None for one node.
    fixed : mapping
        Parameters held fixed (scalars or per-region lists).
    n_simulations, n_test : int
        Training simulations and held-out simulations for calibration (independent prior draws,
        independent noise).
    duration_s, transient_s, dt_ms, sample_rate_hz, method, normalisation
        Passed to ``simulate``.
    noise_rng : {"counter", "numpy"}
        Noise generator of the simulations (see :class:`~neurotwin_dash.sweep.SweepSpec`);
        ``"numpy"`` reproduces the simulations of a posterior trained before the option existed.
    dtype : {"float64", "float32"}
        Float type of the training simulations (the batch kernel; ``"float32"``: twice the lanes
        per vector, reference behaviours within the tolerances of the README's batch-kernel
        section). Default ``"float64"``; left out of the fingerprint when default, so a posterior
        trained before the option existed keeps its fingerprint.
    math_mode : {"default", "fast"}
        The models' exponentials (``simulate(math_mode=...)``; ``"fast"`` needs ``noise_rng``
        ``"counter"`` and float64). Default ``"default"``, also left out of the fingerprint.
    seed : int
        Prior draws, noise seeds (sample *i* uses ``seed + i``) and the network initialisation.
    batch_size : int
        Simulations per Dask task.
    estimator : mapping
        Overrides of :data:`ESTIMATOR_DEFAULTS`.
    name : str
        A label shown in the dashboard.
    """

    model: str
    params: Any
    features: dict
    connectome: Any = None
    fixed: dict = field(default_factory=dict)
    n_simulations: int = 2000
    n_test: int = 200
    duration_s: float = 11.0
    transient_s: float = 1.0
    dt_ms: float = 0.1
    sample_rate_hz: float = 250.0
    method: str = "euler"
    normalisation: str = "max"
    seed: int = 0
    batch_size: int = 100
    estimator: dict = field(default_factory=dict)
    name: str = ""
    noise_rng: str = "counter"
    dtype: str = "float64"
    math_mode: str = "default"

    def __post_init__(self):
        self.prior = Prior(self.model, self.params)
        self.params = self.prior.to_dict()
        self.features = check_features(self.features)
        unknown = sorted(set(self.estimator) - set(ESTIMATOR_DEFAULTS))
        if unknown:
            raise InferError(f"estimator: unknown keys {unknown}; allowed: {', '.join(ESTIMATOR_DEFAULTS)}")
        self.estimator = {**ESTIMATOR_DEFAULTS, **dict(self.estimator)}
        if self.estimator["model"] not in _MODELS:
            raise InferError(f"estimator.model {self.estimator['model']!r} unknown; allowed: {', '.join(_MODELS)}")
        # calibration is always reported: at least 20 held-out simulations (a coverage of a
        # handful of sims would be noise)
        for key, low in (("n_simulations", 20), ("n_test", 20), ("batch_size", 1)):
            if int(getattr(self, key)) < low:
                raise InferError(f"{key} must be ≥ {low}, got {getattr(self, key)}")
            setattr(self, key, int(getattr(self, key)))
        if self.connectome in ("none", ""):
            self.connectome = None
        if self.connectome is not None and not isinstance(self.connectome, str):
            raise InferError("connectome must be a catalog name (e.g. 'tvb76') or None; a posterior "
                             "must be reproducible from its spec")
        overlap = set(self.params) & set(self.fixed)
        if overlap:
            raise InferError(f"parameters {sorted(overlap)} are both inferred and fixed; choose one")
        try:      # every simulation setting is checked by the sweep, before any compute
            self.sweep_spec("train")
        except SweepError as e:   # the user wrote an inference spec: its error, the sweep's words
            raise InferError(str(e)) from e

    # --- derived ---
    @property
    def feature_names(self) -> list[str]:
        return feature_names(self.features)

    @property
    def param_names(self) -> list[str]:
        return self.prior.names

    def sweep_spec(self, part: str = "train") -> SweepSpec:
        """The sweep drawing the ``train`` or held-out ``test`` simulations from the prior.

        Independent prior draws (``sampling: random``) and independent noise per simulation
        (``seed_per_sample``); the test sweep's draws and noise seeds do not overlap the training ones.
        """
        if part not in ("train", "test"):
            raise InferError(f"part must be 'train' or 'test', got {part!r}")
        n = self.n_simulations if part == "train" else self.n_test
        return SweepSpec(
            model=self.model, axes=self.prior.sweep_axes(), sampling="random", n_samples=n,
            sample_seed=self.seed if part == "train" else self.seed + 1_000_003,
            fixed=copy.deepcopy(self.fixed), batch_size=min(self.batch_size, n),
            metrics=[{"name": FEATURE_METRIC, "as": "features", **self.features}],
            connectome=self.connectome, duration_s=self.duration_s, dt_ms=self.dt_ms,
            seed=self.seed if part == "train" else self.seed + self.n_simulations,
            seed_per_sample=True, sample_rate_hz=self.sample_rate_hz, transient_s=self.transient_s,
            normalisation=self.normalisation, method=self.method, noise_rng=self.noise_rng, dtype=self.dtype,
            math_mode=self.math_mode)

    # --- (de)serialisation ---
    def to_dict(self) -> dict:
        keys = [k for k in self.__dataclass_fields__]
        return json.loads(json.dumps({k: getattr(self, k) for k in keys}))

    @classmethod
    def from_dict(cls, data: Mapping) -> "InferSpec":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise InferError(f"unknown inference spec keys {unknown}; allowed: {', '.join(sorted(known))}")
        for key in ("model", "params", "features"):
            if key not in data:
                raise InferError(f"an inference spec needs {key!r}")
        return cls(**copy.deepcopy(dict(data)))

    @classmethod
    def from_yaml(cls, path) -> "InferSpec":
        return cls.from_dict(read_yaml_mapping(path, "inference spec", InferError))

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON of the spec."""
        return spec_fingerprint(self.to_dict())
