"""A neurotwin: everything needed to reproduce a personalised simulation, in one file.

A :class:`Twin` holds

* the model name and every parameter value (defaults included; per-region values as arrays),
* the connectome — its catalog name and content hash when it is an unmodified catalog dataset,
  otherwise the full arrays (weights, tract lengths, centres, labels),
* the simulation settings (duration, dt, seed(s), monitor rate, recorded variables, transient,
  normalisation, integration method),
* external drives (tES) materialised on the integration clock (spatial pattern + waveform
  samples), and the montage (electrode currents) they came from,
* fitted values with their objective scores (and the objective's description),
* provenance: project version, package versions, creation time, and a SHA-256 of the
  original run's output so :meth:`Twin.verify` can prove a bit-for-bit reproduction.

On disk it is one netCDF file (``.nc``, h5netcdf engine) or zarr store (``.zarr``): arrays as
variables, the metadata as a JSON document in the ``neurotwin`` attribute (also readable with
:func:`read_metadata` without loading arrays).
"""
from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from . import __version__, catalog
from .connectome import Connectome
from .io.files import write_dataset
from .simulate import (Drive, SimulationError, SimulationPlan, plan, run_plan, sample_drives,
                       time_grid)

__all__ = ["Twin", "TwinError", "read_metadata", "result_hash", "package_versions", "FORMAT"]

FORMAT = "neurotwin-dash/twin@1"
_SIM_KEYS = ("duration_s", "dt_ms", "seed", "sample_rate_hz", "record", "transient_s",
             "normalisation", "method")
#: simulate() options recorded in a twin only when they differ from these defaults
_NUMERICS = {"noise_rng": "numpy", "dtype": "float64", "math_mode": "default"}
_VERSIONED = ("numpy", "numba", "scipy", "xarray", "dask", "distributed", "zarr", "h5netcdf",
              "mne", "cma", "neurolib", "tvb-data")


class TwinError(ValueError):
    """A twin file or its content is not usable; the message says which field."""


def package_versions() -> dict[str, str]:
    """Versions of the packages a simulation's numbers depend on (plus Python)."""
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def result_hash(result: xr.Dataset) -> str:
    """SHA-256 over the recorded arrays (name, shape, float64 bytes) of a simulation result."""
    h = hashlib.sha256()
    for name in sorted(v for v in result.data_vars if "time" in result[v].dims):
        arr = np.ascontiguousarray(result[name].transpose(..., "time", "region").values, dtype=np.float64)
        h.update(name.encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _project_version() -> str:
    try:
        return metadata.version("neurotwin-dash")
    except metadata.PackageNotFoundError:
        return __version__


def _member_value(value, member: int, n_batch: int):
    """One member's value from simulate's params JSON (1-D lists are per member)."""
    if isinstance(value, list):
        arr = np.asarray(value, dtype=float)
        if arr.ndim == 1:
            if arr.shape[0] != n_batch:
                raise TwinError(f"parameter list of length {arr.shape[0]} does not match the batch ({n_batch})")
            return float(arr[member])
        return arr[member].copy()
    return float(value)


@dataclass
class Twin:
    """A reproducible personalised simulation (see the module notes).

    Build one with :meth:`from_result` (after a simulation) or :meth:`from_fit` (after a fit),
    save it with :meth:`save`, and rebuild the run anywhere with
    ``Twin.load(path).simulate()``.
    """

    model: str
    params: dict
    connectome: Any
    simulation: dict
    drives: list = field(default_factory=list)
    montage: dict | None = None
    fit: dict | None = None
    provenance: dict = field(default_factory=dict)
    name: str = "twin"

    # --- construction -----------------------------------------------------------------------
    @classmethod
    def from_result(cls, result: xr.Dataset, connectome=None, drive=None, member: int = 0,
                    montage=None, fit: dict | None = None, name: str = "twin", initial=None) -> "Twin":
        """Capture the run that produced ``result`` (one batch member).

        Parameters
        ----------
        result : Dataset from :func:`neurotwin_dash.simulate.simulate`
        connectome : Connectome or catalog name, optional
            The connectome object passed to ``simulate``; default: the catalog entry named in the
            result (its content hash must match).
        drive : Drive or list of Drive, optional
            The drives passed to ``simulate`` (they are not recorded in the result).
        member : int
            Which batch member to keep.
        montage : Montage or dict, optional
            Electrode currents behind the drive (``Montage.to_dict()`` or the object).
        fit : dict, optional
            ``{"values": {...}, "scores": {...}, ...}`` from a fit.
        initial : array, optional
            The state array the run started from, when it was given explicitly
            (``simulate(initial=array)``; ``(region, n_state)`` or ``(n_state,)``, the same for
            every member): recorded in the twin so that it reruns from the same state.
        """
        attrs = result.attrs
        n_batch = result.sizes.get("batch", 1)
        if not 0 <= member < n_batch:
            raise TwinError(f"member {member} outside the batch (0–{n_batch - 1})")
        raw = json.loads(attrs["params"])
        params = {k: _member_value(v, member, n_batch) for k, v in raw.items()}
        seed = attrs["seed"]
        if isinstance(seed, str):
            seed = json.loads(seed)[member]
        record = [v for v in result.data_vars if "time" in result[v].dims]
        simulation = {"duration_s": float(attrs["duration_s"]), "dt_ms": float(attrs["dt_ms"]),
                      "seed": int(seed), "sample_rate_hz": float(attrs["sample_rate_hz"]),
                      "record": record, "transient_s": float(attrs["transient_s"]),
                      "normalisation": attrs["normalisation"], "method": attrs["method"]}
        # the noise generator, float type and math mode, recorded when not the defaults (so that a twin of a
        # default run is the file it always was)
        for key, default in _NUMERICS.items():
            if attrs.get(key, default) != default:
                simulation[key] = str(attrs[key])
        started = attrs.get("initial")
        if started == "array":
            if initial is None:
                raise TwinError("initial: the run started from a user-given state array; pass it as "
                                "from_result(..., initial=array) to record it (or run with initial='random' "
                                "or 'zeros')")
            simulation["initial"] = np.asarray(initial, dtype=float).tolist()
        elif started is not None:
            simulation["initial"] = str(started)
        conn = _resolve_connectome(connectome if connectome is not None else attrs["connectome"],
                                   attrs.get("connectome_hash", ""), attrs["normalisation"])
        drives = _materialise_drives(drive, member, n_batch, simulation, conn)
        twin = cls(model=attrs["model"], params=params, connectome=conn, simulation=simulation,
                   drives=drives, montage=_montage_dict(montage), fit=_jsonable(fit), name=name)
        twin.provenance = twin._provenance(result_hash(result.isel(batch=[member])))
        return twin

    @classmethod
    def from_fit(cls, problem, fit_result, name: str = "twin", verify_run: bool = True) -> "Twin":
        """A twin of the best parameters of a fit (runs the simulation once to hash its output).

        Parameters
        ----------
        problem : neurotwin_dash.fit.FitProblem
        fit_result : neurotwin_dash.fit.FitResult
        """
        kwargs = problem.simulate_kwargs(fit_result.best_unit[None, :])
        result = run_plan(plan(**kwargs))
        fit = {"values": {k: np.asarray(v).tolist() for k, v in fit_result.best.items()},
               "scores": fit_result.scores, "loss": fit_result.loss, "method": fit_result.method,
               "evaluations": fit_result.evaluations, "generations": fit_result.generations,
               "objective": problem.objective.spec() if hasattr(problem.objective, "spec") else
               repr(problem.objective),
               "free": [dict(vars(f)) for f in problem.free]}
        return cls.from_result(result, connectome=kwargs["connectome"], fit=fit, name=name)

    def _provenance(self, output_sha256: str | None) -> dict:
        return {"format": FORMAT, "project_version": _project_version(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "packages": package_versions(),
                "platform": platform.platform(), "output_sha256": output_sha256}

    # --- running ----------------------------------------------------------------------------
    def simulate_kwargs(self, **overrides) -> dict:
        """Keyword arguments for :func:`neurotwin_dash.simulate.simulate` reproducing the run."""
        kwargs = dict(model=self.model, connectome=self.connectome,
                      params={k: (np.asarray(v) if isinstance(v, np.ndarray) else v)
                              for k, v in self.params.items()},
                      **{k: self.simulation[k] for k in _SIM_KEYS})
        kwargs.update({k: self.simulation[k] for k in _NUMERICS if k in self.simulation})
        if "initial" in self.simulation:   # absent in twins written before initial states were random
            init = self.simulation["initial"]
            kwargs["initial"] = np.asarray(init, dtype=float) if isinstance(init, list) else init
        if self.drives:
            kwargs["drive"] = [Drive(spatial=d["spatial"], waveform=d["waveform"], target=d["target"])
                               for d in self.drives]
        kwargs.update(overrides)
        return kwargs

    def plan(self, **overrides) -> SimulationPlan:
        """The :class:`~neurotwin_dash.simulate.SimulationPlan` of the twin's run (``overrides``
        change any ``simulate`` argument)."""
        return plan(**self.simulate_kwargs(**overrides))

    def simulate(self, **overrides) -> xr.Dataset:
        """Run the twin (``overrides`` change any ``simulate`` argument, e.g. ``duration_s``)."""
        kwargs = self.simulate_kwargs(**overrides)
        run_options = {k: kwargs.pop(k) for k in ("progress", "threads") if k in kwargs}
        return run_plan(plan(**kwargs), **run_options)

    def verify(self, result: xr.Dataset | None = None) -> bool:
        """True when (a fresh run of) the twin reproduces the original output bit for bit."""
        expected = self.provenance.get("output_sha256")
        if not expected:
            raise TwinError("this twin carries no output hash to verify against")
        result = self.simulate() if result is None else result
        return result_hash(result) == expected

    # --- persistence ------------------------------------------------------------------------
    def metadata(self) -> dict:
        """The JSON document stored with the arrays."""
        conn = self.connectome
        if conn is None:
            conn_meta = {"kind": "none"}
        elif isinstance(conn, str):
            conn_meta = {"kind": "catalog", "name": conn, "content_hash": _catalog_hash(conn)}
        else:
            conn_meta = {"kind": "embedded", "name": conn.name, "content_hash": conn.content_hash(),
                         "normalisation_applied": conn.ds.attrs.get("normalisation", "none"),
                         "history": conn.ds.attrs.get("history", "")}
        params = {}
        for k, v in self.params.items():
            params[k] = {"array": f"param_{k}"} if isinstance(v, np.ndarray) else float(v)
        return {
            "format": FORMAT, "name": self.name, "model": self.model, "params": params,
            "connectome": conn_meta, "simulation": self.simulation,
            "drives": [{"target": d["target"], "spatial": f"drive{k}_spatial",
                        "waveform": f"drive{k}_waveform"} for k, d in enumerate(self.drives)],
            "montage": self.montage, "fit": self.fit, "provenance": self.provenance,
        }

    def to_dataset(self) -> xr.Dataset:
        """Arrays + metadata as one xarray Dataset (what :meth:`save` writes)."""
        data = {}
        labels = None
        conn = self.connectome
        if conn is not None and not isinstance(conn, str):
            labels = np.asarray(conn.labels)
            for key in ("weights", "tract_lengths"):
                data[f"connectome_{key}"] = (("region", "region2"), conn.ds[key].values)
            data["connectome_centres"] = (("region", "axis"), conn.centres)
        n_region = len(labels) if labels is not None else None
        for k, v in self.params.items():
            if isinstance(v, np.ndarray):
                data[f"param_{k}"] = (("region",), v)
                n_region = v.shape[0]
        for k, d in enumerate(self.drives):
            data[f"drive{k}_spatial"] = (("region",), np.asarray(d["spatial"], dtype=float))
            data[f"drive{k}_waveform"] = ((f"step{k}",), np.asarray(d["waveform"], dtype=float))
        coords = {}
        if labels is None and n_region is not None:
            labels = np.asarray(_labels_of(conn, n_region))
        if labels is not None:
            coords = {"region": labels, "region2": labels.copy(), "axis": ["x", "y", "z"]}
        ds = xr.Dataset(data, coords=coords)
        ds.attrs["neurotwin"] = json.dumps(_jsonable(self.metadata()))
        return ds

    def save(self, path, overwrite: bool = False) -> Path:
        """Write the twin to ``path`` (``.nc`` netCDF, or ``.zarr``); returns the path.

        Written to a temporary file next to ``path`` and renamed into place; an existing file is
        replaced only with ``overwrite`` (see :func:`neurotwin_dash.io.files.write_dataset`)."""
        path = Path(path)
        if path.suffix not in (".zarr", ".nc", ".h5", ".netcdf"):
            raise TwinError(f"twin path {path}: use a .nc (netCDF) or .zarr suffix")
        return write_dataset(self.to_dataset(), path, overwrite=overwrite, zarr_format=2)

    @classmethod
    def load(cls, path) -> "Twin":
        """Read a twin saved by :meth:`save`; a catalog connectome must still hash the same."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"twin file {path} does not exist")
        ds = xr.open_zarr(path).load() if path.suffix == ".zarr" else \
            xr.load_dataset(path, engine="h5netcdf")
        meta = _metadata_of(ds, path)
        params = {}
        for k, v in meta["params"].items():
            params[k] = ds[v["array"]].values.copy() if isinstance(v, dict) else float(v)
        c = meta["connectome"]
        if c["kind"] == "none":
            conn = None
        elif c["kind"] == "catalog":
            conn = c["name"]
            actual = _catalog_hash(conn)
            if actual != c["content_hash"]:
                raise TwinError(f"connectome {conn!r} in the installed catalog has content hash "
                                f"{actual[:12]}…, the twin expects {c['content_hash'][:12]}… "
                                "(the dataset changed); the twin cannot be reproduced")
        else:
            conn = Connectome.from_arrays(ds["connectome_weights"].values, ds["connectome_tract_lengths"].values,
                                          ds["connectome_centres"].values, [str(s) for s in ds["region"].values],
                                          name=c["name"], source=f"twin:{path.name}")
            if conn.content_hash() != c["content_hash"]:
                raise TwinError(f"embedded connectome of {path} does not match its recorded hash")
        drives = [{"target": d["target"], "spatial": ds[d["spatial"]].values.copy(),
                   "waveform": ds[d["waveform"]].values.copy()} for d in meta["drives"]]
        return cls(model=meta["model"], params=params, connectome=conn, simulation=meta["simulation"],
                   drives=drives, montage=meta.get("montage"), fit=meta.get("fit"),
                   provenance=meta.get("provenance", {}), name=meta.get("name", "twin"))

    def __repr__(self):
        conn = self.connectome if isinstance(self.connectome, (str, type(None))) else self.connectome.name
        score = ""
        if self.fit and self.fit.get("scores"):
            score = ", scores " + ", ".join(f"{k}={v:.3g}" for k, v in self.fit["scores"].items()
                                            if isinstance(v, (int, float)))
        return (f"<Twin {self.name!r}: {self.model} on {conn}, {self.simulation['duration_s']:g} s, "
                f"seed {self.simulation['seed']}, {len(self.drives)} drive(s){score}>")


def read_metadata(path) -> dict:
    """The JSON metadata of a twin file, without loading its arrays."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"twin file {path} does not exist")
    ds = xr.open_zarr(path) if path.suffix == ".zarr" else xr.open_dataset(path, engine="h5netcdf")
    try:
        return _metadata_of(ds, path)
    finally:
        ds.close()


def _metadata_of(ds, path) -> dict:
    if "neurotwin" not in ds.attrs:
        raise TwinError(f"{path} is not a neurotwin file (no 'neurotwin' metadata attribute)")
    meta = json.loads(ds.attrs["neurotwin"])
    if meta.get("format") != FORMAT:
        raise TwinError(f"{path}: format {meta.get('format')!r} not supported (expected {FORMAT!r})")
    return meta


def _catalog_hash(name: str) -> str:
    return catalog.load_connectome(name).content_hash()


def _hashes(conn, normalisation: str) -> set[str]:
    """Content hashes a result simulated on ``conn`` may record (before/after normalisation)."""
    out = {conn.content_hash()}
    try:
        out.add(conn.normalise(normalisation).content_hash())
    except ValueError:
        pass
    return out


def _resolve_connectome(conn, expected_hash: str, normalisation: str = "none"):
    """Keep a catalog name when the data is the unmodified catalog dataset, else the object."""
    if conn is None or conn == "none":
        return None
    if isinstance(conn, str):
        if conn not in catalog.names("connectome"):
            raise TwinError(f"connectome {conn!r} is not a catalog name; pass the Connectome object")
        if expected_hash and expected_hash not in _hashes(catalog.load_connectome(conn), normalisation):
            raise TwinError(f"the result was made with a modified {conn!r} (hash {expected_hash[:12]}…); "
                            "pass the Connectome object that was simulated")
        return conn
    if expected_hash and expected_hash not in _hashes(conn, normalisation):
        raise TwinError("the connectome given is not the one the result was simulated on (content hash differs)")
    if conn.name in catalog.names("connectome") and conn.content_hash() == _catalog_hash(conn.name):
        return conn.name
    return conn


def _labels_of(conn, n_region):
    if conn is None:
        return ["node"] if n_region == 1 else [f"R{i}" for i in range(n_region)]
    if isinstance(conn, str):
        return catalog.load_connectome(conn).labels
    return conn.labels


def _materialise_drives(drive, member, n_batch, sim, conn) -> list[dict]:
    if drive is None:
        return []
    drives = [drive] if not isinstance(drive, (list, tuple)) else list(drive)
    # sampled by simulate's own function on simulate's own clock, so the replay sees the same numbers
    try:
        grid = time_grid(sim["duration_s"], sim["dt_ms"], sim["sample_rate_hz"], sim["transient_s"])
        sampled = sample_drives(drives, _labels_of(conn, 1), grid, n_batch)
    except SimulationError as exc:
        raise TwinError(str(exc)) from None
    return [{"target": d.target, "spatial": sampled.space[k, member].copy(),
             "waveform": sampled.wave[k].copy()} for k, d in enumerate(drives)]


def _montage_dict(montage):
    if montage is None or isinstance(montage, dict):
        return montage
    if hasattr(montage, "to_dict"):
        return montage.to_dict()
    return {"currents_mA": dict(montage.currents_mA), "layout": getattr(montage, "layout", None)}


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=_default)) if obj is not None else None


def _default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return repr(o)
