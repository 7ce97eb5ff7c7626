"""Schemas of the YAML specs (sweep and fit): types checked, unknown keys refused.

A spec is user data: :func:`validate` checks it against a :mod:`pydantic` model in strict mode
(``"5"`` is not a number, ``yes`` is not a list) and refuses keys the model does not declare,
naming each offending field by its path (``axes.p.num``, ``objective[1].weight``). The checked
mapping itself is then used unchanged, so a spec's fingerprint does not depend on the schema.

Nothing in a spec can name code to import: metrics and simulators are looked up in registries
filled from Python (:func:`neurotwin_dash.sweep.register_metric`,
:func:`neurotwin_dash.sweep.register_simulator`), objective terms in a fixed table.
"""
from __future__ import annotations

import inspect
from typing import Any, Literal, Mapping, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["SweepSpecSchema", "FitSpecSchema", "validate", "check_keywords"]

Number = float        # strict mode still accepts an int here (not a bool or a string)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Axis(_Strict):
    """One swept parameter."""
    values: list[Number] | None = Field(None, min_length=1)
    low: Number | None = None
    high: Number | None = None
    num: int | None = Field(None, ge=1)
    log: bool = False
    regions: list[str] | None = None


class MetricEntry(BaseModel):
    """``{name: ..., as: ..., keyword: value ...}``: keywords are checked against the registered
    function's signature later (:func:`check_keywords`); their values must be plain data."""
    model_config = ConfigDict(extra="allow", strict=True)
    name: str
    as_: str | None = Field(None, alias="as")

    def model_post_init(self, __context: Any) -> None:
        for key, value in (self.model_extra or {}).items():
            ok = isinstance(value, (bool, int, float, str, type(None))) or (
                isinstance(value, list) and all(isinstance(v, (int, float, str)) for v in value))
            if not ok:
                raise ValueError(f"metric {self.name!r}: {key} must be a number, text or a list of them")


class Stimulation(_Strict):
    montage: str | dict[str, Any] | None = None
    pattern: str | dict[str, Number] | None = None
    field_V_m: list[Number] | None = None
    lambda_mV_per_V_m: Number | None = None
    head: str | None = None


class SweepSpecSchema(_Strict):
    """The keys of :class:`neurotwin_dash.sweep.SweepSpec` (a test keeps the two in step).

    Types only: the ranges and allowed values are checked by ``SweepSpec`` itself."""
    model: str
    axes: dict[str, Union[Axis, list[Number]]]
    sampling: str = "grid"
    n_samples: int | None = None
    sample_seed: int = 0
    fixed: dict[str, Union[Number, list[Number]]] = {}
    batch_size: int | None = None
    metrics: Union[str, MetricEntry, list[Union[str, MetricEntry]]] = ["peak_frequency", "alpha_power"]
    timeseries: Union[bool, list[str]] = False
    stimulation: Stimulation | None = None
    connectome: str | None = "tvb76"
    duration_s: Number = 10.0
    dt_ms: Number = 0.1
    seed: int = 0
    seed_per_sample: bool = False
    sample_rate_hz: Number = 250.0
    record: Union[str, list[str], None] = None
    transient_s: Number = 1.0
    normalisation: str = "max"
    method: Literal["euler", "heun"] = "euler"
    simulator: str = "neurotwin_dash.simulate:simulate"
    noise_rng: Literal["counter", "numpy"] = "counter"
    dtype: Literal["float64", "float32"] = "float64"
    math_mode: Literal["default", "fast"] = "default"


class FreeParam(_Strict):
    name: str
    low: Number
    high: Number
    log: bool = False
    regions: list[str] | None = None


class Term(BaseModel):
    """An objective term; its keywords are checked against the term class (:func:`check_keywords`)."""
    model_config = ConfigDict(extra="allow", strict=True)
    term: str


class HcpOptions(_Strict):
    duration_s: Number | None = Field(None, gt=0)
    subject: int | None = None
    keep_fraction: Number | None = Field(None, gt=0, le=1)
    fcd_weight: Number | None = Field(None, ge=0)
    seed: int | None = None
    dt_ms: Number | None = Field(None, gt=0)
    skip_s: Number | None = Field(None, ge=0)
    model: str | None = None
    per_region_input: bool | None = None


class FitSpecSchema(_Strict):
    """The keys of a ``neurotwin fit`` YAML spec (see :mod:`neurotwin_dash.fit.specs`)."""
    problem: Literal["hcp", "custom"] = "custom"
    name: str | None = None
    hcp: HcpOptions | None = None
    method: Literal["cmaes", "de"] = "cmaes"
    generations: int = Field(10, ge=1, le=10_000)
    popsize: int = Field(16, ge=2, le=10_000)
    seed: int = 0
    sim_seed: int | None = None
    x0: dict[str, Union[Number, list[Number]]] | None = None
    sigma0: Number = Field(0.3, gt=0)
    model: str | None = None
    connectome: str | None = None
    duration_s: Number | None = Field(None, gt=0)
    dt_ms: Number | None = Field(None, gt=0)
    sample_rate_hz: Number | None = Field(None, gt=0)
    record: Union[str, list[str], None] = None
    transient_s: Number | None = Field(None, ge=0)
    normalisation: str | None = None
    method_sim: Literal["euler", "heun"] | None = None
    noise_rng: Literal["numpy", "counter"] | None = None
    fixed: dict[str, Union[Number, list[Number]]] | None = None
    free: list[FreeParam] | None = None
    objective: list[Term] | None = None


def _where(loc) -> str:
    """``('axes', 'p', 'Axis', 'num')`` -> ``axes.p.num``; list indices as ``[i]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif any(c in part for c in "[(") or part in _MODEL_NAMES or part in ("int", "float", "str", "bool"):
            continue                                   # pydantic's name of a union member
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


_MODEL_NAMES = {"Axis", "MetricEntry", "Stimulation", "FreeParam", "Term", "HcpOptions"}


def validate(schema: type[BaseModel], data: Mapping, what: str, error: type[Exception]) -> None:
    """Check ``data`` against ``schema``; raise ``error`` naming every offending field.

    Parameters
    ----------
    schema : pydantic model class
    data : mapping
        The spec as read from YAML.
    what : str
        ``"sweep spec"`` / ``"fit spec"`` (message prefix).
    error : exception class
        Raised (a ``ValueError`` subclass, so the CLI prints one line).
    """
    if not isinstance(data, Mapping):
        raise error(f"{what}: expected a mapping of keys, got {type(data).__name__}")
    try:
        schema.model_validate(dict(data))
    except ValidationError as exc:
        seen, lines = set(), []
        for e in exc.errors():
            where = _where(e["loc"])
            msg = "unknown key (not allowed)" if e["type"] == "extra_forbidden" else e["msg"]
            if (where, msg) not in seen:
                seen.add((where, msg))
                lines.append(f"{where}: {msg}")
        raise error(f"{what}: " + "; ".join(lines[:8]) + (" …" if len(lines) > 8 else "")) from None


def check_keywords(func, kwargs: Mapping, where: str, error: type[Exception], extra=(), skip: int = 1) -> None:
    """Refuse keywords ``func`` does not name (a ``**kw`` catch-all does not count: only the
    names in ``extra`` are then added). The first ``skip`` parameters (a metric's result
    argument) are not keywords."""
    params = inspect.signature(func).parameters
    allowed = {n for i, (n, p) in enumerate(params.items())
               if i >= skip and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} | set(extra)
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise error(f"{where}: unknown keyword(s) {unknown}; allowed: {', '.join(sorted(allowed)) or 'none'}")
