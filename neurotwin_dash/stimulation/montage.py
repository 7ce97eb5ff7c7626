"""tES montages: electrodes named in the 10-10 / 10-05 system with their currents.

A :class:`Montage` holds one current per electrode (mA, positive = anode: current enters the
head there). Currents sum to zero — or a named return electrode takes whatever is needed to
make them — and the safety limits of multichannel stimulators are enforced on construction:

* per electrode ``|I_k| <= max_current_mA`` (2 mA by default),
* total injected ``sum(max(I_k, 0)) <= max_total_mA`` (4 mA by default),
* at most ``max_electrodes`` active (non-zero) electrodes (8 by default).

The limits live in :class:`Limits` and are all configurable. Every violation raises
:class:`MontageError` naming the electrode (where there is one) and the limit (docs/science.md §7).

Who sets the limits: the user or the server (:func:`user_limits`, never above the documented
safety limits :data:`SAFETY_LIMITS`: 2 mA per electrode, 4 mA injected). A montage *file* may only
tighten them: :meth:`Montage.from_dict` refuses a file whose ``limits`` ask for more.

Positions come from MNE's standard montages through :mod:`neurotwin_dash.catalog`
(``"standard_1005"`` by default, a superset of 10-10 and 10-20).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import numpy as np
import xarray as xr

from .. import catalog
from ..io.files import write_text

__all__ = ["MontageError", "Limits", "Montage", "layout_positions", "DEFAULT_LAYOUT", "SAFETY_LIMITS",
           "user_limits"]

DEFAULT_LAYOUT = "standard_1005"


class MontageError(ValueError):
    """A montage breaks a rule; the message names the electrode and the limit."""


@dataclass(frozen=True)
class Limits:
    """Safety limits of a stimulator (docs/science.md §7: Starstim-like defaults).

    Parameters
    ----------
    max_current_mA : float
        Largest allowed ``|I|`` at any one electrode.
    max_total_mA : float
        Largest total injected current, ``sum(max(I_k, 0))`` (equal to the total extracted).
    max_electrodes : int
        Largest number of active (non-zero current) electrodes.
    tol_mA : float
        Currents with ``|I| <= tol_mA`` count as zero; sums within ``tol_mA`` of a limit pass.
    """

    max_current_mA: float = 2.0
    max_total_mA: float = 4.0
    max_electrodes: int = 8
    tol_mA: float = 1e-6

    def __post_init__(self):
        for name in ("max_current_mA", "max_total_mA", "tol_mA"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise MontageError(f"limit {name} must be a positive finite number (mA), got {value!r}")
        if int(self.max_electrodes) != self.max_electrodes or self.max_electrodes < 2:
            raise MontageError(f"limit max_electrodes must be an integer >= 2, got {self.max_electrodes!r}")


#: The documented safety limits (≤ 2 mA per electrode, ≤ 4 mA injected, as commonly applied):
#: the most a user or server setting may allow (:func:`user_limits`), the default for files.
SAFETY_LIMITS = Limits()
#: Largest tolerance a setting may use (a tolerance also widens every limit by itself).
MAX_TOL_mA = 0.01


def _tighter_or_equal(asked: Mapping, allowed: Limits, who: str) -> None:
    """Refuse any entry of ``asked`` that would allow more than ``allowed``."""
    for name, value in asked.items():
        cap = MAX_TOL_mA if name == "tol_mA" and who != "file" else getattr(allowed, name)
        try:
            too_much = float(value) > float(cap) + 1e-12
        except (TypeError, ValueError):
            raise MontageError(f"{who}: limit {name} must be a number, got {value!r}") from None
        if too_much:
            raise MontageError(f"{who}: limit {name} = {value} exceeds the allowed {cap:g}"
                               f"{'' if name == 'max_electrodes' else ' mA'}; "
                               + ("a montage file can only tighten the stimulator limits, which are "
                                  "a user/server setting" if who == "file"
                                  else "the documented safety limits cap every setting"))


def user_limits(**limits) -> Limits:
    """Stimulator limits set by a user or the server, checked against :data:`SAFETY_LIMITS`
    (current limits, 2 mA / 4 mA) and :data:`MAX_TOL_mA`; ``max_electrodes`` is free (≥ 2)."""
    _tighter_or_equal({k: v for k, v in limits.items() if k != "max_electrodes"}, SAFETY_LIMITS, "setting")
    return Limits(**limits)


@lru_cache(maxsize=8)
def _layout(layout: str) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    entry = catalog.describe(layout)
    if entry["kind"] != "montage":
        raise MontageError(f"layout {layout!r} is a {entry['kind']}, not an electrode montage; "
                           f"montages: {', '.join(catalog.names('montage'))}")
    pos = catalog.load(layout).get_positions()["ch_pos"]
    by_upper = {name.upper(): name for name in pos}
    return by_upper, {name: np.asarray(xyz, dtype=float) for name, xyz in pos.items()}


def layout_positions(layout: str = DEFAULT_LAYOUT, names=None) -> xr.DataArray:
    """Electrode positions of a catalog montage, dims ``(electrode, axis)``, metres.

    Parameters
    ----------
    layout : str
        Catalog montage name (``neurotwin catalog list``), e.g. ``"standard_1005"``.
    names : sequence of str, optional
        Electrodes to return (case-insensitive); all electrodes of the layout when omitted.
    """
    by_upper, pos = _layout(layout)
    names = list(pos) if names is None else [canonical_name(n, layout) for n in names]
    xyz = np.array([pos[n] for n in names]).reshape(len(names), 3)
    return xr.DataArray(xyz, dims=("electrode", "axis"),
                        coords={"electrode": names, "axis": ["x", "y", "z"]},
                        attrs={"units": "m", "layout": layout,
                               "frame": "MNE standard montage frame (RAS, metres)"})


def canonical_name(name: str, layout: str = DEFAULT_LAYOUT) -> str:
    """The layout's spelling of an electrode name (``"fp1"`` -> ``"Fp1"``); raises if unknown."""
    by_upper, _ = _layout(layout)
    key = str(name).strip().upper()
    if key not in by_upper:
        raise MontageError(f"electrode {name!r} is not in layout {layout!r} "
                           f"({len(by_upper)} positions, e.g. Fp1, Cz, O2)")
    return by_upper[key]


@dataclass(frozen=True)
class Montage:
    """Electrode currents (mA) of one tES montage; validated on construction.

    Parameters
    ----------
    currents_mA : mapping of str to float
        Current per electrode in mA; positive = anode (current into the head).
    layout : str
        Catalog montage the electrode names come from.
    return_electrode : str, optional
        Electrode that returns the net current of the others; it must not also be given a
        current in ``currents_mA`` (or only 0). Without it the currents must sum to zero.
    limits : Limits
        Safety limits to enforce.

    Examples
    --------
    >>> Montage({"F3": 2.0}, return_electrode="Fp2").currents_mA
    {'F3': 2.0, 'Fp2': -2.0}
    """

    currents_mA: Mapping[str, float]
    layout: str = DEFAULT_LAYOUT
    return_electrode: str | None = None
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self):
        if not isinstance(self.limits, Limits):
            object.__setattr__(self, "limits", Limits(**dict(self.limits)))
        lim = self.limits
        currents: dict[str, float] = {}
        for raw_name, value in dict(self.currents_mA).items():
            name = canonical_name(raw_name, self.layout)
            if name in currents:
                raise MontageError(f"electrode {name!r} is given twice")
            try:
                current = float(value)
            except (TypeError, ValueError):
                raise MontageError(f"electrode {name!r}: current {value!r} is not a number (mA)") from None
            if not np.isfinite(current):
                raise MontageError(f"electrode {name!r}: current must be finite, got {value!r}")
            currents[name] = current
        if self.return_electrode is not None:
            ret = canonical_name(self.return_electrode, self.layout)
            if abs(currents.get(ret, 0.0)) > lim.tol_mA:
                raise MontageError(f"return electrode {ret!r} must not be given a current "
                                   f"(got {currents[ret]:g} mA); it takes minus the sum of the others")
            currents.pop(ret, None)
            currents[ret] = -sum(currents.values())
            object.__setattr__(self, "return_electrode", ret)
        if not currents:
            raise MontageError("a montage needs at least two electrodes; got none")
        object.__setattr__(self, "currents_mA", currents)
        self._check()

    # --- validation -----------------------------------------------------------------------
    def _check(self) -> None:
        lim = self.limits
        for name, current in self.currents_mA.items():
            if abs(current) > lim.max_current_mA + lim.tol_mA:
                where = " (return electrode)" if name == self.return_electrode else ""
                raise MontageError(
                    f"electrode {name!r}{where}: |current| = {abs(current):g} mA exceeds the "
                    f"per-electrode limit max_current_mA = {lim.max_current_mA:g} mA")
        net = sum(self.currents_mA.values())
        if abs(net) > lim.tol_mA:
            raise MontageError(
                f"currents sum to {net:+g} mA; they must sum to zero (within tol_mA = {lim.tol_mA:g}); "
                f"adjust them or name a return_electrode")
        total = self.total_injected_mA
        if total > lim.max_total_mA + lim.tol_mA:
            anodes = ", ".join(f"{n}={c:g}" for n, c in self.currents_mA.items() if c > 0)
            raise MontageError(
                f"total injected current {total:g} mA (anodes {anodes}) exceeds the limit "
                f"max_total_mA = {lim.max_total_mA:g} mA")
        active = self.active_electrodes
        if len(active) > lim.max_electrodes:
            raise MontageError(
                f"{len(active)} active electrodes ({', '.join(active)}) exceed the limit "
                f"max_electrodes = {lim.max_electrodes}")

    # --- views ----------------------------------------------------------------------------
    @property
    def electrodes(self) -> list[str]:
        """Electrode names (layout spelling), in the order given."""
        return list(self.currents_mA)

    @property
    def active_electrodes(self) -> list[str]:
        """Electrodes whose current exceeds ``limits.tol_mA`` in magnitude."""
        return [n for n, c in self.currents_mA.items() if abs(c) > self.limits.tol_mA]

    @property
    def total_injected_mA(self) -> float:
        """Sum of the positive (anodal) currents, mA."""
        return float(sum(c for c in self.currents_mA.values() if c > 0))

    def currents(self, electrodes=None) -> xr.DataArray:
        """Currents as a DataArray over ``electrode`` (mA); zeros for listed electrodes not in the montage."""
        names = self.electrodes if electrodes is None else [canonical_name(e, self.layout) for e in electrodes]
        missing = [n for n in self.active_electrodes if n not in names]
        if missing:
            raise MontageError(f"electrodes {missing} of the montage are not among the requested "
                               f"electrodes; add them")
        values = np.array([self.currents_mA.get(n, 0.0) for n in names])
        return xr.DataArray(values, dims=("electrode",), coords={"electrode": names},
                            attrs={"units": "mA", "long_name": "electrode current (+ = anode)"})

    def positions(self) -> xr.DataArray:
        """Positions of the montage's electrodes, dims ``(electrode, axis)``, metres."""
        return layout_positions(self.layout, self.electrodes)

    # --- derived montages -------------------------------------------------------------------
    def scaled(self, factor: float) -> "Montage":
        """Montage with every current multiplied by ``factor`` (limits still enforced)."""
        return Montage({n: c * float(factor) for n, c in self.currents_mA.items()}, self.layout,
                       limits=self.limits)

    def reversed(self) -> "Montage":
        """Montage with every current's sign flipped (anodes become cathodes)."""
        return self.scaled(-1.0)

    def with_limits(self, **limits) -> "Montage":
        """The same currents checked against other limits, e.g. ``with_limits(max_electrodes=4)``."""
        return Montage(self.currents_mA, self.layout, limits=Limits(**{**asdict(self.limits), **limits}))

    @classmethod
    def bipolar(cls, anode: str, cathode: str, current_mA: float = 1.0, layout: str = DEFAULT_LAYOUT,
                limits: Limits | None = None) -> "Montage":
        """Two-electrode montage: ``current_mA`` into ``anode``, out of ``cathode``."""
        return cls({anode: current_mA}, layout=layout, return_electrode=cathode,
                   limits=limits or Limits())

    @classmethod
    def from_currents(cls, currents: xr.DataArray, layout: str = DEFAULT_LAYOUT,
                      limits: Limits | None = None, drop_zero: bool = True) -> "Montage":
        """Montage from a DataArray over ``electrode`` (mA), e.g. an optimizer's result."""
        lim = limits or Limits()
        items = {str(n): float(c) for n, c in zip(currents["electrode"].values, np.asarray(currents))
                 if not (drop_zero and abs(float(c)) <= lim.tol_mA)}
        return cls(items, layout=layout, limits=lim)

    # --- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"kind": "neurotwin-dash tES montage", "layout": self.layout,
                "currents_mA": {n: round(c, 9) for n, c in self.currents_mA.items()},
                "limits": asdict(self.limits)}

    @classmethod
    def from_dict(cls, data: Mapping, limits: Limits | None = None) -> "Montage":
        """Inverse of :meth:`to_dict`; also accepts ``return_electrode``.

        ``limits`` are the stimulator limits in force (the user's/server's; default
        :data:`SAFETY_LIMITS`). The file's own ``limits`` may only tighten them: a file asking
        for more current, more electrodes or a larger tolerance is refused."""
        allowed = limits or SAFETY_LIMITS
        if "currents_mA" not in data:
            raise MontageError("montage JSON: missing field 'currents_mA' (electrode -> mA)")
        unknown = set(data) - {"kind", "layout", "currents_mA", "limits", "return_electrode", "metrics"}
        if unknown:
            raise MontageError(f"montage JSON: unknown fields {sorted(unknown)}; allowed: kind, layout, "
                               f"currents_mA, limits, return_electrode, metrics")
        limits = data.get("limits") or {}
        bad = set(limits) - {"max_current_mA", "max_total_mA", "max_electrodes", "tol_mA"}
        if bad:
            raise MontageError(f"montage JSON: unknown limits {sorted(bad)}; allowed: max_current_mA, "
                               f"max_total_mA, max_electrodes, tol_mA")
        _tighter_or_equal(limits, allowed, "file")
        return cls(data["currents_mA"], layout=data.get("layout", DEFAULT_LAYOUT),
                   return_electrode=data.get("return_electrode"),
                   limits=Limits(**{**asdict(allowed), **limits}))

    def save(self, path, overwrite: bool = False, **extra) -> Path:
        """Write the montage as JSON (``extra`` keys such as ``metrics`` are stored alongside).

        Temporary file + atomic rename; an existing file is replaced only with ``overwrite``."""
        return write_text(path, json.dumps({**self.to_dict(), **extra}, indent=2) + "\n", overwrite=overwrite)

    @classmethod
    def load(cls, path, limits: Limits | None = None) -> "Montage":
        """Read a montage JSON written by :meth:`save` (or by hand); ``limits`` as in
        :meth:`from_dict` (a file cannot raise them)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise MontageError(f"montage file {path}: not valid JSON ({exc})") from None
        return cls.from_dict(data, limits=limits)

    def __repr__(self):
        parts = ", ".join(f"{n}: {c:+.3g}" for n, c in self.currents_mA.items())
        return f"Montage({{{parts}}} mA, layout={self.layout!r})"
