"""Fit a whole-brain model's free parameters with differential evolution or CMA-ES on Dask.

A :class:`FitProblem` names the free parameters (each with bounds, optionally log-scaled
and optionally one value per region), the fixed simulation settings and an
:class:`~neurotwin_dash.fit.objectives.Objective`. :func:`fit` then runs

* **differential evolution** — :func:`scipy.optimize.differential_evolution` with
  ``vectorized=True, updating="deferred"`` (Storn & Price 1997), so every generation is one
  call with the whole population, or
* **CMA-ES** — :class:`cma.CMAEvolutionStrategy` (Hansen & Ostermeier 2001) by ask/tell,

and evaluates each generation as **one** batched Dask submission: the population is split into
``n_workers`` chunks, each one batched ``simulate()`` call plus the objective, all submitted by
a single ``client.map``.

**Checkpoint / resume.** Both optimizers are deterministic for a given ``seed`` and the
objective is deterministic in the parameters (every simulation uses the problem's seed), so a
fit is checkpointed as the table of evaluated parameter sets and their losses, written
atomically after every generation as JSON (:func:`write_checkpoint`; never pickle, which would
run code from a file anyone with write access to the output folder could replace; Python's
float repr round-trips, so resumed losses are bit-identical). Resuming replays the optimizer from the start: every
generation already in the checkpoint is answered from it (no simulation) and the run continues
exactly where it stopped — the same result as an uninterrupted fit.

**Stopping.** ``fit(..., stop=event)`` with a :class:`threading.Event` ends the fit cleanly
once the event is set (e.g. from a UI thread): no further generation starts, the tasks of the
generation in flight on Dask are cancelled, and the result (``FitResult.stopped``) holds the
evaluations so far, which are in the checkpoint; the same call again resumes from there.

Parameters are searched in the unit cube; :meth:`FitProblem.decode` maps them to physical
values (linearly, or logarithmically for ``log=True``).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import xarray as xr
from scipy.optimize import differential_evolution
from scipy.stats import qmc
from tqdm.auto import tqdm

from .. import catalog
from ..cluster import get_client
from ..models._kernel import mode_error
from ..simulate import SimulationPlan, all_params, plan, run_plan

__all__ = ["FitError", "FreeParam", "FitProblem", "FitResult", "evaluate_population", "fit",
           "METHODS", "read_checkpoint", "write_checkpoint", "CHECKPOINT_FORMAT"]

METHODS = ("de", "cmaes")

_SIM_KEYS = ("model", "connectome", "duration_s", "dt_ms", "seed", "sample_rate_hz", "record",
             "transient_s", "normalisation", "method")


class FitError(ValueError):
    """A fit problem or checkpoint is not usable; the message names the field."""


#: ``format`` key of a fit checkpoint (JSON); any other content is refused.
CHECKPOINT_FORMAT = "neurotwin-fit-checkpoint/1"


def write_checkpoint(path, meta: Mapping, rows: list[dict]) -> None:
    """Write a fit checkpoint (JSON) atomically: temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": CHECKPOINT_FORMAT, "meta": dict(meta),
           "rows": [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r.items()} for r in rows]}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        tmp.write_text(json.dumps(doc, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))
        os.replace(tmp, path)  # atomic: a kill leaves the old or the new file
    finally:
        if tmp.exists():
            tmp.unlink()


def read_checkpoint(path) -> dict:
    """Read a checkpoint of :func:`write_checkpoint`: ``{"meta": ..., "rows": [...]}`` with each
    row's ``unit`` as a float array.

    Raises
    ------
    FitError
        The file is not a JSON checkpoint of this format (e.g. an old pickle, which is never
        loaded: unpickling a crafted file runs code).
    """
    path = Path(path)
    raw = path.read_bytes()
    try:
        doc = json.loads(raw.decode("utf-8"))
        ok = isinstance(doc, dict) and doc.get("format") == CHECKPOINT_FORMAT
    except (UnicodeDecodeError, json.JSONDecodeError):
        ok = False
    if not ok:
        kind = "a pickle file (never loaded: it could run code)" if raw[:1] == b"\x80" else "not a fit checkpoint"
        raise FitError(f"checkpoint {path} is {kind}; expected JSON with format {CHECKPOINT_FORMAT!r}. "
                       "Delete it or choose another path to start the fit afresh")
    try:
        rows = [dict(r, unit=np.asarray(r["unit"], dtype=float), generation=int(r["generation"]))
                for r in doc["rows"]]
        meta = dict(doc["meta"])
    except (KeyError, TypeError, ValueError) as exc:
        raise FitError(f"checkpoint {path} is damaged ({type(exc).__name__}: {exc}); delete it or "
                       "choose another path") from None
    return {"meta": meta, "rows": rows}


class _Stopped(Exception):
    """Raised inside the optimizer loop when the ``stop`` event is set (caught by :func:`fit`)."""


@dataclass(frozen=True)
class FreeParam:
    """One free parameter of a fit.

    Parameters
    ----------
    name : str
        A declared model or network parameter (e.g. ``"coupling"``, ``"noise_sd"``, ``"p"``,
        ``"speed_m_s"``).
    low, high : float
        Search bounds (inside the declared bounds).
    log : bool
        Search ``log(value)`` uniformly (for scale parameters spanning decades).
    regions : None, "all" or list of str
        ``None``: one global value. ``"all"`` or labels: one value per listed region (e.g.
        per-region excitability), the others keep the fixed/default value.
    """

    name: str
    low: float
    high: float
    log: bool = False
    regions: Any = None

    def __post_init__(self):
        if not (np.isfinite(self.low) and np.isfinite(self.high) and self.low < self.high):
            raise FitError(f"free parameter {self.name!r}: need finite low < high, got "
                           f"[{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise FitError(f"free parameter {self.name!r}: log=True needs low > 0, got {self.low}")

    def to_unit(self, value):
        v = np.asarray(value, dtype=float)
        if self.log:
            return (np.log(v) - np.log(self.low)) / (np.log(self.high) - np.log(self.low))
        return (v - self.low) / (self.high - self.low)

    def from_unit(self, u):
        u = np.clip(np.asarray(u, dtype=float), 0.0, 1.0)
        if self.log:
            return np.exp(np.log(self.low) + u * (np.log(self.high) - np.log(self.low)))
        return self.low + u * (self.high - self.low)


@dataclass
class FitProblem:
    """What to fit: model, connectome, free parameters, fixed settings and the objective.

    Parameters
    ----------
    model : str
        Model name.
    free : list of FreeParam (or dicts with its fields)
    objective : Objective
        :class:`~neurotwin_dash.fit.objectives.Objective` mapping a simulation result to losses.
    connectome : str or Connectome
    fixed : mapping
        Parameters held fixed (scalars or per-region arrays).
    duration_s, dt_ms, seed, sample_rate_hz, record, transient_s, normalisation, method
        Passed to ``simulate``. One seed for all evaluations keeps the objective deterministic
        (common random numbers), which makes comparisons between candidates fair and lets a
        checkpointed fit resume exactly.
    noise_rng : {"numpy", "counter"}
        The noise generator (``simulate(noise_rng=...)``). ``"numpy"`` (default) keeps the losses,
        checkpoints and twins of earlier fits; ``"counter"`` draws inside the batch kernel, its
        simulations about 2.5× faster (JR tvb76, batch of 64: 0.0162 → 0.0063 s per run per simulated s
        on 2 threads), with other noise (a checkpoint of one is refused by the other).
    """

    model: str
    free: list
    objective: Any
    connectome: Any = "tvb76"
    fixed: dict = field(default_factory=dict)
    duration_s: float = 10.0
    dt_ms: float = 0.1
    seed: int = 0
    sample_rate_hz: float = 250.0
    record: Any = None
    transient_s: float = 1.0
    normalisation: str = "max"
    method: str = "euler"
    noise_rng: str = "numpy"

    def __post_init__(self):
        msg = mode_error(self.noise_rng, "float64", "default")
        if msg:
            raise FitError(msg)
        self.free = [f if isinstance(f, FreeParam) else FreeParam(**dict(f)) for f in self.free]
        if not self.free:
            raise FitError("free: give at least one free parameter")
        names = [f.name for f in self.free]
        if len(set(names)) != len(names):
            raise FitError(f"free parameters must be unique, got {names}")
        clash = set(names) & set(self.fixed)
        if clash:
            raise FitError(f"parameters {sorted(clash)} are both free and fixed")
        declared = self.declared()
        for f in self.free:
            declared[f.name].check([f.low, f.high], where=f"free parameter {f.name!r}")
        self._layout = None

    # --- parameter space ---
    def declared(self):
        """ParamSet of the model and network parameters (:func:`~neurotwin_dash.simulate.all_params`)."""
        return all_params(self.model)

    def _conn(self):
        conn = self.connectome
        if isinstance(conn, str):
            return None if conn.lower() == "none" else catalog.load_connectome(conn)
        return conn

    def layout(self) -> list[tuple[FreeParam, np.ndarray | None]]:
        """(param, region indices or None) per free parameter, in unit-vector order."""
        if self._layout is None:
            out = []
            conn = None
            for f in self.free:
                if f.regions is None:
                    out.append((f, None))
                    continue
                conn = conn or self._conn()
                if conn is None:
                    raise FitError(f"free parameter {f.name!r}: per-region values need a connectome")
                labels = conn.labels if f.regions == "all" else list(f.regions)
                out.append((f, np.array([conn.index(s) for s in labels], dtype=int)))
            self._layout = out
        return self._layout

    @property
    def names(self) -> list[str]:
        """One name per dimension of the search space (``p[lV1]`` for per-region values)."""
        conn = None
        out = []
        for f, idx in self.layout():
            if idx is None:
                out.append(f.name)
            else:
                conn = conn or self._conn()
                out.extend(f"{f.name}[{conn.labels[i]}]" for i in idx)
        return out

    @property
    def n_dim(self) -> int:
        return len(self.names)

    def decode(self, unit) -> dict[str, np.ndarray]:
        """Unit-cube rows (pop, n_dim) → simulate ``params`` ((pop,) or (pop, region) arrays)."""
        U = np.atleast_2d(np.asarray(unit, dtype=float))
        if U.shape[1] != self.n_dim:
            raise FitError(f"expected {self.n_dim} columns ({', '.join(self.names)}), got {U.shape[1]}")
        pop = U.shape[0]
        params: dict[str, Any] = {k: np.asarray(v, dtype=float) for k, v in self.fixed.items()}
        col = 0
        for f, idx in self.layout():
            if idx is None:
                params[f.name] = f.from_unit(U[:, col])
                col += 1
            else:
                n_region = self._conn().n_regions
                base = params.get(f.name, self.declared()[f.name].default)
                full = np.empty((pop, n_region))
                full[:] = np.asarray(base, dtype=float)
                full[:, idx] = f.from_unit(U[:, col:col + len(idx)])
                params[f.name] = full
                col += len(idx)
        return params

    def encode(self, values: Mapping[str, Any]) -> np.ndarray:
        """Physical values of the free parameters → a unit-cube vector (inverse of :meth:`decode`)."""
        out = []
        for f, idx in self.layout():
            v = np.asarray(values[f.name], dtype=float)
            if idx is None:
                out.append(np.atleast_1d(f.to_unit(v)).ravel()[:1])
            else:
                v = np.broadcast_to(v, (self._conn().n_regions,)) if v.ndim else np.full(len(idx), float(v))
                out.append(f.to_unit(v[idx] if v.shape[0] != len(idx) else v))
        return np.concatenate(out)

    def simulate_kwargs(self, unit) -> dict:
        """``simulate()`` keyword arguments for a batch of unit-cube rows."""
        kwargs = {k: getattr(self, k) for k in _SIM_KEYS}
        kwargs["connectome"] = self._conn()
        kwargs["params"] = self.decode(unit)
        kwargs["noise_rng"] = self.noise_rng
        return kwargs

    def plan(self, unit) -> SimulationPlan:
        """The :class:`~neurotwin_dash.simulate.SimulationPlan` of a batch of unit-cube rows
        (what :func:`evaluate_population` simulates)."""
        return plan(**self.simulate_kwargs(unit))

    def fingerprint(self) -> str:
        """Hash of everything that changes the losses (a checkpoint from another problem is refused)."""
        conn = self.connectome
        state = {k: getattr(self, k) for k in _SIM_KEYS}
        state["connectome"] = conn if isinstance(conn, (str, type(None))) else conn.content_hash()
        state["free"] = [vars(f) | {"regions": f.regions} for f in self.free]
        state["fixed"] = {k: np.asarray(v).tolist() for k, v in self.fixed.items()}
        state["objective"] = self.objective.fingerprint() if hasattr(self.objective, "fingerprint") \
            else repr(self.objective)
        if self.noise_rng != "numpy":        # left out by default: earlier checkpoints still match
            state["noise_rng"] = self.noise_rng
        text = json.dumps(state, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_layout"] = None
        return state


def evaluate_population(problem: FitProblem, unit) -> xr.Dataset:
    """Simulate a batch of candidates in one ``simulate()`` call and score them.

    This is the function each Dask task of a generation runs.

    Returns
    -------
    xarray.Dataset
        ``loss`` (member,) and one variable per objective term, NaN-free: diverged members
        get ``inf`` loss (recorded in ``diverged``).
    """
    U = np.atleast_2d(np.asarray(unit, dtype=float))
    res = run_plan(problem.plan(U))
    scores = problem.objective.evaluate(res)
    scores = scores.rename({"batch": "member"}) if "batch" in scores.dims else scores
    diverged = res["diverged"].values.astype(bool) if "diverged" in res else np.zeros(len(U), bool)
    loss = scores["loss"].values.astype(float)
    loss = np.where(diverged | ~np.isfinite(loss), np.inf, loss)
    scores["loss"] = ("member", loss)
    scores["diverged"] = ("member", diverged)
    return scores.drop_vars([c for c in scores.coords], errors="ignore")


@dataclass
class FitResult:
    """Outcome of :func:`fit`.

    Attributes
    ----------
    best : dict
        Physical values of the best parameters (per-region ones as arrays).
    best_unit : ndarray
        The same in the unit cube.
    loss : float
        Best loss.
    scores : dict
        Objective terms at the best parameters (e.g. ``fc_r``).
    history : xarray.Dataset
        Every evaluation: ``unit`` (evaluation, dim), ``loss``, terms, ``generation``.
    generations : int
    evaluations : int
        Evaluations in the history (cached or computed).
    computed_generations : list of int
        Generations simulated by this call (the others came from the checkpoint).
    seconds : float
    method : str
    stopped : bool
        True when the ``stop`` event ended the fit early (``best`` is then the best so far,
        empty with NaN ``loss`` if nothing was evaluated).
    """

    best: dict
    best_unit: np.ndarray
    loss: float
    scores: dict
    history: xr.Dataset
    generations: int
    evaluations: int
    computed_generations: list
    seconds: float
    method: str
    stopped: bool = False


class _Evaluator:
    """Evaluates generations on Dask, answering from (and appending to) the checkpoint."""

    def __init__(self, problem, client, checkpoint, n_chunks, progress, fingerprint, method, seed,
                 stop=None):
        self.problem = problem
        self.stop = stop
        self.client = client
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.n_chunks = n_chunks
        self.progress = progress
        self.meta = {"fingerprint": fingerprint, "method": method, "seed": seed}
        self.cache: dict[bytes, dict] = {}
        self.rows: list[dict] = []
        self.generation = 0
        self.computed: list[int] = []
        if self.checkpoint and self.checkpoint.exists():
            state = read_checkpoint(self.checkpoint)
            if state["meta"] != self.meta:
                raise FitError(f"checkpoint {self.checkpoint} belongs to another fit "
                               f"({state['meta']['method']}, seed {state['meta']['seed']}, or a "
                               "different problem); use a new checkpoint path")
            self.rows = state["rows"]
            for row in self.rows:
                self.cache[row["unit"].tobytes()] = row

    def __call__(self, U: np.ndarray) -> np.ndarray:
        U = np.ascontiguousarray(np.atleast_2d(U), dtype=float)
        gen = self.generation
        missing = [i for i, u in enumerate(U) if u.tobytes() not in self.cache]
        if missing and self._stopping():
            raise _Stopped
        if missing:
            scores = self._compute(U[missing])
            for k, i in enumerate(missing):
                row = {"unit": U[i].copy(), "generation": gen}
                row.update({v: float(scores[v].values[k]) for v in scores.data_vars})
                self.cache[U[i].tobytes()] = row
                self.rows.append(row)
            self.computed.append(gen)
            self._save()
        self.generation += 1
        return np.array([self.cache[u.tobytes()]["loss"] for u in U])

    def _compute(self, U):
        if self.client == "sync":
            return evaluate_population(self.problem, U)
        chunks = [c for c in np.array_split(U, min(self.n_chunks, len(U))) if len(c)]
        # the problem travels with each task (no scattered data a dying worker could lose)
        futures = self.client.map(evaluate_population, [self.problem] * len(chunks), chunks,
                                  pure=False, retries=2)
        if self.stop is not None:
            while not all(f.done() for f in futures):
                if self.stop.wait(0.05):
                    self.client.cancel(futures)
                    raise _Stopped
        parts = self.client.gather(futures)
        return xr.concat(parts, dim="member")

    def _stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def _save(self):
        if self.checkpoint:
            write_checkpoint(self.checkpoint, self.meta, self.rows)

    def history(self) -> xr.Dataset:
        names = self.problem.names
        if not self.rows:
            return xr.Dataset(coords={"dim": names})
        keys = [k for k in self.rows[0] if k not in ("unit",)]
        data = {k: ("evaluation", np.array([r.get(k, np.nan) for r in self.rows])) for k in keys}
        data["unit"] = (("evaluation", "dim"), np.array([r["unit"] for r in self.rows]))
        return xr.Dataset(data, coords={"dim": names, "evaluation": np.arange(len(self.rows))})


def fit(problem: FitProblem, method: str = "cmaes", generations: int = 10, popsize: int = 16,
        seed: int = 0, client=None, checkpoint=None, x0=None, sigma0: float = 0.3,
        n_chunks: int | None = None, progress: bool = True, stop=None) -> FitResult:
    """Minimise ``problem.objective`` over the free parameters.

    Parameters
    ----------
    problem : FitProblem
    method : {"cmaes", "de"}
        CMA-ES (:mod:`cma`) or differential evolution (:mod:`scipy.optimize`).
    generations : int
        Generations after the initial population (DE) / ask-tell iterations (CMA-ES).
    popsize : int
        Candidates per generation (DE: the population size, at least 5, started from a seeded
        Latin hypercube).
    seed : int
        Optimizer seed (the simulations use ``problem.seed``).
    client : None, address, Client or ``"sync"``
        Where generations run (default: :func:`neurotwin_dash.cluster.get_client`).
    checkpoint : path, optional
        File updated after every generation; an existing one is resumed.
    x0 : mapping, optional
        Start (CMA-ES mean; for DE added to the initial population) in physical units.
    sigma0 : float
        CMA-ES initial step size in the unit cube.
    n_chunks : int, optional
        Dask tasks per generation (default: number of worker threads).
    progress : bool
        Show a tqdm bar over generations.
    stop : threading.Event, optional
        Set it (from another thread) to end the fit cleanly before the next generation
        (cancelling the Dask tasks of the one in flight); the checkpoint keeps every finished
        generation, so the same call resumes.

    Returns
    -------
    FitResult
    """
    if method not in METHODS:
        raise FitError(f"method {method!r} unknown; allowed: {', '.join(METHODS)}")
    if int(generations) < 1:
        raise FitError(f"generations must be ≥ 1, got {generations}")
    if int(popsize) < 2:
        raise FitError(f"popsize must be ≥ 2, got {popsize}")
    t0 = time.perf_counter()
    if client != "sync":
        client = get_client(client)
        if n_chunks is None:
            n_chunks = max(1, sum(client.nthreads().values()))
    n_chunks = n_chunks or 1
    d = problem.n_dim
    u0 = None if x0 is None else np.clip(problem.encode(x0), 0.0, 1.0)
    ev = _Evaluator(problem, client, checkpoint, n_chunks, progress, problem.fingerprint(), method, seed,
                    stop=stop)
    stopped = False
    bar = _bar(generations + (1 if method == "de" else 0), progress)
    try:
        if method == "cmaes":
            import cma  # ~3 s to import; only CMA-ES fits need it
            rng = np.random.default_rng(seed)
            opts = {"bounds": [0.0, 1.0], "popsize": int(popsize), "seed": np.nan, "verbose": -9,
                    "randn": lambda *shape: rng.standard_normal(shape), "maxiter": int(generations),
                    "tolfun": 0, "tolflatfitness": 10 ** 9, "tolfunhist": 0, "tolstagnation": 10 ** 9}
            es = cma.CMAEvolutionStrategy(u0 if u0 is not None else np.full(d, 0.5), sigma0, opts)
            for _ in range(int(generations)):
                X = np.clip(np.asarray(es.ask()), 0.0, 1.0)
                es.tell(list(X), ev(X).tolist())
                bar.update(1)
        else:

            def func(x):  # scipy's vectorized convention: x is (n_dim, S)
                out = ev(np.asarray(x).T)
                bar.update(1)
                return out

            # an explicit Latin-hypercube start fixes the population size to exactly `popsize`
            init = qmc.LatinHypercube(d, seed=seed).random(max(5, int(popsize)))
            if u0 is not None:
                init[0] = u0
            differential_evolution(func, [(0.0, 1.0)] * d, maxiter=int(generations), init=init,
                                   rng=seed, polish=False, vectorized=True, updating="deferred",
                                   tol=0, atol=0)
    except _Stopped:
        stopped = True
    finally:
        bar.close()
    hist = ev.history()
    if not ev.rows:                                 # stopped before the first generation
        return FitResult(best={}, best_unit=np.full(d, np.nan), loss=float("nan"), scores={},
                         history=hist, generations=ev.generation, evaluations=0,
                         computed_generations=[], seconds=time.perf_counter() - t0,
                         method=method, stopped=stopped)
    best_i = int(np.nanargmin(hist["loss"].values))
    best_unit = hist["unit"].values[best_i]
    decoded = problem.decode(best_unit[None, :])
    best = {}
    for f, idx in problem.layout():
        v = decoded[f.name][0]
        best[f.name] = float(v) if idx is None else np.asarray(v)[idx]
    terms = {k: float(hist[k].values[best_i]) for k in hist.data_vars
             if k not in ("unit", "generation")}
    return FitResult(best=best, best_unit=best_unit, loss=float(hist["loss"].values[best_i]),
                     scores=terms, history=hist, generations=ev.generation, evaluations=len(ev.rows),
                     computed_generations=list(ev.computed), seconds=time.perf_counter() - t0,
                     method=method, stopped=stopped)


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _bar(total, enabled):
    if not enabled:
        return _NoBar()
    return tqdm(total=total, unit="gen", desc="fit")
