"""Parameter sweeps on Dask, written incrementally to a zarr store, resumable.

A sweep is declared once (a :class:`SweepSpec`, usually from YAML) and turned into

1. **samples** — a full grid, or a space-filling design from :mod:`scipy.stats.qmc`
   (scrambled Sobol, Latin hypercube) over any declared parameter: model parameters,
   network parameters (``coupling``, ``speed_m_s``, ``noise_sd``...), ``connectome_scale``
   and the tACS parameters ``stim_amplitude`` / ``stim_frequency_hz``. A parameter may apply
   to a subset of regions only (``regions: [...]``);
2. **batches** — consecutive samples, each run as *one* batched ``simulate()`` call inside one
   Dask task (numba integrates the whole batch in one kernel call);
3. **metrics** computed inside the task (so only small arrays travel back), optionally with
   the time series;
4. a **zarr store** holding an ``xarray.Dataset`` with dims ``(sample, ...)`` and every swept
   parameter as a coordinate along ``sample``. The store is created once with its full
   coordinates (``to_zarr(compute=False)``); each finished batch is written into its own
   chunk with ``to_zarr(region=...)`` and then marked done in ``batch_done``.

**Resume.** Running the same spec into the same store computes only the batches not marked
done, so a sweep whose client was killed loses at most the batches in flight. A store made
by a different spec is refused (its fingerprint is kept in the store's attributes). Each done
batch carries a checksum of its values as read back from the store (``batch_checksum``); a
resume reads every done batch again and recomputes those whose chunks are missing, unreadable
or changed (``SweepResult.repaired``).

**Overwrite.** A store's group is created with a marker attribute (:data:`STORE_MARKER`) before
anything else; ``overwrite=True`` deletes only a folder carrying it (or an older store whose
attributes hold a sweep spec), never any other folder.

**Stopping.** ``run_sweep(..., stop=event)`` with a :class:`threading.Event` ends the sweep
cleanly once the event is set (e.g. from a UI thread): no new batch starts, batches queued
on Dask are cancelled, finished ones stay in the store (``SweepResult.stopped`` is True), and
a later run with the same spec resumes with the missing batches.

**Divergence.** ``simulate`` flags members whose state left the allowed range; the store keeps
them in ``diverged`` (metrics NaN) rather than dropping them.

Example
-------
>>> spec = SweepSpec.from_yaml("spec.yaml")                      # doctest: +SKIP
>>> ds = run_sweep(spec, "sweep.zarr").dataset                  # doctest: +SKIP
>>> ds.alpha_power.where(~ds.diverged).max()                    # doctest: +SKIP
"""
from __future__ import annotations

import contextvars
import copy
import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import xarray as xr
from scipy.stats import qmc
from tqdm.auto import tqdm

from . import __version__, catalog
from .analysis import spectra
from .cluster import get_client
from .io.files import read_yaml_mapping
from .io.schema import SweepSpecSchema, check_keywords, validate
from .params import ParamSet, ParamSpec
from .models import MODELS
from .models._batch_kernel import block_width
from .models._kernel import mode_error
from .simulate import Drive, SimulationPlan, all_params, plan, simulate
from .stimulation.efield import montage_field
from .stimulation.montage import Montage
from .units import CONVENTIONS, DIMENSIONLESS, cf_unit

__all__ = [
    "SweepError", "SweepSpec", "SweepResult", "SWEEP_PARAMS", "METRICS", "SAMPLINGS",
    "register_metric", "SIMULATORS", "register_simulator", "make_samples", "batch_slices",
    "build_simulate_kwargs", "batch_plan", "run_batch", "run_sweep",
    "open_sweep", "sweep_status", "as_grid",
]

SAMPLINGS = ("grid", "sobol", "lhs", "random")

#: Parameters that belong to the sweep rather than to a model: they are turned into simulate()
#: arguments by :func:`run_batch`.
SWEEP_PARAMS = ParamSet([
    ParamSpec("connectome_scale", 1.0, 0.0, 100.0, "",
              "multiplies every structural weight after normalisation (equivalently the global coupling)"),
    ParamSpec("stim_amplitude", 0.0, 0.0, 10.0, "V/m",
              "peak normal field of the tACS pattern: the stimulation pattern is scaled by this value"),
    ParamSpec("stim_frequency_hz", 40.0, 0.0, 200.0, "Hz", "tACS frequency (0: constant, i.e. tDCS)"),
    ParamSpec("stim_phase_rad", 0.0, -2 * np.pi, 2 * np.pi, "rad", "tACS phase at t = 0"),
    ParamSpec("stim_dose", 1.0, 0.0, 10.0, "",
              "multiplier of a montage's currents (1 = as given; every scaled montage must respect "
              "the stimulator limits)"),
], owner="sweep")

#: zarr format of sweep stores: v2 is readable by every zarr implementation and its
#: consolidated metadata is part of the spec.
ZARR_FORMAT = 2
#: Group attribute written first into every sweep store: ``overwrite`` deletes only folders with it.
STORE_MARKER = "neurotwin_sweep_store"

_SIM_KEYS = ("model", "connectome", "duration_s", "dt_ms", "seed", "sample_rate_hz", "record",
             "transient_s", "normalisation", "method", "noise_rng")


class SweepError(ValueError):
    """A sweep specification or store is not usable; the message says which field and why."""


# --------------------------------------------------------------------------------------------
# specification
# --------------------------------------------------------------------------------------------

@dataclass
class SweepSpec:
    """Everything that defines a sweep (and nothing about where it runs).

    Parameters
    ----------
    model : str
        Model name (``neurotwin_dash.models.MODELS``).
    axes : mapping
        One entry per swept parameter. For ``sampling="grid"``: ``{"values": [...]}`` or
        ``{"low": a, "high": b, "num": n, "log": false}``. For space-filling samplings:
        ``{"low": a, "high": b, "log": false}`` (bounds default to the declared ones). Any
        axis may add ``"regions": [labels]`` to set the parameter in those regions only.
    sampling : {"grid", "sobol", "lhs", "random"}
        Full factorial grid, scrambled Sobol sequence, Latin hypercube, or uniform random.
    n_samples : int
        Number of samples for the space-filling samplings (ignored for grids).
    sample_seed : int
        Seed of the space-filling design.
    fixed : mapping
        Parameters held fixed for every sample (scalars or per-region lists).
    batch_size : int, optional
        Samples per Dask task (one batched ``simulate()`` call each). Not given: one block of the
        batch kernel for the model and ``dtype`` as a single-threaded worker runs it
        (:func:`default_batch_size`: 16 for Jansen–Rit in float64, 32 in float32, 8 for LaNMM), or,
        when :func:`run_sweep` resumes a store, that store's (stores made before this default
        used 8, and keep it).
    metrics : list
        Names from :data:`METRICS` or dicts ``{"name": ..., "as": output_name, **kwargs}`` (only
        keywords the metric function declares). Own metrics are functions
        ``f(result, **kwargs) -> DataArray`` registered in Python with :func:`register_metric`;
        a spec cannot name code to import.
    timeseries : bool or list of str
        Also store the recorded time series (all recorded variables, or the listed ones).
    stimulation : mapping, optional
        Spatial pattern of the tACS drive (frequency ``stim_frequency_hz``, phase
        ``stim_phase_rad``), with ``lambda_mV_per_V_m`` (default 0.2):

        * ``{"montage": {"currents_mA": {...}, ...}}`` (``Montage.to_dict()``, or a path to a
          montage JSON): the montage's normal field E_n (V/m) from
          :mod:`neurotwin_dash.stimulation.efield`, scaled per sample by ``stim_dose`` (current
          multiplier; each dose is checked against the stimulator limits); ``"head"`` chooses
          the head model of the field (``"sphere"`` default, ``"template_bem"`` or a BEM file);
        * ``{"pattern": "uniform"}``, ``{"pattern": {label: weight, ...}}`` or
          ``{"field_V_m": [per-region values]}``: scaled to a peak |value| of 1 and multiplied by
          ``stim_amplitude`` (V/m).
    simulator : str
        Name of a simulator in :data:`SIMULATORS` (default ``neurotwin_dash.simulate:simulate``);
        others are registered in Python with :func:`register_simulator`.
    seed_per_sample : bool
        ``False``: every sample uses ``seed`` (common random numbers: samples differ only by
        their parameters). ``True``: sample *i* uses ``seed + i`` (independent realisations).
        Either way a sample's numbers do not depend on the batch it falls in.
    noise_rng : {"counter", "numpy"}
        Noise generator of the simulations (``simulate(noise_rng=...)``). Default ``"counter"``:
        drawn inside the batch kernel, several times faster per simulation; ``"numpy"`` is what
        every sweep used before it existed (a store written then resumes only with
        ``noise_rng: numpy`` in its spec).
    dtype : {"float64", "float32"}
        Floating-point type of the batch kernel (``simulate(dtype=...)``). Default ``"float64"``;
        ``"float32"`` doubles the SIMD width (about twice the simulations per core) at the
        tolerances the batch-kernel tests state (peak frequency within 0.1 Hz, band power
        within 2 %). Needs the default simulator's numba backend.
    math_mode : {"default", "fast"}
        The models' exponentials (``simulate(math_mode=...)``). Default ``"default"``; ``"fast"``
        (opt-in; with ``noise_rng: counter`` and float64) uses a cheaper polynomial exp (≤ 2e-14
        relative), other numbers than the default at the same reference behaviours.
    model, connectome, duration_s, dt_ms, seed, sample_rate_hz, record, transient_s, normalisation, method
        Passed to ``simulate``.
    """

    model: str
    axes: dict
    sampling: str = "grid"
    n_samples: int | None = None
    sample_seed: int = 0
    fixed: dict = field(default_factory=dict)
    batch_size: int | None = None
    metrics: list = field(default_factory=lambda: ["peak_frequency", "alpha_power"])
    timeseries: Any = False
    stimulation: dict | None = None
    connectome: Any = "tvb76"
    duration_s: float = 10.0
    dt_ms: float = 0.1
    seed: int = 0
    seed_per_sample: bool = False
    sample_rate_hz: float = 250.0
    record: Any = None
    transient_s: float = 1.0
    normalisation: str = "max"
    method: str = "euler"
    simulator: str = "neurotwin_dash.simulate:simulate"
    noise_rng: str = "counter"
    dtype: str = "float64"
    math_mode: str = "default"

    def __post_init__(self):
        if not isinstance(self.axes, Mapping) or not self.axes:
            raise SweepError("axes: give at least one swept parameter, e.g. {'coupling': {'values': [0, 1]}}")
        self.axes = {str(k): dict(v) if isinstance(v, Mapping) else {"values": list(v)}
                     for k, v in self.axes.items()}
        msg = mode_error(self.noise_rng, self.dtype, self.math_mode)
        if msg:
            raise SweepError(msg)
        if self.sampling not in SAMPLINGS:
            raise SweepError(f"sampling {self.sampling!r} unknown; allowed: {', '.join(SAMPLINGS)}")
        if self.sampling != "grid":
            if self.n_samples is None or int(self.n_samples) < 1:
                raise SweepError(f"n_samples must be a positive integer for sampling={self.sampling!r}, "
                                 f"got {self.n_samples!r}")
            self.n_samples = int(self.n_samples)
        if self.batch_size is not None:
            if int(self.batch_size) < 1:
                raise SweepError(f"batch_size must be ≥ 1, got {self.batch_size}")
            self.batch_size = int(self.batch_size)
        for key in ("duration_s", "dt_ms", "sample_rate_hz"):
            if not float(getattr(self, key)) > 0:
                raise SweepError(f"{key} must be > 0, got {getattr(self, key)!r}")
        if not 0 <= float(self.transient_s) < float(self.duration_s):
            raise SweepError(f"transient_s must lie in [0, duration_s={self.duration_s}), got {self.transient_s}")
        if isinstance(self.metrics, (str, Mapping)):
            self.metrics = [self.metrics]
        self.metrics = list(self.metrics)
        overlap = set(self.axes) & set(self.fixed)
        if overlap:
            raise SweepError(f"parameters {sorted(overlap)} are both swept (axes) and fixed; choose one")
        if any(k.startswith("stim_") for k in list(self.axes) + list(self.fixed)) and not self.stimulation:
            raise SweepError("stim_* parameters need a 'stimulation' section giving the spatial pattern, "
                             "e.g. stimulation: {pattern: uniform}")

    # --- (de)serialisation ---
    @classmethod
    def from_dict(cls, data: Mapping) -> "SweepSpec":
        """Build from a plain mapping (as read from YAML); checked against
        :class:`~neurotwin_dash.io.schema.SweepSpecSchema` (types, unknown keys) first."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known) if isinstance(data, Mapping) else []
        if unknown:
            raise SweepError(f"unknown sweep spec keys {unknown}; allowed: {', '.join(sorted(known))}")
        if isinstance(data, Mapping) and ("model" not in data or "axes" not in data):
            raise SweepError("a sweep spec needs at least 'model' and 'axes'")
        validate(SweepSpecSchema, data, "sweep spec", SweepError)
        return cls(**copy.deepcopy(dict(data)))

    @classmethod
    def from_yaml(cls, path) -> "SweepSpec":
        """Read a YAML sweep spec (see :class:`SweepSpec` for the keys)."""
        return cls.from_dict(read_yaml_mapping(path, "sweep spec", SweepError))

    def to_dict(self) -> dict:
        """JSON-able dict; a :class:`~neurotwin_dash.connectome.Connectome` is replaced by its name + hash."""
        out = {k: copy.deepcopy(getattr(self, k)) for k in self.__dataclass_fields__}
        conn = out["connectome"]
        if conn is not None and not isinstance(conn, str):
            out["connectome"] = {"name": conn.name, "content_hash": conn.content_hash()}
        return json.loads(json.dumps(out, default=_json_default))

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON: two specs with the same fingerprint make the same sweep.
        A spec without ``batch_size`` is fingerprinted with :func:`default_batch_size` (the batch
        size a new store gets)."""
        return spec_fingerprint(self.with_batch_size().to_dict())

    def with_batch_size(self, store=None) -> "SweepSpec":
        """This spec, or, without ``batch_size``, a copy with the batch size of the sweep store at
        ``store`` if there is one, else :func:`default_batch_size`."""
        if self.batch_size is not None:
            return self
        size = _store_batch_size(store) if store is not None else None
        return dataclasses.replace(self, batch_size=size or default_batch_size(self.model, self.dtype))


def default_batch_size(model: str, dtype: str = "float64") -> int:
    """Samples per Dask task when a spec gives none: one block of the batch kernel as a worker
    (one thread) takes it for a large batch (:func:`~neurotwin_dash.models._batch_kernel.block_width`;
    fewer members leave lanes of every vector empty). 8 for a model the kernels do not know.
    Jansen–Rit tvb76, 10 s, 192 simulations on 2 workers (``bench_sweep.py``, AMD EPYC, idle): 862
    simulations/min with 8 per task, 1,060 with 16."""
    return block_width(model, dtype, 1 << 20, 1) if model in MODELS else 8


def _store_batch_size(store) -> int | None:
    """The batch size an existing sweep store was made with (None when there is no readable one)."""
    if not _store_exists(store):
        return None
    try:
        return int(_open(store, mask_and_scale=False).attrs["batch_size"])
    except Exception:  # noqa: BLE001 - unreadable: run_sweep reports it as before
        return None


def spec_fingerprint(d: dict) -> str:
    """SHA-256 of a spec's canonical JSON (sorted keys, no spaces).

    ``noise_rng: "numpy"``, ``dtype: "float64"`` and ``math_mode: "default"`` are left out, so every spec written before
    those options keeps its fingerprint (and a resumed store still matches its spec).
    """
    d = dict(d)
    if d.get("noise_rng") == "numpy":
        del d["noise_rng"]
    if d.get("dtype") == "float64":
        del d["dtype"]
    if d.get("math_mode") == "default":
        del d["math_mode"]
    text = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


# --------------------------------------------------------------------------------------------
# parameters and samples
# --------------------------------------------------------------------------------------------

def _declared_params(model: str) -> ParamSet:
    """Model, network and sweep parameters: everything an axis may name (the simulation's
    parameters and their defaults come from :func:`~neurotwin_dash.simulate.all_params`)."""
    return all_params(model) + SWEEP_PARAMS


def _axis_values(name: str, axis: dict, spec: ParamSpec, sampling: str) -> dict:
    allowed = {"values", "low", "high", "num", "log", "regions"}
    extra = set(axis) - allowed
    if extra:
        raise SweepError(f"axis {name!r}: unknown keys {sorted(extra)}; allowed: {sorted(allowed)}")
    log = bool(axis.get("log", False))
    if "values" in axis:
        if sampling != "grid":
            raise SweepError(f"axis {name!r}: 'values' lists are for sampling='grid'; give low/high "
                             f"for sampling={sampling!r}")
        vals = spec.check(np.asarray(axis["values"], dtype=float).ravel(), where=f"axis {name!r}")
        if vals.size == 0:
            raise SweepError(f"axis {name!r}: 'values' is empty")
        return {"values": vals}
    low = float(axis.get("low", spec.low))
    high = float(axis.get("high", spec.high))
    spec.check([low, high], where=f"axis {name!r}")
    if not low < high:
        raise SweepError(f"axis {name!r}: low ({low}) must be < high ({high})")
    if log and low <= 0:
        raise SweepError(f"axis {name!r}: log spacing needs low > 0, got {low}")
    if sampling == "grid":
        num = axis.get("num")
        if num is None or int(num) < 1:
            raise SweepError(f"axis {name!r}: grid axes need 'values' or low/high with 'num' ≥ 1")
        vals = np.geomspace(low, high, int(num)) if log else np.linspace(low, high, int(num))
        return {"values": vals}
    return {"low": low, "high": high, "log": log}


def make_samples(spec: SweepSpec, params: ParamSet | None = None) -> xr.Dataset:
    """The sweep's parameter sets as a Dataset with one variable per swept parameter, dim ``sample``.

    Grids enumerate the Cartesian product (first axis slowest). Sobol uses a scrambled
    sequence (``random_base2`` when ``n_samples`` is a power of two, which keeps its balance
    properties); LHS a Latin hypercube; both from :mod:`scipy.stats.qmc` seeded by
    ``sample_seed``, mapped linearly (or logarithmically with ``log: true``) onto the bounds.
    Every value is checked against the parameter's declared bounds.
    """
    params = params if params is not None else _declared_params(spec.model)
    names = list(spec.axes)
    for name in names:
        params[name]  # unknown -> ParamError listing the known names
    axes = {n: _axis_values(n, spec.axes[n], params[n], spec.sampling) for n in names}
    if spec.sampling == "grid":
        grids = np.meshgrid(*[axes[n]["values"] for n in names], indexing="ij")
        cols = {n: g.ravel() for n, g in zip(names, grids)}
        n = grids[0].size
    else:
        d, n = len(names), spec.n_samples
        if spec.sampling == "sobol":
            eng = qmc.Sobol(d, scramble=True, seed=spec.sample_seed)
            m = int(round(math.log2(n)))
            unit = eng.random_base2(m) if 2 ** m == n else eng.random(n)
        elif spec.sampling == "lhs":
            unit = qmc.LatinHypercube(d, seed=spec.sample_seed).random(n)
        else:
            unit = np.random.default_rng(spec.sample_seed).random((n, d))
        cols = {}
        for j, name in enumerate(names):
            a = axes[name]
            if a["log"]:
                cols[name] = np.exp(np.log(a["low"]) + unit[:, j] * (np.log(a["high"]) - np.log(a["low"])))
            else:
                cols[name] = a["low"] + unit[:, j] * (a["high"] - a["low"])
    for name in names:
        params[name].check(cols[name], where=f"axis {name!r}")
    ds = xr.Dataset({name: ("sample", np.asarray(cols[name], dtype=float),
                            {"units": cf_unit(params[name].unit), "doc": params[name].doc,
                             **({"regions": list(spec.axes[name]["regions"])}
                                if "regions" in spec.axes[name] else {})})
                     for name in names},
                    coords={"sample": ("sample", np.arange(n), {"units": DIMENSIONLESS})})
    ds.attrs.update(sampling=spec.sampling, n_samples=n)
    return ds


def batch_slices(n_samples: int, batch_size: int) -> list[slice]:
    """Consecutive ``slice`` objects covering ``range(n_samples)`` in steps of ``batch_size``."""
    return [slice(a, min(a + batch_size, n_samples)) for a in range(0, n_samples, batch_size)]


def as_grid(ds: xr.Dataset) -> xr.Dataset:
    """Reshape a grid sweep's ``sample`` dim into one dim per swept parameter."""
    names = json.loads(ds.attrs["swept"])
    if ds.attrs.get("sampling") != "grid":
        raise SweepError("as_grid needs a sweep with sampling='grid'")
    return ds.set_index(sample=names).unstack("sample")


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------

#: name -> function(result Dataset, ``**kwargs``) -> DataArray with a ``batch`` dim.
METRICS: dict[str, Callable] = {}


def _adder(registry: dict, name: str):
    """A decorator storing its function in ``registry`` under ``name``."""
    def deco(func):
        registry[name] = func
        return func
    return deco


def register_metric(name: str):
    """Decorator adding a metric to :data:`METRICS` (a function ``f(result, **kwargs) -> DataArray``)."""
    return _adder(METRICS, name)


#: name -> simulator function (keyword arguments of ``simulate``) a spec may name.
SIMULATORS: dict[str, Callable] = {}


def register_simulator(name: str):
    """Decorator adding a simulator to :data:`SIMULATORS` (called with ``simulate``'s keywords)."""
    return _adder(SIMULATORS, name)


_DEFAULT_SIMULATOR = "neurotwin_dash.simulate:simulate"
#: Keywords the package metrics pass on to :func:`neurotwin_dash.analysis.spectra.welch`.
_WELCH_KEYWORDS = ("window_s", "overlap", "fmin", "fmax", "detrend")


def _resolve(name: str, registry: Mapping[str, Callable], what: str) -> Callable:
    """The registered function ``name``; a spec never names code to import."""
    if what == "simulator" and name == _DEFAULT_SIMULATOR and name not in registry:
        return simulate
    if name not in registry:
        raise SweepError(f"{what} {name!r} unknown; known: {', '.join(sorted(registry)) or 'none'} "
                         f"(own {what}s are functions registered in Python with register_{what}(); "
                         "'module:function' names are not imported)")
    return registry[name]


def _metric_entries(spec: SweepSpec, registry: Mapping[str, Callable] | None = None
                    ) -> list[tuple[str, Callable, dict]]:
    registry = METRICS if registry is None else registry
    out = []
    for i, entry in enumerate(spec.metrics):
        if isinstance(entry, str):
            name, kwargs = entry, {}
        else:
            kwargs = dict(entry)
            name = kwargs.pop("name", None)
            if name is None:
                raise SweepError(f"metrics[{i}]: entry {entry!r} needs a 'name'")
        label = kwargs.pop("as", name)
        func = _resolve(name, registry, "metric")
        check_keywords(func, kwargs, f"metrics[{i}] ({name})", SweepError,
                       extra=_WELCH_KEYWORDS if func.__module__ == __name__ else ())
        out.append((label, func, kwargs))
    labels = [e[0] for e in out]
    if len(set(labels)) != len(labels):
        raise SweepError(f"metric output names must be unique, got {labels}; use 'as' to rename")
    return out


def _first_output(res: xr.Dataset, variable: str | None) -> xr.DataArray:
    if variable is not None:
        if variable not in res:
            raise SweepError(f"metric variable {variable!r} not recorded; recorded: "
                             f"{[v for v in res.data_vars if 'time' in res[v].dims]}")
        return res[variable]
    for name, var in res.data_vars.items():
        if "time" in var.dims:
            return var
    raise SweepError("the simulation result has no time series to compute metrics from")


#: Welch PSDs of the batch in hand, one per (result, variable, keywords): ``run_batch`` sets it
#: so that metrics asking for the same spectrum (the default peak frequency and alpha power do)
#: share one computation — about 4 % of a Jansen–Rit tvb76 batch of 8 × 10 s on one thread.
_PSD_MEMO: contextvars.ContextVar = contextvars.ContextVar("sweep_psd_memo", default=None)


def _psd(res, variable, kw):
    memo = _PSD_MEMO.get()
    if memo is None:
        return spectra.welch(_first_output(res, variable), **kw)
    key = (id(res), variable, repr(sorted(kw.items())))
    if key not in memo:
        # the entry holds ``res`` itself: while the memo lives its id cannot pass to another
        # object (a user metric's temporary subset, say) and find this spectrum
        memo[key] = (res, spectra.welch(_first_output(res, variable), **kw))
    return memo[key][1]


def _band_power(res, band, variable=None, reduce="mean", **kw):
    p = spectra.band_power(_psd(res, variable, kw), {"band": tuple(band)}).isel(band=0, drop=True)
    return _reduce(p, reduce)


def _reduce(da: xr.DataArray, how: str | None):
    if how in (None, "none") or "region" not in da.dims:
        return da
    if how not in ("mean", "median", "max", "min"):
        raise SweepError(f"reduce={how!r}; allowed: none, mean, median, max, min")
    return getattr(da, how)("region")


@register_metric("peak_frequency")
def metric_peak_frequency(res, band=(2.0, 45.0), variable=None, reduce="median", **kw):
    """Spectral peak frequency (Hz) in ``band`` of the Welch PSD, per region or reduced."""
    return _reduce(spectra.peak_frequency(_psd(res, variable, kw), tuple(band)), reduce)


@register_metric("alpha_power")
def metric_alpha_power(res, variable=None, reduce="mean", **kw):
    """Alpha (8–13 Hz) band power (integral of the Welch PSD), per region or reduced."""
    return _band_power(res, (8.0, 13.0), variable, reduce, **kw)


@register_metric("gamma_power")
def metric_gamma_power(res, band=(30.0, 50.0), variable=None, reduce="mean", **kw):
    """Low-gamma (30–50 Hz by default) band power, per region or reduced."""
    return _band_power(res, tuple(band), variable, reduce, **kw)


@register_metric("band_power")
def metric_band_power(res, band, variable=None, reduce="mean", **kw):
    """Power in any ``band`` = (low, high) Hz."""
    return _band_power(res, tuple(band), variable, reduce, **kw)


@register_metric("std")
def metric_std(res, variable=None, reduce="mean"):
    """Standard deviation over time of the recorded output (mV), a saturation/activity check."""
    return _reduce(_first_output(res, variable).std("time"), reduce)


@register_metric("mean")
def metric_mean(res, variable=None, reduce="mean"):
    """Mean over time of the recorded output."""
    return _reduce(_first_output(res, variable).mean("time"), reduce)


# --------------------------------------------------------------------------------------------
# one batch (runs on a Dask worker)
# --------------------------------------------------------------------------------------------

def _connectome(conn):
    if conn is None or not isinstance(conn, str) or conn.lower() == "none":
        return None if isinstance(conn, str) else conn
    return catalog.load_connectome(conn)


def _region_index(conn, labels: Sequence[str], where: str) -> np.ndarray:
    if conn is None:
        raise SweepError(f"{where}: region subsets need a connectome")
    return np.array([conn.index(str(lab)) for lab in labels], dtype=int)


def _stim_montage(spec: SweepSpec):
    m = spec.stimulation["montage"]
    if isinstance(m, (str, os.PathLike)):
        return Montage.load(m)
    return Montage.from_dict(m)


def _stim_pattern(spec: SweepSpec, conn) -> np.ndarray:
    st = dict(spec.stimulation or {})
    n = conn.n_regions if conn is not None else 1
    if "montage" in st:
        if conn is None:
            raise SweepError("stimulation.montage needs a connectome with region centres")
        return montage_field(_stim_montage(spec), connectome=conn,
                             head=st.get("head") or "sphere")["E_n"].values.astype(float)
    if "field_V_m" in st:
        pat = np.asarray(st["field_V_m"], dtype=float)
        if pat.shape != (n,):
            raise SweepError(f"stimulation.field_V_m needs {n} values (one per region), got shape {pat.shape}")
    else:
        pattern = st.get("pattern", "uniform")
        if pattern == "uniform":
            pat = np.ones(n)
        elif isinstance(pattern, Mapping):
            pat = np.zeros(n)
            idx = _region_index(conn, list(pattern), "stimulation.pattern")
            pat[idx] = [float(v) for v in pattern.values()]
        else:
            raise SweepError("stimulation.pattern must be 'uniform' or {region: weight}; "
                             "or give stimulation.field_V_m")
    peak = np.max(np.abs(pat))
    if not peak > 0:
        raise SweepError("stimulation pattern is zero everywhere")
    return pat / peak


def build_simulate_kwargs(spec: SweepSpec, batch: Mapping[str, np.ndarray], sample_index=None) -> dict:
    """Turn one batch of sampled values into ``simulate()`` keyword arguments.

    Sweep-level parameters are mapped onto the simulator: ``connectome_scale`` multiplies
    ``coupling`` (u = K·Σ W S is linear in the weights, so scaling W after normalisation and
    scaling K are the same model; an unset coupling is the model's default from
    :func:`~neurotwin_dash.simulate.all_params`, as in ``simulate``); ``stim_*`` build one
    :class:`~neurotwin_dash.simulate.Drive` per distinct frequency/phase in the batch, each
    non-zero only for its members.
    """
    declared = all_params(spec.model)
    conn = _connectome(spec.connectome)
    n_batch = len(next(iter(batch.values())))
    n_region = conn.n_regions if conn is not None else 1
    params: dict[str, Any] = {k: np.asarray(v, dtype=float) if not np.isscalar(v) else float(v)
                              for k, v in spec.fixed.items()}
    sweep_vals = {s.name: np.full(n_batch, s.default) for s in SWEEP_PARAMS}
    for k in list(params):
        if k in SWEEP_PARAMS:
            sweep_vals[k] = np.broadcast_to(np.asarray(params.pop(k), dtype=float), (n_batch,)).copy()
    for name, values in batch.items():
        values = np.asarray(values, dtype=float)
        if name in SWEEP_PARAMS:
            sweep_vals[name] = values
            continue
        regions = spec.axes.get(name, {}).get("regions")
        if regions:
            idx = _region_index(conn, regions, f"axis {name!r}")
            base = params.get(name)
            if base is None:
                base = declared[name].default
            full = np.empty((n_batch, n_region))
            full[:] = np.asarray(base, dtype=float)
            full[:, idx] = values[:, None]
            params[name] = full
        else:
            params[name] = values
    scale = sweep_vals["connectome_scale"]
    if np.any(scale != 1.0):
        k = np.asarray(params.get("coupling", declared["coupling"].default), dtype=float)
        params["coupling"] = (k.T * scale).T if k.ndim == 2 else k * scale
    _make_batch_explicit(params, set(batch) - set(SWEEP_PARAMS) | {"coupling"}, n_batch, n_region,
                         declared)
    kwargs = {key: getattr(spec, key) for key in _SIM_KEYS}
    if spec.dtype != "float64":
        kwargs["dtype"] = spec.dtype     # only when asked: registered simulators need not know it
    if spec.math_mode != "default":
        kwargs["math_mode"] = spec.math_mode
    kwargs["connectome"] = conn
    kwargs["params"] = params
    if spec.seed_per_sample:
        if sample_index is None:
            raise SweepError("seed_per_sample needs the sample indices of the batch")
        kwargs["seed"] = [int(spec.seed) + int(i) for i in sample_index]
    if spec.stimulation:
        kwargs["drive"] = _stim_drives(spec, conn, sweep_vals, n_batch)
    return kwargs


def _make_batch_explicit(params: dict, per_member: set, n_batch: int, n_region: int, declared) -> None:
    """Make the batch size unambiguous for ``simulate``.

    A ``(n,)`` array is read as one value per member unless ``n`` equals the region count; and
    a batch whose only varying parameters are sweep-level ones (e.g. tACS dose) carries no
    batch axis at all. Per-member values are therefore given as ``(batch, region)`` when
    ``n_batch == n_region``, and ``coupling`` is spelled out per member when nothing else is.
    """
    if n_batch == 1:
        return
    has_batch = False
    for name in per_member:
        if name not in params:
            continue
        v = np.asarray(params[name], dtype=float)
        if v.ndim == 1 and v.shape[0] == n_batch:
            has_batch = True
            if n_batch == n_region:
                params[name] = np.repeat(v[:, None], n_region, axis=1)
        elif v.ndim == 2:
            has_batch = True
    if not has_batch:
        k = np.asarray(params.get("coupling", declared["coupling"].default), dtype=float)
        if k.ndim == 0 and n_batch != n_region:
            params["coupling"] = np.full(n_batch, float(k))
        else:
            full = np.empty((n_batch, n_region))
            full[:] = k
            params["coupling"] = full


def batch_plan(spec: SweepSpec | Mapping, batch: Mapping[str, np.ndarray],
               sample_index=None) -> SimulationPlan:
    """The :class:`~neurotwin_dash.simulate.SimulationPlan` of one batch (what :func:`run_batch`
    simulates with the default simulator)."""
    if not isinstance(spec, SweepSpec):
        spec = SweepSpec.from_dict(spec)
    return plan(**build_simulate_kwargs(spec, batch, sample_index))


def _stim_drives(spec, conn, vals, n_batch):
    lam = float(spec.stimulation.get("lambda_mV_per_V_m", 0.2))
    if not 0 <= lam <= 1:
        raise SweepError(f"stimulation.lambda_mV_per_V_m must lie in [0, 1] mV per V/m, got {lam}")
    pattern = _stim_pattern(spec, conn)
    freq, phase = vals["stim_frequency_hz"], vals["stim_phase_rad"]
    if "montage" in spec.stimulation:
        montage = _stim_montage(spec)
        for d in np.unique(vals["stim_dose"]):
            montage.scaled(float(d))        # raises MontageError naming the limit a dose breaks
        amp = vals["stim_dose"]             # E_n is already in V/m at the montage's currents
    else:
        amp = vals["stim_amplitude"]
    drives = []
    for f, ph in sorted(set(zip(freq.tolist(), phase.tolist()))):
        members = (freq == f) & (phase == ph) & (amp != 0)
        if not members.any():
            continue
        spatial = np.where(members[:, None], amp[:, None] * lam * pattern[None, :], 0.0)
        drives.append(Drive(spatial=spatial, waveform=_Sine(f, ph), target="membrane"))
    return drives or None


@dataclass(frozen=True)
class _Sine:
    """sin(2π f t + φ) as a picklable callable (a constant 1 when f = 0, i.e. tDCS)."""

    frequency_hz: float
    phase_rad: float = 0.0

    def __call__(self, t_s):
        t = np.asarray(t_s, dtype=float)
        if self.frequency_hz == 0:
            return np.full_like(t, np.sin(self.phase_rad) if self.phase_rad else 1.0)
        return np.sin(2 * np.pi * self.frequency_hz * t + self.phase_rad)


def run_batch(spec: SweepSpec | Mapping, batch: Mapping[str, Sequence[float]],
              sample_index: Sequence[int] | None = None, functions: Mapping | None = None) -> xr.Dataset:
    """Simulate one batch and compute its metrics (the function each Dask task runs).

    Parameters
    ----------
    spec : SweepSpec or its dict
    batch : mapping of swept parameter name -> values (one per batch member)
    sample_index : sequence of int, optional
        The members' sample numbers (needed with ``seed_per_sample``).
    functions : mapping, optional
        ``{"simulator": {name: f}, "metrics": {name: f}}``: the registered functions the spec
        names, sent along by :func:`run_sweep` (a Dask worker's registries only hold the
        package's own); default :data:`SIMULATORS` and :data:`METRICS` of this process.

    Returns
    -------
    xarray.Dataset
        Metrics (dims ``batch`` [, ``region`` ...]), ``diverged`` (``batch``), the time series
        when requested, and attribute ``seconds`` (wall time of the batch).
    """
    if not isinstance(spec, SweepSpec):
        spec = SweepSpec.from_dict(spec)
    t0 = time.perf_counter()
    functions = functions or {}
    simulate = _resolve(spec.simulator, functions.get("simulator", SIMULATORS), "simulator")
    res = simulate(**build_simulate_kwargs(spec, batch, sample_index))
    out = {}
    memo = _PSD_MEMO.set({})
    try:
        for label, func, kwargs in _metric_entries(spec, functions.get("metrics")):
            da = func(res, **kwargs)
            if not isinstance(da, xr.DataArray) or "batch" not in da.dims:
                raise SweepError(f"metric {label!r} must return a DataArray with a 'batch' dim")
            out[label] = da.drop_vars([c for c in da.coords if c not in da.dims], errors="ignore")
    finally:
        _PSD_MEMO.reset(memo)
    if "diverged" in res:
        diverged = res["diverged"].values.astype(bool)
    else:
        diverged = np.zeros(res.sizes["batch"], dtype=bool)
    for label in out:
        if np.issubdtype(out[label].dtype, np.floating) and diverged.any():
            out[label] = out[label].where(~xr.DataArray(diverged, dims="batch"))
    ts = spec.timeseries
    if ts:
        names = [v for v in res.data_vars if "time" in res[v].dims] if ts is True else list(ts)
        for v in names:
            if v in out:
                raise SweepError(f"time series {v!r} clashes with a metric of the same name")
            out[v] = res[v].drop_vars([c for c in res[v].coords if c not in res[v].dims])
    ds = xr.Dataset(out)
    ds["diverged"] = ("batch", diverged, {"units": DIMENSIONLESS,
                                          "doc": "state became non-finite or exceeded the model's bound"})
    ds = ds.drop_vars("batch", errors="ignore")
    ds.attrs["seconds"] = time.perf_counter() - t0
    return ds


# --------------------------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------------------------

@dataclass
class SweepResult:
    """What :func:`run_sweep` did.

    Attributes
    ----------
    dataset : xarray.Dataset
        The whole store, lazily opened.
    computed : list of int
        Batch indices computed by this call.
    skipped : list of int
        Batch indices found done in the store and not recomputed.
    n_batches : int
    seconds : float
        Wall time of this call.
    stopped : bool
        True when the ``stop`` event ended the call before every batch was done.
    repaired : list of int
        Batches marked done whose chunks were missing, unreadable or changed; recomputed.
    """

    dataset: xr.Dataset
    computed: list
    skipped: list
    n_batches: int
    seconds: float
    stopped: bool = False
    repaired: list = field(default_factory=list)


def _store_exists(store) -> bool:
    p = Path(store)
    return p.is_dir() and ((p / "zarr.json").exists() or (p / ".zgroup").exists())


def _open(store, **kw) -> xr.Dataset:
    """Open a sweep store; its consolidated metadata may be missing while it is being created."""
    try:
        return xr.open_zarr(store, consolidated=True, **kw)
    except (KeyError, FileNotFoundError, ValueError):
        return xr.open_zarr(store, consolidated=False, **kw)


def sweep_status(store) -> dict:
    """Read a store's progress without loading data: ``{"done": [...], "pending": [...], ...}``."""
    if not _store_exists(store):
        raise FileNotFoundError(f"no sweep store at {store}")
    ds = _open(store, mask_and_scale=False)
    done = np.asarray(ds["batch_done"].values) == 1
    return {"n_batches": int(done.size), "done": np.flatnonzero(done).tolist(),
            "pending": np.flatnonzero(~done).tolist(), "fingerprint": ds.attrs.get("fingerprint")}


def open_sweep(store, only_done: bool = True) -> xr.Dataset:
    """Open a sweep store; with ``only_done`` the samples of unfinished batches are dropped."""
    ds = _open(store)
    if only_done:
        raw = _open(store, mask_and_scale=False)["batch_done"].values == 1
        keep = np.zeros(ds.sizes["sample"], dtype=bool)
        for b, sl in enumerate(batch_slices(ds.sizes["sample"], int(ds.attrs["batch_size"]))):
            keep[sl] = raw[b]
        ds = ds.isel(sample=np.flatnonzero(keep))
    return ds


def _template(first: xr.Dataset, samples: xr.Dataset, spec: SweepSpec, n_batches: int) -> xr.Dataset:
    import dask.array as da  # ~1 s to import; only a store's template needs it
    n = samples.sizes["sample"]
    bs = spec.batch_size
    variables = {}
    for name, var in first.data_vars.items():
        dims = tuple("sample" if d == "batch" else d for d in var.dims)
        shape = tuple(n if d == "batch" else var.sizes[d] for d in var.dims)
        chunks = tuple(bs if d == "sample" else s for d, s in zip(dims, shape))
        fill = False if var.dtype == bool else np.nan
        dtype = bool if var.dtype == bool else np.float64
        variables[name] = (dims, da.full(shape, fill, chunks=chunks, dtype=dtype), var.attrs)
    variables["batch_done"] = (("sweep_batch",), da.zeros(n_batches, chunks=1, dtype=np.int8),
                               {"units": DIMENSIONLESS, "doc": "1 when the batch's values are written (resume skips it)"})
    variables["batch_seconds"] = (("sweep_batch",), da.full(n_batches, np.nan, chunks=1),
                                  {"units": "s", "doc": "wall time of the batch on its worker"})
    variables["batch_checksum"] = (("sweep_batch",), da.zeros(n_batches, chunks=1, dtype=np.uint64),
                                   {"units": DIMENSIONLESS, "doc": "BLAKE2b-64 of the batch's values as read back from the store "
                                           "(a resume recomputes a batch whose values no longer match)"})
    coords = {"sample": ("sample", np.arange(n), {"units": DIMENSIONLESS}),
              "sweep_batch": ("sweep_batch", np.arange(n_batches), {"units": DIMENSIONLESS})}
    for name in samples.data_vars:
        coords[name] = ("sample", samples[name].values, samples[name].attrs)
    for name, c in first.coords.items():
        if "batch" not in c.dims:
            coords[name] = c
    ds = xr.Dataset(variables, coords=coords)
    ds.attrs.update(
        Conventions=CONVENTIONS, **{STORE_MARKER: spec.fingerprint()}, fingerprint=spec.fingerprint(), spec=json.dumps(spec.to_dict()), sampling=spec.sampling,
        swept=json.dumps(list(spec.axes)), batch_size=bs, model=spec.model,
        created=time.strftime("%Y-%m-%dT%H:%M:%S"), version=_version(),
    )
    return ds


def _version() -> str:
    return __version__


def _batch_digest(ds: xr.Dataset, sl: slice) -> int:
    """BLAKE2b-64 of the values of samples ``sl`` of every per-sample variable of an opened store
    (raises when a chunk cannot be read)."""
    h = hashlib.blake2b(digest_size=8)
    for name in sorted(v for v in ds.data_vars if "sample" in ds[v].dims):
        h.update(name.encode())
        h.update(np.ascontiguousarray(ds[name].isel(sample=sl).values).tobytes())
    return int.from_bytes(h.digest(), "little")


def _write_batch(store, b: int, sl: slice, result: xr.Dataset, back: xr.Dataset) -> None:
    """Write batch ``b`` (samples ``sl``) into ``store``, then its marker and the checksum of the
    values read back from disk. ``back``: the store opened once by the caller without dask
    (``chunks=None``: a slice read goes straight to zarr; its arrays' shapes never change after
    creation and every read goes to disk). Reading the checksum back through dask, a compute per
    variable on a freshly opened store, cost the client ~0.5 s per batch beside two busy workers
    (bench_sweep: the workers idle 18–22 % of the wall time)."""
    part = result.rename({"batch": "sample"}) if "batch" in result.dims else result
    keep = [v for v in part.data_vars if "sample" in part[v].dims]
    part = part[keep].drop_vars([c for c in part.coords], errors="ignore")
    part = part.assign_coords(sample=np.arange(sl.start, sl.stop))
    part.drop_vars("sample").to_zarr(store, region={"sample": sl}, mode="r+")
    marker = {"batch_done": ("sweep_batch", np.array([1], dtype=np.int8)),
              "batch_seconds": ("sweep_batch", [float(result.attrs.get("seconds", np.nan))])}
    if "batch_checksum" in back:          # stores made before checksums resume without them
        marker["batch_checksum"] = ("sweep_batch", np.array([_batch_digest(back, sl)], dtype=np.uint64))
    # The marker is written after the data: a batch killed between the two is simply redone.
    xr.Dataset(marker).to_zarr(store, region={"sweep_batch": slice(b, b + 1)}, mode="r+")


def _damaged_batches(store, done: set, slices: list) -> list[int]:
    """Done batches whose chunks are missing, unreadable or no longer match their checksum."""
    ds = _open(store)
    sums = ds["batch_checksum"].values if "batch_checksum" in ds else None
    bad = []
    for b in sorted(done):
        try:
            digest = _batch_digest(ds, slices[b])
        except Exception:  # noqa: BLE001 - any read failure (codec, missing file...) means damaged
            bad.append(b)
            continue
        if sums is not None and int(sums[b]) != digest:
            bad.append(b)
    return bad


def _is_sweep_store(path: Path) -> bool:
    """A folder this module created: the marker in its group attributes (read as plain JSON, so a
    store whose arrays are damaged still qualifies), or (older stores) a sweep spec there."""
    for meta in (path / ".zattrs", path / "zarr.json"):
        try:
            attrs = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        attrs = attrs.get("attributes", attrs) if meta.name == "zarr.json" else attrs
        if isinstance(attrs, dict) and (STORE_MARKER in attrs or ("fingerprint" in attrs and "spec" in attrs)):
            return True
    return False


def run_sweep(spec: SweepSpec | Mapping | str | os.PathLike, store, client=None, resume: bool = True,
              overwrite: bool = False, progress: bool = True, max_in_flight: int | None = None,
              retries: int = 2, stop=None) -> SweepResult:
    """Run a sweep on Dask into a zarr store, skipping batches already done there.

    Parameters
    ----------
    spec : SweepSpec, mapping or path to a YAML spec
    store : path
        zarr directory. Created on the first finished batch; reused on resume.
    client : None, scheduler address, distributed.Client or ``"sync"``
        ``None``: :func:`neurotwin_dash.cluster.get_client` (a LocalCluster). ``"sync"`` runs the
        batches in this process, one after the other (debugging, tiny sweeps).
    resume : bool
        Continue an existing store made by the same spec (else an existing store raises).
    overwrite : bool
        Delete an existing store first — only a sweep store (with :data:`STORE_MARKER`, or an
        older store whose attributes hold a sweep spec); any other folder raises.
    progress : bool
        Show a tqdm progress bar over batches.
    max_in_flight : int, optional
        Batches submitted at once (default 2 per worker thread); more are submitted as
        results arrive, so memory stays bounded for long sweeps.
    retries : int
        Times Dask retries a batch whose worker died or raised.
    stop : threading.Event, optional
        Set it (from another thread) to stop cleanly: no further batch starts, batches still
        queued or running on Dask are cancelled (a synchronous run finishes the batch in
        progress), finished batches stay written and marked done. Rerunning resumes.

    Returns
    -------
    SweepResult
    """
    t0 = time.perf_counter()
    if isinstance(spec, (str, os.PathLike)):
        spec = SweepSpec.from_yaml(spec)
    elif not isinstance(spec, SweepSpec):
        spec = SweepSpec.from_dict(spec)
    store = str(store)
    spec = spec.with_batch_size(None if overwrite else store)
    samples = make_samples(spec)
    # unknown metric/simulator names fail here, before any compute; the registered functions
    # travel with each task (a worker process only knows the package's own)
    used = {id(f) for _, f, _ in _metric_entries(spec)}
    functions = {"metrics": {name: f for name, f in METRICS.items() if id(f) in used},
                 "simulator": {spec.simulator: _resolve(spec.simulator, SIMULATORS, "simulator")}}
    slices = batch_slices(samples.sizes["sample"], spec.batch_size)
    n_batches = len(slices)
    if overwrite and Path(store).exists():
        if Path(store).is_symlink() or not Path(store).is_dir() or not _is_sweep_store(Path(store)):
            raise SweepError(f"{store} is not a sweep store made by neurotwin sweep (no {STORE_MARKER}); "
                             "--overwrite only replaces those: nothing was deleted, choose another --out")
        shutil.rmtree(store)
    done: set[int] = set()
    repaired: list[int] = []
    if _store_exists(store):
        if not resume:
            raise SweepError(f"store {store} exists; pass resume=True to continue it or overwrite=True")
        try:
            status = sweep_status(store)
        except Exception as exc:  # noqa: BLE001 - any unreadable store is reported the same way
            raise SweepError(f"store {store} cannot be read ({type(exc).__name__}: {exc}); it was probably "
                             "interrupted while being created: rerun with overwrite=True (--overwrite), "
                             "which replaces it if neurotwin sweep created it") from None
        if status["fingerprint"] != spec.fingerprint():
            hint = ("" if spec.noise_rng == "numpy" else
                    " (a store written before sweeps drew their noise with noise_rng='counter' "
                    "resumes with noise_rng: numpy in the spec)")
            raise SweepError(f"store {store} was made by a different sweep spec; use another store "
                             f"or overwrite=True{hint}")
        done = set(status["done"])
        repaired = _damaged_batches(store, done, slices)
        done -= set(repaired)
    elif Path(store).exists() and any(Path(store).iterdir()):
        raise SweepError(f"{store} exists and is not a sweep store; choose another --out")
    pending = [b for b in range(n_batches) if b not in done]
    created = _store_exists(store)
    spec_dict = spec.to_dict() if isinstance(spec.connectome, (str, type(None))) else spec
    batch_values = {b: {name: samples[name].values[slices[b]] for name in samples.data_vars}
                    for b in pending}
    bar = _progress(n_batches, len(done), progress)
    computed: list[int] = []
    stopped = False

    back = None                            # the store opened once for the checksums' read-back

    def handle(b, result):
        nonlocal created, back
        if not created:
            # the marker first: a store killed while its metadata is written can still be replaced
            import zarr  # only when a store is created (xarray imports it lazily too)
            zarr.open_group(store, mode="a", zarr_format=ZARR_FORMAT,
                            attributes={STORE_MARKER: spec.fingerprint()})
            _template(result, samples, spec, n_batches).to_zarr(store, compute=False, mode="a",
                                                                zarr_format=ZARR_FORMAT)
            created = True
        if back is None:
            back = _open(store, chunks=None)
        _write_batch(store, b, slices[b], result, back=back)
        computed.append(b)
        bar.update(1)

    try:
        if client == "sync":
            for b in pending:
                if stop is not None and stop.is_set():
                    stopped = True
                    break
                handle(b, run_batch(spec_dict, batch_values[b], _range(slices[b]), functions))
        elif pending:
            from distributed import as_completed  # ~0.5 s; only a cluster run needs it
            client = get_client(client)
            if max_in_flight is None:
                threads = sum(client.nthreads().values()) or 1
                max_in_flight = 2 * threads
            key = spec.fingerprint()[:16]
            queue = list(pending)

            # the spec travels with every task (a few kB): no scattered data that a dying
            # worker could take with it
            def submit(b):
                fut = client.submit(run_batch, spec_dict, batch_values[b], _range(slices[b]), functions,
                                    retries=retries,
                                    key=f"sweep-{key}-batch-{b}", pure=False)
                fut.batch_index = b
                return fut

            first = [submit(queue.pop(0)) for _ in range(min(max_in_flight, len(queue)))]
            in_flight = set(first)
            ac = as_completed(first)
            try:
                while not ac.is_empty():
                    ready = _next_finished(ac, stop)
                    if ready is None:                   # stop requested
                        stopped = True
                        break
                    for fut in ready:
                        in_flight.discard(fut)
                        b = fut.batch_index
                        result = fut.result()
                        fut.release()
                        handle(b, result)
                        if queue and not (stop is not None and stop.is_set()):
                            nxt = submit(queue.pop(0))
                            in_flight.add(nxt)
                            ac.add(nxt)
            finally:
                if in_flight:                       # stopped or failed: nothing left running
                    client.cancel(list(in_flight))
                    ac.clear()
    finally:
        bar.close()
    ds = _open(store) if _store_exists(store) else xr.Dataset()
    stopped = stopped or (stop is not None and stop.is_set() and len(done) + len(computed) < n_batches)
    return SweepResult(dataset=ds, computed=sorted(computed), skipped=sorted(done),
                       n_batches=n_batches, seconds=time.perf_counter() - t0, stopped=stopped,
                       repaired=repaired)


def _next_finished(ac, stop, poll_s: float = 0.05):
    """Futures of ``ac`` that have finished; ``None`` as soon as ``stop`` is set."""
    if stop is None:
        return ac.next_batch(block=True)
    while not stop.is_set():
        if ac.has_ready():
            return ac.next_batch(block=False)
        stop.wait(poll_s)
    return None


def _range(sl: slice) -> list[int]:
    return list(range(sl.start, sl.stop))


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _progress(total, initial, enabled):
    if not enabled:
        return _NoBar()
    return tqdm(total=total, initial=initial, unit="batch", desc="sweep")
