"""Priors over a chosen subset of a model's declared parameters.

A prior is a product of independent uniform (or log-uniform) marginals whose default bounds are
the declared bounds of each parameter (``PARAMS`` of the model, ``simulate.NETWORK_PARAMS``, the
sweep parameters); narrower bounds may be given, wider ones are refused. A parameter may be
restricted to some regions (``regions: [...]``): one inferred value, set in those regions only
(the sweep's region-subset axes).

The density estimator works in the coordinates in which the prior is uniform, ``z = θ`` for
uniform and ``z = ln θ`` for log-uniform parameters, so the prior is a box in ``z``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ..params import ParamError, ParamSet
from ..sweep import SWEEP_PARAMS
from ..simulate import all_params

__all__ = ["ParamPrior", "Prior", "declared_params"]


def declared_params(model: str) -> ParamSet:
    """Every parameter a prior may name for ``model``: model, network and sweep parameters."""
    own = all_params(model)
    return own + ParamSet([s for s in SWEEP_PARAMS if s.name not in own], owner="sweep")


@dataclass(frozen=True)
class ParamPrior:
    """One inferred parameter: uniform on ``[low, high]`` (log-uniform with ``log=True``)."""

    name: str
    low: float
    high: float
    log: bool = False
    regions: tuple = ()
    unit: str = ""

    @property
    def label(self) -> str:
        where = f" [{', '.join(self.regions)}]" if self.regions else ""
        return f"{self.name}{where}"

    def to_z(self, theta):
        theta = np.asarray(theta, dtype=float)
        return np.log(theta) if self.log else theta

    def from_z(self, z):
        z = np.asarray(z, dtype=float)
        return np.exp(z) if self.log else z

    @property
    def z_bounds(self) -> tuple[float, float]:
        return float(self.to_z(self.low)), float(self.to_z(self.high))

    def mean(self) -> float:
        """Prior mean of θ."""
        if self.log:
            a, b = np.log(self.low), np.log(self.high)
            return float((self.high - self.low) / (b - a))
        return 0.5 * (self.low + self.high)

    def z_sd(self) -> float:
        """Prior standard deviation in the uniform coordinate z."""
        a, b = self.z_bounds
        return (b - a) / np.sqrt(12.0)


class Prior:
    """Independent uniform / log-uniform priors over named parameters of ``model``.

    Parameters
    ----------
    model : str
    params : mapping or list
        ``{name: {"low": .., "high": .., "log": bool, "regions": [...]}}`` (every key optional:
        an empty mapping means the declared bounds), or a list of names.
    """

    def __init__(self, model: str, params):
        self.model = str(model)
        declared = declared_params(self.model)
        if isinstance(params, (list, tuple)):
            params = {str(p): {} for p in params}
        if not isinstance(params, Mapping) or not params:
            raise ParamError("params: give at least one parameter to infer, e.g. {'A': {}, 'B': {}}")
        items = []
        for name, cfg in params.items():
            cfg = dict(cfg or {})
            extra = set(cfg) - {"low", "high", "log", "regions"}
            if extra:
                raise ParamError(f"params.{name}: unknown keys {sorted(extra)}; allowed: low, high, log, regions")
            spec = declared[name]           # unknown names raise, listing the known ones
            low = float(cfg.get("low", spec.low))
            high = float(cfg.get("high", spec.high))
            spec.check([low, high], where=f"the prior of {name!r}")
            if not low < high:
                raise ParamError(f"params.{name}: low ({low:g}) must be < high ({high:g})")
            log = bool(cfg.get("log", False))
            if log and low <= 0:
                raise ParamError(f"params.{name}: a log-uniform prior needs low > 0, got {low:g}")
            regions = tuple(str(r) for r in cfg.get("regions", ()) or ())
            items.append(ParamPrior(name, low, high, log, regions, spec.unit))
        self.params = tuple(items)

    # --- description ---
    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def __len__(self):
        return len(self.params)

    def to_dict(self) -> dict:
        return {p.name: {"low": p.low, "high": p.high, "log": p.log,
                         **({"regions": list(p.regions)} if p.regions else {})} for p in self.params}

    def sweep_axes(self) -> dict:
        """Axes of a sweep drawing from this prior (``sampling: random``)."""
        return {p.name: {"low": p.low, "high": p.high, "log": p.log,
                         **({"regions": list(p.regions)} if p.regions else {})} for p in self.params}

    # --- coordinates ---
    def to_z(self, theta) -> np.ndarray:
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        return np.stack([p.to_z(theta[:, j]) for j, p in enumerate(self.params)], axis=1)

    def from_z(self, z) -> np.ndarray:
        z = np.asarray(z, dtype=float)
        return np.stack([p.from_z(z[..., j]) for j, p in enumerate(self.params)], axis=-1)

    def z_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = zip(*(p.z_bounds for p in self.params))
        return np.array(lo), np.array(hi)

    def mean(self) -> np.ndarray:
        """Prior mean of θ per parameter."""
        return np.array([p.mean() for p in self.params])

    def z_mean(self) -> np.ndarray:
        lo, hi = self.z_bounds()
        return 0.5 * (lo + hi)

    def z_sd(self) -> np.ndarray:
        return np.array([p.z_sd() for p in self.params])

    def sample(self, n: int, seed=None) -> np.ndarray:
        """``n`` independent draws of θ, shape (n, n_params)."""
        lo, hi = self.z_bounds()
        z = np.random.default_rng(seed).uniform(lo, hi, size=(int(n), len(lo)))
        return self.from_z(z)

    def torch_prior(self):
        """The prior as sbi's ``BoxUniform`` in z coordinates."""
        import torch  # optional heavy: torch and sbi (extra "infer", ~6 s)
        from sbi.utils import BoxUniform
        lo, hi = self.z_bounds()
        return BoxUniform(torch.as_tensor(lo, dtype=torch.float32), torch.as_tensor(hi, dtype=torch.float32))
