"""Parameters declared once: name, default, bounds, unit and doc.

A model (or any other component with tunable numbers) declares a :class:`ParamSet`
of :class:`ParamSpec` entries. The same declaration is turned into

* NumPy arrays for the numba kernels (:meth:`ParamSet.to_array`),
* ``--set name=value`` options of the CLI (:meth:`ParamSet.parse_assignments`),
* sweep axes (bounds give the default range), and
* Panel sliders (bounds, unit and doc become the slider range, label and tooltip).

Unknown names and out-of-range values raise :class:`ParamError` before any compute,
with a message that names the parameter and the allowed range.
"""
from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

__all__ = ["ParamError", "ParamSpec", "ParamSet"]


class ParamError(ValueError):
    """A parameter value or name is not allowed; the message says what is."""


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter.

    Parameters
    ----------
    name : str
        Identifier used everywhere (kernels, CLI, sweeps, sliders).
    default : float
        Value used when none is given.
    low, high : float
        Inclusive bounds. Values outside raise :class:`ParamError`.
    unit : str
        Physical unit, e.g. ``"mV"`` or ``"1/s"``; ``""`` for dimensionless.
    doc : str
        One sentence saying what the parameter means (shown as a tooltip).
    """

    name: str
    default: float
    low: float
    high: float
    unit: str = ""
    doc: str = ""

    def __post_init__(self):
        if not self.low <= self.default <= self.high:
            raise ParamError(
                f"declared default of {self.name!r} ({self.default}) lies outside its bounds "
                f"[{self.low}, {self.high}]"
            )

    @property
    def label(self) -> str:
        """Name with unit, for axes and sliders."""
        return f"{self.name} ({self.unit})" if self.unit else self.name

    def check(self, value, where: str = "") -> np.ndarray:
        """Return ``value`` as a float array, raising if any element is out of bounds or not finite."""
        arr = np.asarray(value, dtype=float)
        place = f" in {where}" if where else ""
        if not np.all(np.isfinite(arr)):
            raise ParamError(f"parameter {self.name!r}{place} must be finite, got {value!r}")
        if np.any(arr < self.low) or np.any(arr > self.high):
            bad = arr[(arr < self.low) | (arr > self.high)].ravel()[0]
            raise ParamError(
                f"parameter {self.name!r}{place} = {bad:g} is outside the allowed range "
                f"[{self.low:g}, {self.high:g}] {self.unit}".rstrip()
            )
        return arr


class ParamSet:
    """An ordered collection of :class:`ParamSpec`, the single declaration of a component's parameters."""

    def __init__(self, specs: Iterable[ParamSpec], owner: str = ""):
        self.specs = tuple(specs)
        self.owner = owner
        self._index = {s.name: i for i, s in enumerate(self.specs)}
        if len(self._index) != len(self.specs):
            raise ParamError(f"duplicate parameter names in {owner or 'ParamSet'}")

    def __iter__(self):
        return iter(self.specs)

    def __len__(self):
        return len(self.specs)

    def __contains__(self, name):
        return name in self._index

    def __getitem__(self, name: str) -> ParamSpec:
        try:
            return self.specs[self._index[name]]
        except KeyError:
            raise ParamError(
                f"unknown parameter {name!r} for {self.owner or 'this component'}; "
                f"known: {', '.join(self.names)}"
            ) from None

    def __add__(self, other: "ParamSet") -> "ParamSet":
        return ParamSet(self.specs + tuple(other.specs), owner=self.owner or other.owner)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)

    def index(self, name: str) -> int:
        """Column of ``name`` in arrays made by :meth:`to_array`."""
        self[name]  # raises a clear error for unknown names
        return self._index[name]

    def indices(self):
        """Column of every parameter, by name: ``PARAMS.indices().C == PARAMS.index("C")``.

        A named tuple (numba reads a module-level one as constants), so a model's kernel code
        writes ``p[P.C]`` and stays bound to the right column whatever the declaration order.
        """
        cls = namedtuple(f"{(self.owner or 'Param').title().replace('_', '')}Index", self.names)
        return cls(*range(len(self.specs)))

    def columns(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """``name -> values[..., index(name)]``: the parameters of an array whose last axis is
        this set (e.g. ``(batch, region, n_params)``), by name (the models' NumPy references)."""
        return {name: values[..., i] for i, name in enumerate(self.names)}

    def defaults(self) -> dict[str, float]:
        return {s.name: s.default for s in self.specs}

    def validate(self, values: Mapping[str, object] | None) -> dict[str, np.ndarray]:
        """Check names and bounds of ``values``; return them as float arrays."""
        out = {}
        for name, value in (values or {}).items():
            out[name] = self[name].check(value, where=self.owner)
        return out

    def to_array(self, values: Mapping[str, object] | None = None, n_batch: int | None = None,
                 n_region: int = 1) -> np.ndarray:
        """Kernel array of shape ``(n_batch, n_params, n_region)``.

        Each value may be a scalar (same for all), shape ``(n_batch,)`` (one per batch
        member), ``(n_region,)`` when ``n_batch`` is 1 or differs from ``n_region`` (one per
        region), or ``(n_batch, n_region)``. ``n_batch`` defaults to the longest batch
        axis found in ``values`` (1 when all are scalars).
        """
        checked = self.validate(values)
        if n_batch is None:
            n_batch = 1
            for arr in checked.values():
                if arr.ndim == 2 or (arr.ndim == 1 and arr.shape[0] != n_region):
                    n_batch = max(n_batch, arr.shape[0])
        out = np.empty((n_batch, len(self.specs), n_region))
        for i, spec in enumerate(self.specs):
            arr = checked.get(spec.name, np.asarray(spec.default, dtype=float))
            out[:, i, :] = _broadcast(arr, n_batch, n_region, spec.name)
        return out

    def parse_assignments(self, items: Iterable[str]) -> dict[str, float]:
        """Parse CLI ``name=value`` strings into a validated dict of floats."""
        values = {}
        for item in items:
            if "=" not in item:
                raise ParamError(f"expected name=value, got {item!r}")
            name, text = item.split("=", 1)
            name = name.strip()
            try:
                value = float(text)
            except ValueError:
                raise ParamError(f"parameter {name!r}: {text!r} is not a number") from None
            values[name] = float(self[name].check(value))
        return values


def _broadcast(arr: np.ndarray, n_batch: int, n_region: int, name: str) -> np.ndarray:
    if arr.ndim == 0:
        return np.full((n_batch, n_region), float(arr))
    if arr.ndim == 1:
        if arr.shape[0] == n_batch and (n_batch != n_region or n_batch == 1):
            return np.repeat(arr[:, None], n_region, axis=1)
        if arr.shape[0] == n_region:
            return np.repeat(arr[None, :], n_batch, axis=0)
    if arr.ndim == 2 and arr.shape == (n_batch, n_region):
        return arr
    raise ParamError(
        f"parameter {name!r} has shape {arr.shape}; allowed: scalar, ({n_batch},) per batch "
        f"member, ({n_region},) per region, or ({n_batch}, {n_region})"
    )
