"""Fits declared in YAML (what ``neurotwin fit spec.yaml`` runs).

Two kinds of spec::

    # 1. the HCP FC personalisation (neurotwin_dash.fit.hcp)
    problem: hcp
    hcp: {duration_s: 310, subject: null, keep_fraction: 0.2, fcd_weight: 0.0, per_region_input: false}
    method: cmaes            # or de
    generations: 10
    popsize: 12
    seed: 0
    x0: {coupling: 6.0, x_ext: 1.0, noise_sd: 0.1, speed_m_s: 6.0}
    sigma0: 0.1

    # 2. any model / connectome / objective
    problem: custom
    model: jansen_rit
    connectome: tvb76
    duration_s: 4.0
    transient_s: 1.0
    sample_rate_hz: 250
    noise_rng: counter       # optional: the batch kernel's generator (faster; default numpy)
    fixed: {coupling: 5.0}
    free:
      - {name: p, low: 120, high: 300}
      - {name: noise_sd, low: 1, high: 100, log: true}
    objective:
      - {term: AlphaPeakError, target_hz: 10.0, weight: 1.0}
      - {term: LogPSDDistance, target: {file: eeg_psd.nc, variable: psd}, weight: 0.5}
      - {term: FCCorrelation, target: {catalog: hcp80_fc, variable: fc_group}, signal: raw}
      - {term: healthy}                         # the healthy-dynamics library

Targets are read from netCDF files (``{file, variable}``) or catalog datasets
(``{catalog, variable}``).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path
from typing import Mapping

import numpy as np
import xarray as xr

from .. import catalog
from ..cluster import add_cluster_arguments, client_from_arguments
from ..connectome import Connectome
from ..io.files import read_yaml_mapping, write_dataset, write_text
from ..io.schema import FitSpecSchema, check_keywords, validate
from ..simulate import all_params, plan, run_plan
from ..twin import Twin
from . import objectives as obj_mod
from .hcp import hcp_fc_problem, structural_baseline_r
from .optimizers import FitError, FitProblem, FreeParam, fit

__all__ = ["problem_from_spec", "run_fit_spec", "load_fit_spec", "add_fit_parser", "add_export_parser",
           "simulate_twin_cli"]

_TERMS = {"FCCorrelation": obj_mod.FCCorrelation, "FCDKS": obj_mod.FCDKS,
          "LogPSDDistance": obj_mod.LogPSDDistance, "AlphaPeakError": obj_mod.AlphaPeakError,
          "GammaPower": obj_mod.GammaPower, "InRange": obj_mod.InRange}
_RUN_KEYS = ("method", "generations", "popsize", "seed", "x0", "sigma0")
_PROBLEM_KEYS = ("model", "connectome", "duration_s", "dt_ms", "seed", "sample_rate_hz", "record",
                 "transient_s", "normalisation", "method_sim", "noise_rng", "fixed", "free", "objective")


def load_fit_spec(path) -> dict:
    """Read a YAML fit spec into a dict (relative target files resolved against its folder).

    The spec is checked against :class:`~neurotwin_dash.io.schema.FitSpecSchema` (types, unknown
    keys refused, each error naming its field)."""
    spec = read_yaml_mapping(path, "fit spec", FitError)
    validate(FitSpecSchema, spec, f"fit spec {path}", FitError)
    spec["_base"] = str(Path(path).parent)
    return spec


def _target(value, base):
    if isinstance(value, Mapping):
        if "file" in value:
            f = Path(value["file"])
            f = f if f.is_absolute() else Path(base or ".") / f
            if not f.exists():
                raise FileNotFoundError(f"objective target file {f} does not exist")
            ds = xr.load_dataset(f)
            var = value.get("variable") or next(iter(ds.data_vars))
            if var not in ds:
                raise FitError(f"objective target {f}: no variable {var!r}; has {list(ds.data_vars)}")
            return ds[var]
        if "catalog" in value:
            ds = catalog.load(value["catalog"])
            return ds[value["variable"]] if "variable" in value else ds
        raise FitError(f"objective target {dict(value)}: give {{file, variable}} or {{catalog, variable}}")
    return value


def _objective(entries, model, base) -> obj_mod.Objective:
    if not entries:
        raise FitError("objective: give at least one term")
    terms = []
    for i, entry in enumerate(entries):
        e = dict(entry)
        name = e.pop("term", None)
        if name == "healthy":
            unknown = sorted(set(e) - {"fcd", "weight"})
            if unknown:
                raise FitError(f"objective[{i}] (healthy): unknown keyword(s) {unknown}; allowed: fcd, weight")
            terms.extend(obj_mod.healthy_objective(model, fcd=bool(e.get("fcd", False)),
                                                   weight=float(e.get("weight", 1.0))).terms)
            continue
        if name not in _TERMS:
            raise FitError(f"objective[{i}]: term {name!r} unknown; allowed: {', '.join(_TERMS)}, healthy")
        check_keywords(_TERMS[name], e, f"objective[{i}] ({name})", FitError, skip=0)
        if "target" in e:
            e["target"] = _target(e["target"], base)
        if "band" in e:
            e["band"] = tuple(e["band"])
        terms.append(_TERMS[name](**e))
    return obj_mod.Objective(terms)


def problem_from_spec(spec: Mapping) -> FitProblem:
    """Build the :class:`FitProblem` a spec describes (``problem: hcp`` or ``custom``)."""
    validate(FitSpecSchema, {k: v for k, v in dict(spec).items() if k != "_base"}, "fit spec", FitError)
    spec = dict(spec)
    kind = spec.get("problem", "custom")
    base = spec.get("_base")
    if kind == "hcp":
        opts = dict(spec.get("hcp") or {})
        if "free" in spec:
            opts["free"] = [FreeParam(**f) for f in spec["free"]]
        if "fixed" in spec:
            opts["fixed"] = spec["fixed"]
        problem = hcp_fc_problem(**opts)
        return dataclasses.replace(problem, noise_rng=spec["noise_rng"]) if spec.get("noise_rng") else problem
    if kind != "custom":
        raise FitError(f"problem {kind!r} unknown; allowed: hcp, custom")
    for key in ("model", "free", "objective"):
        if key not in spec:
            raise FitError(f"a custom fit spec needs {key!r}")
    kwargs = {k: copy.deepcopy(spec[k]) for k in _PROBLEM_KEYS if k in spec and k not in ("objective", "method_sim")}
    if "method_sim" in spec:
        kwargs["method"] = spec["method_sim"]
    kwargs["free"] = [FreeParam(**f) for f in spec["free"]]
    kwargs["objective"] = _objective(spec["objective"], spec["model"], base)
    if "seed" in kwargs and "sim_seed" in spec:
        kwargs["seed"] = spec["sim_seed"]
    return FitProblem(**kwargs)


def run_fit_spec(spec: Mapping, out_dir, client=None, progress: bool = True, twin: bool = True):
    """Run a fit spec into ``out_dir``: ``checkpoint.json`` (resumable), ``history.nc``,
    ``result.json`` and (with ``twin``) ``twin.nc`` — the best parameters as a neurotwin."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    problem = problem_from_spec(spec)
    run = {k: spec[k] for k in _RUN_KEYS if k in spec}
    res = fit(problem, client=client, checkpoint=out / "checkpoint.json", progress=progress, **run)
    # the fit folder is this command's own, resumable output: its files are replaced atomically
    write_dataset(res.history, out / "history.nc", overwrite=True)
    summary = {"best": {k: np.asarray(v).tolist() for k, v in res.best.items()}, "loss": res.loss,
               "scores": res.scores, "evaluations": res.evaluations, "generations": res.generations,
               "computed_generations": res.computed_generations, "seconds": res.seconds,
               "method": res.method}
    if spec.get("problem") == "hcp":
        summary["structural_baseline_r"] = structural_baseline_r((spec.get("hcp") or {}).get("subject"))
    write_text(out / "result.json", json.dumps(summary, indent=2, default=float), overwrite=True)
    if twin:
        Twin.from_fit(problem, res, name=spec.get("name", "fit")).save(out / "twin.nc", overwrite=True)
    return res, summary


# --------------------------------------------------------------------------------------------
# command line: `neurotwin fit`, `neurotwin export`, `neurotwin simulate --twin`
# (declared here so the shared cli.py only registers them)
# --------------------------------------------------------------------------------------------

def add_fit_parser(sub):
    """Declare ``neurotwin fit SPEC --out DIR [--scheduler ADDRESS]``."""
    p = sub.add_parser("fit", help="fit model parameters to data (YAML spec) with DE or CMA-ES on Dask",
                       description="Run a fit spec (see neurotwin_dash.fit.specs) into a folder: "
                                   "checkpoint.json (re-running resumes), history.nc, result.json, twin.nc.")
    p.add_argument("spec", help="YAML fit spec")
    p.add_argument("--out", required=True, help="output folder")
    add_cluster_arguments(p)
    p.set_defaults(func=_fit_cli)


def _fit_cli(args):
    spec = load_fit_spec(args.spec)
    res, summary = run_fit_spec(spec, args.out, client=client_from_arguments(args),
                                progress=not args.no_progress)
    scores = ", ".join(f"{k} {v:.4g}" for k, v in res.scores.items()
                       if not k.startswith("loss") and k != "diverged")
    base = summary.get("structural_baseline_r")
    extra = f" (log-weight baseline r {base:.3f})" if base is not None else ""
    print(f"{args.out}: best loss {res.loss:.4g}; {scores}{extra}; {res.evaluations} evaluations, "
          f"{len(res.computed_generations)} generation(s) computed now")


def add_export_parser(sub):
    """Declare ``neurotwin export --out FILE (--fit DIR | simulation options)``."""
    p = sub.add_parser("export", help="export a neurotwin file (one simulation, reproducible bit for bit)",
                       description="Export a neurotwin: from a fit folder (--fit) or from a simulation "
                                   "given on the command line.")
    p.add_argument("--out", required=True, help="twin file (.nc or .zarr)")
    p.add_argument("--fit", default=None, metavar="DIR", help="a `neurotwin fit` output folder")
    p.add_argument("--model", default="jansen_rit")
    p.add_argument("--connectome", default="tvb76", help="catalog name, connectome .nc, or 'none'")
    p.add_argument("--duration", type=float, default=10.0, help="simulated seconds (transient included)")
    p.add_argument("--dt", type=float, default=0.1, help="integration step, ms")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="model or network parameter (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-rate", type=float, default=1000.0, help="monitor rate, Hz")
    p.add_argument("--transient", type=float, default=0.0, help="initial seconds not recorded")
    p.add_argument("--normalisation", default="max", help="connectome weight normalisation")
    p.add_argument("--name", default=None, help="name stored in the twin")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_export_cli)


def _export_cli(args):
    if args.fit:
        src = Path(args.fit) / "twin.nc"
        if not src.exists():
            raise FileNotFoundError(f"{src} not found: is {args.fit} a `neurotwin fit` output folder?")
        twin = Twin.load(src)
        if args.name:
            twin.name = args.name
    else:
        params = all_params(args.model).parse_assignments(args.set)
        conn = args.connectome
        if conn.endswith(".nc") and Path(conn).exists():
            conn = Connectome.open(conn)
        conn = None if conn == "none" else conn
        result = run_plan(plan(args.model, conn, duration_s=args.duration, dt_ms=args.dt, params=params,
                               seed=args.seed, sample_rate_hz=args.sample_rate,
                               transient_s=args.transient, normalisation=args.normalisation))
        twin = Twin.from_result(result, connectome=conn, name=args.name or "twin")
    path = twin.save(args.out, overwrite=args.overwrite)
    print(f"wrote {path}: {twin!r}")


def simulate_twin_cli(args) -> int:
    """``neurotwin simulate --twin FILE --out OUT``: re-run a twin and check its output hash."""
    twin = Twin.load(args.twin)
    t0 = time.perf_counter()
    ds = twin.simulate(progress=not getattr(args, "no_progress", False))
    seconds = time.perf_counter() - t0
    out = write_dataset(ds, args.out, overwrite=getattr(args, "overwrite", False))
    same = twin.verify(ds) if twin.provenance.get("output_sha256") else None
    note = {True: "reproduces the exported run bit for bit", False: "DIFFERS from the exported run",
            None: "no reference hash to compare"}[same]
    print(f"wrote {out}: twin {twin.name!r} ({twin.model}); {note}; {seconds:.1f} s")
    return 0 if same is not False else 1
