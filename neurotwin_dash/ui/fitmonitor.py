"""Fit and sweep monitor: start a sweep, a fit or a personal twin on the cluster and watch it.

* **Sweep**: a grid over two parameters of a model (:class:`neurotwin_dash.sweep.SweepSpec`),
  run by :func:`neurotwin_dash.sweep.run_sweep` on the Dask client into a zarr store. The store
  is polled while it fills: progress, the best value of the chosen metric so far, and a heatmap
  over the two parameters (pending cells empty).
* **Fit**: CMA-ES or differential evolution over the same two parameters against the healthy-
  dynamics objective (:func:`neurotwin_dash.fit.objectives.healthy_objective`), run by
  :func:`neurotwin_dash.fit.optimizers.fit` with a checkpoint file that is polled: evaluations
  in the parameter plane coloured by loss, and the loss per evaluation with its running best.
  The page's fits draw their noise in the batch kernel (``FitProblem(noise_rng="counter")``, as
  its sweeps do): the simulations of a generation run about 2.5× faster than with NumPy's generator.

**Stop / resume.** *Stop* sets the run's :class:`threading.Event`, which ``run_sweep`` /
``fit`` check between batches / generations: queued Dask tasks are cancelled, the thread ends
and the page shows "stopped: k / n" with the partial results. Stores are named after the
settings (sweep-spec fingerprint; fit-problem fingerprint, method and population size), so
*Start* with the same settings resumes: finished batches (``batch_done``) and generations
(checkpoint) are not recomputed.

* **Personal twin**: :func:`neurotwin_dash.fit.personal.personalize` for one catalog subject
  (its own connectome, fitted on the first half of its BOLD), with the same background thread,
  checkpoint polling and *Stop*: the CMA-ES evaluations over coupling and noise level as they
  arrive, then the held-out r of the twin beside every baseline on the same halves. The twin's
  files (``twin.nc``, ``scores.json``, ``report.png``, …) are written into the run folder.

Clicking a heatmap cell or an evaluation opens that simulation in the explorer (same server,
``explorer?model=…&<x>=…&<y>=…``). Runs execute in a background thread of the server process
that only waits on Dask; a second thread per run reads the store/checkpoint (seconds when the
workers fill both cores) and the page's periodic callback only shows its newest snapshot, so the
event loop and the session's document lock stay free for clicks (*Stop* acts at once).
"""
from __future__ import annotations

import io
import json
import shutil
import tempfile
import threading
import time
import traceback
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import panel as pn
import param
import xarray as xr
from bokeh.models import ColorBar, ColumnDataSource, HoverTool, LinearColorMapper, OpenURL, TapTool
from bokeh.palettes import Viridis256

from .. import catalog
from ..fit import personal
from ..fit.objectives import healthy_objective
from ..fit.optimizers import FitError, FitProblem, FreeParam, fit, read_checkpoint
from ..guards import check_session_budget
from ..simulate import all_params
from ..sweep import METRICS, SweepSpec, open_sweep, run_sweep, sweep_status
from . import panes
from .compute import netcdf_bytes
from .state import SINGLE_NODE, available_models, serve_page, shared_client
from .widgets import error_alert

__all__ = ["MonitorState", "FitMonitor", "servable", "explorer_url"]

GOALS = {"maximise": np.nanargmax, "minimise": np.nanargmin}


def explorer_url(model: str, connectome: str | None, values: dict, duration_s: float,
                 base: str = "explorer") -> str:
    """Relative URL opening the explorer on one simulation (``model``, connectome, values)."""
    q = {"model": model, "connectome": connectome or SINGLE_NODE, "duration_s": f"{duration_s:g}"}
    q.update({k: f"{float(v):.6g}" for k, v in values.items()})
    return f"{base}?{urlencode(q)}"


class MonitorState(param.Parameterized):
    """Settings of one sweep/fit and what is known about it so far."""

    mode = param.Selector(default="sweep", objects=["sweep", "fit", "personal"],
                          doc="Grid sweep, optimizer fit, or a personal twin of one subject")
    model = param.Selector(default="jansen_rit", objects=["jansen_rit"], doc="Neural mass model")
    connectome = param.Selector(default=SINGLE_NODE, objects=[SINGLE_NODE], doc="Connectome (or one node)")
    x_param = param.Selector(default="p", objects=["p"], label="x parameter", doc="Parameter on the x axis")
    x_low = param.Number(default=60.0, doc="Lowest x value")
    x_high = param.Number(default=320.0, doc="Highest x value")
    x_num = param.Integer(default=6, bounds=(2, 50), doc="Grid points along x")
    y_param = param.Selector(default="C", objects=["C"], label="y parameter", doc="Parameter on the y axis")
    y_low = param.Number(default=80.0, doc="Lowest y value")
    y_high = param.Number(default=250.0, doc="Highest y value")
    y_num = param.Integer(default=4, bounds=(2, 50), doc="Grid points along y")
    metric = param.Selector(default="alpha_power", objects=["alpha_power"], doc="Sweep metric shown")
    goal = param.Selector(default="maximise", objects=list(GOALS), doc="Which metric value is 'best'")
    method = param.Selector(default="cmaes", objects=["cmaes", "de"], doc="Fit optimizer")
    generations = param.Integer(default=4, bounds=(1, 200), doc="Fit generations")
    popsize = param.Integer(default=6, bounds=(2, 200), doc="Candidates per generation")
    duration_s = param.Number(default=2.0, bounds=(0.5, 600.0), step=0.5, label="duration (s)",
                              doc="Simulated time per sample (after a 0.5 s transient)")
    batch_size = param.Integer(default=4, bounds=(1, 256), doc="Samples per Dask task")
    subject = param.Selector(default=None, objects=[], doc="Catalog subject of the personal twin")
    regime = param.Selector(default=personal.ALPHA.name, objects=sorted(personal.REGIMES),
                            doc="Local node of the personal twin (excitatory: aperiodic; alpha: E–I loop)")
    weights = param.Selector(default="structural", objects=["structural", "effective"],
                             doc="Network weights of the personal twin: the subject's SC, or a personal effective "
                                 "connectivity fitted on the first half with a gain margin checked by the "
                                 "data-free robustness bound (the settings that met every personal-twin goal)")
    quick = param.Boolean(default=True, doc="Personal twin smoke run: first 240 BOLD frames, 1 generation "
                                            "of 2 (about a minute); off: the whole run and the generations "
                                            "and population above (minutes)")
    running = param.Boolean(default=False, doc="A run is in progress")
    stop_requested = param.Boolean(default=False, doc="Stop was asked for; the run is ending")
    stopped = param.Boolean(default=False, doc="The last run was stopped before it finished")
    done = param.Integer(default=0, doc="Samples (sweep) or evaluations (fit) finished")
    total = param.Integer(default=0, doc="Samples or evaluations expected")
    best_text = param.String(default="", doc="Best value so far and where")
    error = param.String(default="", doc="Why the last run failed ('' otherwise)")
    data = param.Parameter(doc="Latest snapshot: dict of arrays for the plots")

    def __init__(self, client="dask", run_dir=None, **params):
        self.param.model.objects = available_models()
        self.param.connectome.objects = [SINGLE_NODE] + catalog.names("connectome")
        self.param.metric.objects = [m for m in METRICS if m not in ("band_power",)]
        subjects = personal.available_subjects()
        self.param.subject.objects = subjects
        self.param.subject.default = subjects[0]
        params.setdefault("subject", subjects[0])
        super().__init__(**params)
        self.client = client
        # The session's scratch folder is made on the first Start (a page view writes nothing)
        # and removed by close() at the end of the session, only when this object made it.
        self._given_dir = Path(run_dir) if run_dir else None
        self._own_dir: Path | None = None
        self._closed = False
        self._run_id = 0
        self._thread = None
        self._refresh_params()
        self.param.watch(self._refresh_params, ["model"])
        self.param.watch(self._axis_range, ["x_param", "y_param"])

    # --- parameters ----------------------------------------------------------------------------
    def declared(self):
        return all_params(self.model)

    def _refresh_params(self, *events):
        names = list(self.declared().names)
        self.param.x_param.objects = names
        self.param.y_param.objects = names
        for axis, fallback in (("x", names[0]), ("y", names[1])):
            if getattr(self, f"{axis}_param") not in names:
                setattr(self, f"{axis}_param", fallback)

    def _axis_range(self, event):
        """A newly chosen axis parameter starts from its declared range (unless the range fits)."""
        axis = event.name[0]
        spec = self.declared()[event.new]
        lo, hi = getattr(self, f"{axis}_low"), getattr(self, f"{axis}_high")
        if not (spec.low <= lo < hi <= spec.high):
            setattr(self, f"{axis}_low", float(spec.low))
            setattr(self, f"{axis}_high", float(spec.high))

    def check(self) -> str:
        """Validate the axes against the declared bounds; returns an error message or ''."""
        if self.mode == "personal":
            return ""          # the personal twin's parameters and ranges come from its linear fit
        dec = self.declared()
        if self.x_param == self.y_param:
            return "choose two different parameters for x and y"
        for axis in ("x", "y"):
            name = getattr(self, f"{axis}_param")
            lo, hi = getattr(self, f"{axis}_low"), getattr(self, f"{axis}_high")
            spec = dec[name]
            if not lo < hi:
                return f"{axis} range of {name!r}: low ({lo:g}) must be below high ({hi:g})"
            if lo < spec.low or hi > spec.high:
                return (f"{axis} range of {name!r} = [{lo:g}, {hi:g}] is outside the allowed range "
                        f"[{spec.low:g}, {spec.high:g}] {spec.unit}".rstrip())
        return ""

    @property
    def run_dir(self) -> Path:
        """Folder of the run's store/checkpoint (created on first use)."""
        if self._given_dir is not None:
            return self._given_dir
        if self._own_dir is None:
            self._own_dir = Path(tempfile.mkdtemp(prefix="neurotwin-monitor-"))
        return self._own_dir

    def n_regions(self) -> int:
        """Regions of the chosen connectome (1 for a single node)."""
        if self.connectome_name is None:
            return 1
        return len(catalog.load(self.connectome_name).labels)

    def budget_error(self) -> str:
        """'' when the run fits one session's budget (:mod:`neurotwin_dash.guards`), else why not."""
        if self.mode == "personal":
            return ""          # bounded by its own settings (PersonalSettings), not by duration_s
        n = self.x_num * self.y_num if self.mode == "sweep" else \
            self.popsize * (self.generations + (1 if self.method == "de" else 0))
        return check_session_budget(n, self.duration_s + 0.5, self.n_regions())

    def close(self) -> None:
        """End of the session: stop the run (its Dask tasks are cancelled) and, once it has ended,
        remove the scratch folder this object created."""
        self._closed = True
        if self.running and getattr(self, "_stop", None) is not None:
            self._stop.set()
        thread, own = self._thread, self._own_dir

        def cleanup():
            if thread is not None:
                thread.join(120)
            if own is not None:
                shutil.rmtree(own, ignore_errors=True)

        threading.Thread(target=cleanup, daemon=True, name="neurotwin-monitor-cleanup").start()

    @property
    def connectome_name(self):
        return None if self.connectome == SINGLE_NODE else self.connectome

    def sweep_spec(self):
        return SweepSpec(model=self.model, connectome=self.connectome_name, sampling="grid",
                         axes={self.x_param: {"low": self.x_low, "high": self.x_high, "num": self.x_num},
                               self.y_param: {"low": self.y_low, "high": self.y_high, "num": self.y_num}},
                         duration_s=self.duration_s + 0.5, transient_s=0.5, metrics=[self.metric],
                         batch_size=self.batch_size, sample_rate_hz=250.0)

    def fit_problem(self):
        return FitProblem(model=self.model, connectome=self.connectome_name,
                          free=[FreeParam(self.x_param, self.x_low, self.x_high),
                                FreeParam(self.y_param, self.y_low, self.y_high)],
                          objective=healthy_objective(self.model), duration_s=self.duration_s + 0.5,
                          transient_s=0.5, noise_rng="counter")

    def personal_settings(self):
        """:class:`~neurotwin_dash.fit.personal.PersonalSettings` of the page's choices."""
        st = personal.PersonalSettings.quick() if self.quick else \
            personal.PersonalSettings(generations=self.generations, popsize=self.popsize)
        st.regime = self.regime
        if self.weights == "effective":
            st.coupling, st.robust_criterion = "effective", "bound"
            if self.quick:
                st.ec_maxiter = 25          # a smoke run: a few L-BFGS iterations per effective fit
        return st

    # --- running ---------------------------------------------------------------------------------
    def start(self) -> bool:
        """Start a sweep or fit in a background thread; returns False (with :attr:`error`) if refused."""
        if self._closed:
            self.error = "this page's session has ended"
            return False
        if self.running:                 # one run per session at a time
            self.error = "a run is already in progress"
            return False
        msg = self.check() or self.budget_error()
        if msg:
            self.error = msg
            return False
        # every setting of a new run reaches the watchers at once, with running=True: set one by
        # one, the status line briefly read "finished: 0 / N" (new total, not yet running)
        with param.parameterized.batch_call_watchers(self):
            return self._start()

    def _start(self) -> bool:
        self._run_id += 1
        rid = self._run_id
        self.error, self.done, self.best_text, self.data = "", 0, "", None
        n_generations = self.generations + (1 if self.method == "de" else 0)
        # the store is named after the settings: the same settings again resume it
        if self.mode == "sweep":
            spec = self.sweep_spec()
            self.total = self.x_num * self.y_num
            job = (self._run_sweep, spec, self.run_dir / f"sweep-{spec.fingerprint()[:16]}.zarr")
        elif self.mode == "personal":
            st = self.personal_settings()
            n_generations = st.generations
            self.total = st.popsize * st.generations
            folder = self.run_dir / (f"personal-{self.subject.replace(':', '_')}-{st.regime}"
                                     f"{'-effective' if st.coupling == 'effective' else ''}"
                                     f"{'-quick' if self.quick else f'-g{st.generations}p{st.popsize}'}")
            job = (self._run_personal, st, folder / "checkpoint.json")
        else:
            problem = self.fit_problem()
            self.total = self.popsize * n_generations
            name = f"fit-{self.method}-pop{self.popsize}-{problem.fingerprint()[:16]}.json"
            job = (self._run_fit, problem, self.run_dir / name)
        self._store = job[2]
        self._meta = {"mode": self.mode, "model": self.model, "connectome": self.connectome_name,
                      "x": self.x_param, "y": self.y_param, "metric": self.metric, "goal": self.goal,
                      "duration_s": self.duration_s, "n_generations": n_generations,
                      "bounds": {"x": (self.x_low, self.x_high), "y": (self.y_low, self.y_high)}}
        if self.mode == "personal":
            self._meta.update(model="wilson_cowan", connectome=None, x="coupling", y="noise_sd",
                              subject=self.subject, regime=self.regime, problem=None, summary=None)
        self._stop = threading.Event()
        self.param.update(stopped=False, stop_requested=False, running=True)
        self._thread = threading.Thread(target=self._guard, args=(rid, self._stop) + job, daemon=True,
                                        name=f"neurotwin-{self.mode}-{rid}")
        self._thread.start()
        threading.Thread(target=self._watch, args=(rid, self._thread), daemon=True,
                         name=f"neurotwin-watch-{rid}").start()
        return True

    def stop(self) -> bool:
        """Ask the running sweep/fit to stop (returns at once; False when nothing runs).

        The run ends after the batch/generation in progress (queued Dask tasks are cancelled);
        :meth:`poll`/:meth:`wait` then show ``stopped`` with the partial results.
        """
        if not self.running or self._stop.is_set():
            return False
        self._stop.set()
        self.stop_requested = True
        return True

    @property
    def store(self) -> Path | None:
        """The zarr store (sweep) or checkpoint file (fit) of the current/last run."""
        return getattr(self, "_store", None)

    def _client(self):
        if self.client == "dask":
            return shared_client()
        return self.client

    def _guard(self, rid, stop, fn, *args):
        self._finish_stopped = False
        try:
            result = fn(stop, *args)
        except Exception as exc:  # reported in the page; the server keeps going
            if rid == self._run_id:
                self._finish_error = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
        else:
            self._finish_error = ""
            self._finish_stopped = bool(result.stopped)
        finally:
            self._finished = rid

    def _run_sweep(self, stop, spec, store):
        return run_sweep(spec, store, client=self._client(), progress=False, stop=stop)

    def _run_fit(self, stop, problem, checkpoint):
        return fit(problem, method=self.method, generations=self.generations, popsize=self.popsize,
                   client=self._client(), checkpoint=checkpoint, progress=False, stop=stop)

    def _run_personal(self, stop, settings, checkpoint):
        """Fit the personal twin; write its files next to the checkpoint (replacing a previous
        run of the same settings in this session's folder)."""
        meta = self._meta
        out = personal.personalize(meta["subject"], settings, client=self._client(), checkpoint=checkpoint,
                                   stop=stop, on_problem=lambda problem: meta.update(problem=problem))
        if out.get("stopped"):
            return out["fit"]
        personal.write_personal(out, checkpoint.parent, overwrite=True)
        meta["summary"] = personal.summary(out)
        return out["fit"]

    def results(self) -> xr.Dataset | None:
        """What the current/last run produced, as a Dataset (``None`` before anything is done).

        Sweep: the finished samples of the store (parameters as coordinates, metrics, ``diverged``).
        Fit: every evaluated candidate (``evaluation``: the two parameters, loss, generation).
        """
        snap = self.snapshot()
        if snap is None or not snap["done"]:
            return None
        if snap["mode"] == "sweep":
            return open_sweep(self.store, only_done=True).load()
        meta = snap["meta"]
        extra = {"personal": json.dumps(snap["summary"], default=str)} if snap.get("summary") else {}
        return xr.Dataset(
            {meta["x"]: ("evaluation", snap["x"]), meta["y"]: ("evaluation", snap["y"]),
             "loss": ("evaluation", snap["value"], {"units": "1", "long_name": "healthy-dynamics loss"}),
             "generation": ("evaluation", snap["generation"])},
            attrs={"model": meta["model"], "connectome": meta["connectome"] or self.connectome,
                   "method": self.method if meta["mode"] == "fit" else "cmaes", "best": snap["best_text"], **extra})

    def wait(self, timeout_s: float = 600.0) -> None:
        """Block until the background run ends (tests, notebooks), then take a last snapshot."""
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.poll_now()

    # --- reading progress -----------------------------------------------------------------------
    def snapshot(self) -> dict | None:
        """Read the store/checkpoint of the current run (blocking I/O; call off the event loop)."""
        store = getattr(self, "_store", None)
        if store is None or not Path(store).exists():
            return None
        meta = self._meta
        if meta["mode"] == "sweep":
            return _sweep_snapshot(store, meta)
        if meta["mode"] == "personal":
            return _personal_snapshot(store, meta)
        return _fit_snapshot(store, meta)

    def apply(self, snap: dict | None, final: bool = True) -> None:
        """Show a snapshot (progress, best, plot data) and finish the run when its thread ended
        (and ``final``: the snapshot was read after that, so it holds every result)."""
        finished = final and getattr(self, "_finished", None) == self._run_id
        with param.parameterized.batch_call_watchers(self):
            if snap is not None:
                self.done = snap["done"]
                self.best_text = snap["best_text"]
                self.data = snap
            if finished and self.running:
                self.stopped = getattr(self, "_finish_stopped", False)
                self.stop_requested = False
                self.running = False
                self.error = getattr(self, "_finish_error", "")

    def poll_now(self) -> None:
        self.apply(self.snapshot())

    #: seconds between two reads of the store by the watcher thread
    WATCH_PERIOD_S = 0.5

    def _watch(self, rid, run_thread) -> None:
        """Watcher thread of run ``rid``: reads the store while the run goes on, and once more
        after it ended, leaving the latest snapshot for :meth:`poll`.

        Reading a store takes seconds while the workers keep both cores busy; done here, neither
        the server's event loop nor the session's document lock waits for it (a click on *Stop*
        would otherwise queue behind the reads until the run had finished)."""
        while rid == self._run_id:
            ended = not run_thread.is_alive()
            self._latest = (rid, self.snapshot(), ended)
            if ended:
                return
            time.sleep(self.WATCH_PERIOD_S)

    def poll(self) -> None:
        """Periodic callback (cheap, on the event loop): show the watcher's newest snapshot."""
        latest = getattr(self, "_latest", None)
        if latest is None or latest is getattr(self, "_applied", None):
            return
        self._applied = latest
        rid, snap, ended = latest
        if rid == self._run_id:
            self.apply(snap, final=ended)


def _sweep_snapshot(store, meta) -> dict | None:
    try:
        status = sweep_status(store)
        ds = open_sweep(store, only_done=False).load()
    except (FileNotFoundError, KeyError, ValueError, OSError):
        return None                                     # store being created
    bs = int(ds.attrs["batch_size"])
    done_mask = np.zeros(ds.sizes["sample"], dtype=bool)
    for b in status["done"]:
        done_mask[b * bs:(b + 1) * bs] = True
    x = ds[meta["x"]].values
    y = ds[meta["y"]].values
    v = np.where(done_mask, ds[meta["metric"]].values.astype(float), np.nan)
    if "diverged" in ds:
        v = np.where(ds["diverged"].values.astype(bool), np.nan, v)
    snap = {"mode": "sweep", "x": x, "y": y, "value": v, "done": int(done_mask.sum()),
            "meta": meta, "best_text": "", "best": None}
    if np.isfinite(v).any():
        i = int(GOALS[meta["goal"]](v))
        snap["best"] = {meta["x"]: float(x[i]), meta["y"]: float(y[i])}
        snap["best_text"] = (f"best {meta['metric']} = {v[i]:.4g} at {meta['x']} = {x[i]:.4g}, "
                             f"{meta['y']} = {y[i]:.4g}")
    return snap


def _fit_snapshot(path, meta) -> dict | None:
    try:
        state = read_checkpoint(path)
    except (FileNotFoundError, FitError):   # not written yet (the first generation runs)
        return None
    # a checkpoint resumed with fewer generations holds more than this run asked for
    rows = [r for r in state["rows"] if r["generation"] < meta["n_generations"]]
    if not rows:
        return None
    (xl, xh), (yl, yh) = meta["bounds"]["x"], meta["bounds"]["y"]
    u = np.array([r["unit"] for r in rows])
    x = xl + np.clip(u[:, 0], 0, 1) * (xh - xl)
    y = yl + np.clip(u[:, 1], 0, 1) * (yh - yl)
    loss = np.array([r["loss"] for r in rows], dtype=float)
    i = int(np.nanargmin(loss)) if np.isfinite(loss).any() else 0
    return {"mode": "fit", "x": x, "y": y, "value": loss, "done": len(rows), "meta": meta,
            "best": {meta["x"]: float(x[i]), meta["y"]: float(y[i])},
            "best_text": f"best loss = {loss[i]:.4g} at {meta['x']} = {x[i]:.4g}, {meta['y']} = {y[i]:.4g}",
            "generation": np.array([r["generation"] for r in rows])}


def _personal_snapshot(path, meta) -> dict | None:
    """Evaluations of a personal fit in (coupling, noise level) and, once scored, its summary."""
    problem = meta.get("problem")
    try:
        state = read_checkpoint(path)
    except (FileNotFoundError, FitError):
        return None
    rows = [r for r in state["rows"] if r["generation"] < meta["n_generations"]]
    if not rows or problem is None:
        return None
    values = problem.decode(np.array([r["unit"] for r in rows]))
    x = np.asarray(values["coupling"], dtype=float)
    y = np.asarray(values["noise_sd"], dtype=float)
    loss = np.array([r["loss"] for r in rows], dtype=float)
    i = int(np.nanargmin(loss)) if np.isfinite(loss).any() else 0
    summary = meta.get("summary")
    if summary is not None:
        text = personal_result_text(summary)
    else:
        text = f"fitting {meta['subject']}: best first-half loss {loss[i]:.4g} at coupling {x[i]:.4g}"
    return {"mode": "personal", "x": x, "y": y, "value": loss, "done": len(rows), "meta": meta,
            "best": {"coupling": float(x[i]), "noise_sd": float(y[i])}, "best_text": text,
            "generation": np.array([r["generation"] for r in rows]), "summary": summary}


def personal_result_text(summary: dict) -> str:
    """One line: the twin's held-out r beside every baseline (same halves), as in the CLI."""
    base = ", ".join(f"{k} {v['r']:.3f}" for k, v in summary["baselines"].items())
    return (f"{summary['subject']}: twin held-out r {summary['heldout']['r']:.3f} | baselines: {base}")


def personal_table(summary: dict | None) -> str:
    """Markdown table of the twin's held-out scores beside the baselines (empty before a result)."""
    if not summary:
        return ""
    h = summary["heldout"]

    def err(v):                 # log SC and strength predict no correlation values: no offset
        return "—" if not np.isfinite(v) else f"{v:+.3f}"

    st = summary["settings"]
    kind = st.get("regime", "excitatory") + (", effective" if st.get("coupling") == "effective" else "")
    rows = [f"| **twin ({kind})** | **{h['r']:.3f}** | "
            f"{err(h['mean_fc_error'])} |"]
    rows += [f"| {k} | {v['r']:.3f} | {err(v['mean_fc_error'])} |" for k, v in summary["baselines"].items()]
    return (f"**{summary['subject']}** — held-out half (first half fitted); FCD KS {h.get('fcd_ks', float('nan')):.3f}, "
            f"r drop at ±5 % coupling {h['robustness_drop']:.3f}\n\n| predictor | held-out r | mean-FC error |\n"
            "|---|---|---|\n" + "\n".join(rows))


class ResultPlot:
    """Heatmap (sweep) or evaluations (fit) over the two parameters; a click opens the explorer."""

    name = "monitor-map"

    def __init__(self):
        fig = panes._base_figure(self.name, "Start a sweep, a fit or a personal twin", "x", "y", width=560, height=460)
        self.mapper = LinearColorMapper(palette=Viridis256, low=0, high=1, nan_color=(0, 0, 0, 0))
        self.cells = ColumnDataSource({"x": [], "y": [], "w": [], "h": [], "value": [], "colour": [], "url": []})
        self.points = ColumnDataSource({"x": [], "y": [], "value": [], "colour": [], "url": []})
        r1 = fig.rect("x", "y", "w", "h", source=self.cells, line_color="white",
                      fill_color={"field": "colour", "transform": self.mapper})
        r2 = fig.scatter("x", "y", source=self.points, size=11, line_color="black",
                         fill_color={"field": "colour", "transform": self.mapper})
        fig.add_tools(HoverTool(renderers=[r1, r2], tooltips=[("x", "@x{0.000}"), ("y", "@y{0.000}"),
                                                              ("value", "@value")]))
        fig.add_tools(TapTool(renderers=[r1, r2], callback=OpenURL(url="@url")))
        self.colorbar = ColorBar(color_mapper=self.mapper, width=12)
        fig.add_layout(self.colorbar, "right")
        self.best = ColumnDataSource({"x": [], "y": []})
        fig.scatter("x", "y", source=self.best, marker="star", size=22, color="#d62728", line_color="white")
        self.figure = fig

    def update(self, snap):
        if snap is None:
            return
        m = snap["meta"]
        x, y, v = snap["x"], snap["y"], snap["value"]
        # a personal twin's per-region parameters do not fit in an explorer URL: no links
        urls = [explorer_url(m["model"], m["connectome"], {m["x"]: a, m["y"]: b}, m["duration_s"])
                if snap["mode"] != "personal" else "" for a, b in zip(x, y)]
        self.figure.xaxis.axis_label = m["x"]
        self.figure.yaxis.axis_label = m["y"]
        # powers span decades: colour by log10 (the hover shows the value itself)
        log = snap["mode"] == "sweep" and "power" in m["metric"] and np.all(v[np.isfinite(v)] > 0)
        colour = np.log10(v) if log else v
        self.colorbar.title = f"log10 {m['metric']}" if log else (m["metric"] if snap["mode"] == "sweep" else "loss")
        if np.isfinite(colour).any():
            self.mapper.low, self.mapper.high = panes._limits(colour, (0, 100))
        if snap["mode"] == "sweep":
            ux, uy = np.unique(x), np.unique(y)
            w = float(np.min(np.diff(ux))) if len(ux) > 1 else 1.0
            h = float(np.min(np.diff(uy))) if len(uy) > 1 else 1.0
            self.cells.data = {"x": x, "y": y, "w": np.full(len(x), w), "h": np.full(len(x), h),
                               "value": v, "colour": colour, "url": urls}
            self.points.data = {"x": [], "y": [], "value": [], "colour": [], "url": []}
            self.figure.title.text = f"{m['metric']} over {m['x']} × {m['y']} (click a cell: open in explorer)"
        else:
            self.points.data = {"x": x, "y": y, "value": v, "colour": colour, "url": urls}
            self.cells.data = {"x": [], "y": [], "w": [], "h": [], "value": [], "colour": [], "url": []}
            self.figure.title.text = ("Personal fit evaluations coloured by first-half loss (1 − r)"
                                      if snap["mode"] == "personal" else
                                      "Fit evaluations coloured by loss (click: open in explorer)")
        if snap.get("best"):
            self.best.data = {"x": [snap["best"][m["x"]]], "y": [snap["best"][m["y"]]]}


class LossPlot:
    """Loss (fit) or metric (sweep) per finished evaluation, with the running best."""

    name = "monitor-progress"

    def __init__(self):
        fig = panes._base_figure(self.name, "Scores as they arrive", "evaluation", "score", width=460, height=330)
        self.all = ColumnDataSource({"x": [], "y": []})
        self.best = ColumnDataSource({"x": [], "y": []})
        fig.scatter("x", "y", source=self.all, size=6, color="#1f4e79", legend_label="evaluation")
        fig.step("x", "y", source=self.best, color="#d62728", line_width=2, legend_label="best so far",
                 mode="after")
        # the legend sits above the plot: inside, it hid the best-so-far line (which ends high for
        # a maximised metric and low for a loss)
        legend = fig.legend[0]
        legend.orientation = "horizontal"
        legend.location = "top_left"
        fig.add_layout(legend, "above")
        self.figure = fig

    def update(self, snap):
        if snap is None:
            return
        v = np.asarray(snap["value"], dtype=float)
        ok = np.isfinite(v)
        idx = np.flatnonzero(ok)
        vals = v[ok]
        if snap["mode"] == "sweep" and snap["meta"]["goal"] == "maximise":
            best = np.maximum.accumulate(vals) if vals.size else vals
        else:
            best = np.minimum.accumulate(vals) if vals.size else vals
        self.all.data = {"x": idx, "y": vals}
        self.best.data = {"x": idx, "y": best}
        self.figure.yaxis.axis_label = "loss" if snap["mode"] != "sweep" else snap["meta"]["metric"]


class FitMonitor(pn.viewable.Viewer):
    """Controls and plots of the monitor (one per session)."""

    def __init__(self, state: MonitorState | None = None, client="dask", **params):
        super().__init__(**params)
        self.state = s = state or MonitorState(client=client)
        self.map = ResultPlot()
        self.losses = LossPlot()
        self.start_button = pn.widgets.Button(label="Start", color="success", width=120,
                                              css_classes=["start-run"])
        self.start_button.on_click(lambda e: s.start())
        self.stop_button = pn.widgets.Button(label="Stop", color="danger", width=120,
                                             disabled=True, css_classes=["stop-run"])
        self.stop_button.on_click(lambda e: s.stop())
        s.param.watch(self._buttons, ["running", "stop_requested"])
        self.error = error_alert()
        s.param.watch(lambda e: _set_alert(self.error, e.new), "error")
        s.param.watch(self._show, "data")
        self.download = pn.widgets.FileDownload(callback=self._results_file, filename="results.nc",
                                                 label="Download results (netCDF)", disabled=True,
                                                 css_classes=["download-results"], width=300)
        s.param.watch(lambda e: setattr(self.download, "disabled", not e.new), "done")
        self.progress = pn.indicators.Progress(value=0, max=1, width=300, css_classes=["run-progress"])
        # its own line under the progress bar, as wide as the main area: the personal-mode line
        # (the twin's r and every baseline's) is long and overflowed to the right beside the bar
        self.status = pn.pane.Markdown("No run yet.", css_classes=["run-status"], sizing_mode="stretch_width")
        self.personal_result = pn.pane.Markdown("", css_classes=["personal-result"], sizing_mode="stretch_width")
        s.param.watch(self._status, ["done", "total", "running", "best_text", "stopped", "stop_requested"])

    def _results_file(self):
        ds = self.state.results()
        self.download.filename = f"{self.state.mode}-results.nc"
        return io.BytesIO(netcdf_bytes(ds)) if ds is not None else None

    def _buttons(self, *events):
        s = self.state
        self.stop_button.disabled = not s.running or s.stop_requested
        self.start_button.disabled = s.running

    def _show(self, event):
        self.map.update(event.new)
        self.losses.update(event.new)
        if event.new is not None and event.new["mode"] == "personal":
            self.personal_result.object = personal_table(event.new.get("summary"))

    def _status(self, *events):
        s = self.state
        self.progress.max = max(s.total, 1)
        self.progress.value = min(s.done, max(s.total, 1))
        what = "samples" if s.mode == "sweep" else "evaluations"
        if s.mode == "personal" and s.running and s.done >= s.total:
            what += " (scoring the twin on the held-out half)"
        if s.running:
            state = "stopping" if s.stop_requested else "running"
        else:
            state = "stopped" if s.stopped else ("finished" if s.total else "idle")
        text = f"**{state}**: {s.done} / {s.total} {what}."
        if s.best_text:
            text += f" {s.best_text.rstrip('.')}."
        if state == "stopped":
            text += " *Start* with the same settings resumes."
        self.status.object = text

    #: which groups of controls each mode uses (the others are hidden): a personal twin takes its
    #: model, connectome and parameter ranges from the subject and its linear fit, not from the form
    USED = {"sweep": {"model", "axes", "sweep"},
            "fit": {"model", "axes", "fit", "objective"},
            "personal": {"fit", "personal"}}

    def controls(self):
        s = self.state
        g = self._groups = {
            "model": [pn.widgets.Select.from_param(s.param.model),
                      pn.widgets.Select.from_param(s.param.connectome)],
            "axes": [pn.Row(pn.widgets.Select.from_param(s.param.x_param, width=110),
                            pn.widgets.FloatInput.from_param(s.param.x_low, width=80),
                            pn.widgets.FloatInput.from_param(s.param.x_high, width=80),
                            pn.widgets.IntInput.from_param(s.param.x_num, width=60)),
                     pn.Row(pn.widgets.Select.from_param(s.param.y_param, width=110),
                            pn.widgets.FloatInput.from_param(s.param.y_low, width=80),
                            pn.widgets.FloatInput.from_param(s.param.y_high, width=80),
                            pn.widgets.IntInput.from_param(s.param.y_num, width=60)),
                     pn.widgets.FloatInput.from_param(s.param.duration_s)],
            "sweep": [pn.Card(pn.widgets.Select.from_param(s.param.metric),
                              pn.widgets.Select.from_param(s.param.goal),
                              pn.widgets.IntInput.from_param(s.param.batch_size),
                              title="Sweep", sizing_mode="stretch_width")],
            "objective": [pn.widgets.Select.from_param(s.param.method),
                          pn.pane.Markdown("Objective: healthy resting dynamics (alpha peak 8–12 Hz, "
                                           "aperiodic exponent 1–2, no saturation; LaNMM: gamma present).")],
            "personal": [pn.Card(pn.widgets.Select.from_param(s.param.subject),
                                 pn.widgets.Select.from_param(s.param.regime),
                                 pn.widgets.Select.from_param(s.param.weights),
                                 pn.widgets.Checkbox.from_param(s.param.quick),
                                 pn.pane.Markdown("Mode *personal*: the subject's own connectome, fitted on the "
                                                  "first half of its BOLD (CMA-ES, generations and population "
                                                  "under *Fit*), scored on the second beside every baseline."),
                                 title="Personal twin", sizing_mode="stretch_width")],
        }
        g["fit"] = [pn.Card(*g["objective"], pn.widgets.IntInput.from_param(s.param.generations),
                            pn.widgets.IntInput.from_param(s.param.popsize),
                            title="Fit", sizing_mode="stretch_width")]
        s.param.watch(lambda e: self._show_controls(), "mode")
        self._show_controls()
        return pn.Column(pn.widgets.RadioButtonGroup.from_param(s.param.mode), *g["model"], *g["axes"],
                         *g["sweep"], *g["fit"], *g["personal"],
                         pn.Row(self.start_button, self.stop_button), self.error, self.download,
                         sizing_mode="stretch_width")

    def _show_controls(self):
        used = self.USED[self.state.mode]
        for name, widgets in self._groups.items():
            for w in widgets:
                w.visible = name in used

    def main(self):
        return pn.Column(self.progress, self.status, self.personal_result, pn.FlexBox(
            pn.pane.Bokeh(self.map.figure), pn.pane.Bokeh(self.losses.figure)), sizing_mode="stretch_width")

    def __panel__(self):
        return pn.Row(pn.Column(self.controls(), width=400), self.main())


def _set_alert(alert, text):
    alert.object = text
    alert.visible = bool(text)


def servable(client="dask"):
    """Build one session's monitor page (``panel serve apps/fit.py``)."""
    pn.extension(notifications=False)
    monitor = FitMonitor(client=client)
    pn.state.add_periodic_callback(monitor.state.poll, period=700)
    # a closed page stops its run and leaves no scratch folder behind
    pn.state.on_session_destroyed(lambda session_context: monitor.state.close())
    return serve_page("neurotwin fit & sweep monitor", monitor, sidebar_width=420)

