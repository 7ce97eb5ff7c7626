"""Dashboard state: ``param.Parameterized`` objects over the library's declarations and results.

* :func:`paramset_class` turns a :class:`~neurotwin_dash.params.ParamSet` (name, default,
  bounds, unit, doc) into a ``param.Parameterized`` class, so model and network parameters get
  sliders with the declared range, the unit in the label and the doc as tooltip.
* :class:`JobRunner` runs one job at a time *per session* off the server's event loop, on the
  Dask client shared by the server process; a newer request cancels the older one and stale
  results are dropped (per-session token).
* :class:`ExplorerState` is everything the explorer shows: model, connectome edits, noise,
  duration, seed, montage; and the latest result (an ``xarray.Dataset`` from
  :func:`neurotwin_dash.ui.compute.explorer_job`).

All of it works without a browser: ``ExplorerState(mode="sync")`` simulates in the calling thread.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import heapq
import itertools
import logging
import math
import os
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dask
import numpy as np
import panel as pn
import param

from .. import catalog
from ..cluster import get_client
from ..models import get_model, installed_model_names
from ..params import ParamSet
from ..observe.heads import HEADS
from ..simulate import NETWORK_PARAMS, network_params
from .compute import BANDS, FC_MEASURES, explorer_job, explorer_spec, preview_spec

__all__ = ["paramset_class", "available_models", "shared_client", "JobRunner", "StagedResult", "ExplorerState",
           "SOFT_BOUNDS", "SINGLE_NODE", "DASHBOARD_DASK_CONFIG", "ServerLoad", "SERVER_LOAD", "PREVIEW_PRIORITY", "PREVIEW_AFTER_S",
           "PREVIEW_ENV", "pause_gc_while_building", "RECLAIM_AFTER_SESSIONS", "RECLAIM_AFTER_S"]

#: Connectome choice meaning "one uncoupled node".
SINGLE_NODE = "single node"

#: Slider ranges narrower than the declared bounds where the declared range is mostly
#: uninteresting (the declared bounds still apply to typed values).
SOFT_BOUNDS = {"coupling": (0.0, 50.0), "speed_m_s": (0.5, 20.0)}

_RESERVED = set(dir(param.Parameterized)) | {"name"}
_CLASS_CACHE: dict[tuple, type] = {}


def _step(low: float, high: float) -> float:
    span = high - low
    if span <= 0:
        return 1.0
    return 10 ** math.floor(math.log10(span / 100.0))


def paramset_class(paramset: ParamSet, name: str, soft_bounds: dict | None = None) -> type:
    """A ``param.Parameterized`` subclass with one ``param.Number`` per :class:`ParamSpec`.

    Bounds are the declared (inclusive) bounds, ``label`` is ``"name (unit)"`` and ``doc`` the
    declared doc (Panel shows it as the widget tooltip). ``soft_bounds`` narrows slider ranges.
    """
    soft = dict(SOFT_BOUNDS, **(soft_bounds or {}))
    key = (name, tuple((s.name, s.default, s.low, s.high, s.unit, s.doc) for s in paramset),
           tuple(sorted(soft.items())))
    if key in _CLASS_CACHE:
        return _CLASS_CACHE[key]
    attrs = {}
    for spec in paramset:
        if spec.name in _RESERVED or spec.name.startswith("_"):
            raise ValueError(f"parameter name {spec.name!r} of {name} clashes with param.Parameterized")
        sb = soft.get(spec.name)
        if sb is not None:
            sb = (max(spec.low, sb[0]), min(spec.high, sb[1]))
        lo, hi = sb or (spec.low, spec.high)
        attrs[spec.name] = param.Number(
            default=float(spec.default), bounds=(float(spec.low), float(spec.high)), softbounds=sb,
            step=_step(lo, hi), label=spec.label, doc=spec.doc or spec.label,
        )
    cls = type(name, (param.Parameterized,), attrs)
    _CLASS_CACHE[key] = cls
    return cls


def values_of(obj: param.Parameterized) -> dict[str, float]:
    """Current values of a :func:`paramset_class` instance, as plain floats."""
    return {n: float(getattr(obj, n)) for n in obj.param if n != "name"}


def available_models() -> list[str]:
    """Model names whose module is installed (the registry may list models still to come)."""
    return installed_model_names()


# --- the shared Dask client ------------------------------------------------------------------

#: Dask settings of the dashboards' local cluster: a worker holds only the task it runs
#: (no prefetched backlog), so a preview or a newer request submitted later can still overtake
#: queued work by priority, and a cancelled request is dropped from the scheduler's queue.
DASHBOARD_DASK_CONFIG = {"distributed.scheduler.worker-saturation": 1.0}

_CLIENT_LOCK = threading.Lock()
_CLIENT_KEY = "neurotwin_dash.dask_client"


def shared_client():
    """The server process's Dask client, created once and kept in ``pn.state.cache``.

    Connects to ``$NEUROTWIN_DASK_SCHEDULER`` when set (``neurotwin serve --scheduler``),
    else :func:`neurotwin_dash.cluster.get_client` starts a local cluster of worker processes.
    Blocking: call it off the event loop.
    """
    with _CLIENT_LOCK:
        client = pn.state.cache.get(_CLIENT_KEY)
        if client is None or getattr(client, "status", "closed") not in ("running", "connecting"):
            address = os.environ.get("NEUROTWIN_DASK_SCHEDULER") or None
            # distributed's config defaults must be loaded before the override: leaving the
            # ``config.set`` block removes keys that did not exist when it was entered
            import distributed  # noqa: F401  (heavy; only a served page needs it here)
            with dask.config.set(DASHBOARD_DASK_CONFIG):
                client = get_client(address, quiet=True)
            if address is None:
                # Local workers share the server's cores: lower their priority so that the
                # server (page loads, plot updates) always gets a core first.
                try:
                    client.run(_lower_priority)
                except Exception:  # not fatal: only latency under load suffers
                    pass
            pn.state.cache[_CLIENT_KEY] = client
        return client


def dask_status() -> str:
    """One line on the server's Dask client, without starting one (Markdown)."""
    address = os.environ.get("NEUROTWIN_DASK_SCHEDULER")
    client = pn.state.cache.get(_CLIENT_KEY)
    if client is None or getattr(client, "status", "closed") != "running":
        where = f"the scheduler at `{address}`" if address else "a local cluster on this machine"
        return f"Dask: not started yet — the first simulation connects to {where}."
    try:
        workers = client.scheduler_info(n_workers=-1).get("workers", {})
    except Exception as exc:  # a scheduler that went away: say so rather than fail the page
        return f"Dask: client present but the scheduler does not answer ({type(exc).__name__})."
    threads = sum(int(w.get("nthreads", 0)) for w in workers.values())
    return (f"Dask: **{len(workers)} workers**, {threads} threads, scheduler "
            f"`{client.scheduler.address}`.")


def settle_session_objects() -> None:
    """Move a freshly built session's objects out of the garbage collector's way.

    A served page holds tens of thousands of long-lived Bokeh/Panel objects; full collections
    of the cyclic garbage collector then pause the server's event loop for up to ~1 s on a small
    machine (every session waits, pings included). Called once a page has loaded, this collects
    what is garbage now and freezes the rest (``gc.freeze``), so later collections only scan
    new objects. :func:`release_session_objects` (on session end) unfreezes so that a closed
    session's cycles can be collected.
    """
    _resume_gc(pn.state.curdoc.session_context.id if pn.state.curdoc and pn.state.curdoc.session_context else None)
    gc.collect(1)
    gc.freeze()


#: sessions whose page is being built with the cyclic garbage collector paused
_GC_PAUSED: set = set()
_GC_LOCK = threading.Lock()


def pause_gc_while_building() -> None:
    """Pause the cyclic garbage collector while this session's page is built (served pages only).

    Building a page creates ~10⁵ Bokeh/Panel objects; full collections triggered half-way
    through scanned them all and held the server's event loop for 0.3–0.5 s per page load
    (measured with ``NEUROTWIN_UI_DEBUG``). The collector resumes when the page has loaded
    (:func:`settle_session_objects` collects once and freezes the survivors) or when the session
    ends without loading (:func:`release_session_objects`).
    """
    doc = pn.state.curdoc
    if doc is None or doc.session_context is None:
        return
    with _GC_LOCK:
        _GC_PAUSED.add(doc.session_context.id)
        gc.disable()


def _resume_gc(session_id) -> None:
    with _GC_LOCK:
        _GC_PAUSED.discard(session_id)
        if not _GC_PAUSED:
            gc.enable()


#: The pages' icon, embedded in the page: Panel's own ``/favicon.ico`` route ignores ``--prefix``.
FAVICON = str(Path(__file__).with_name("thumbnails") / "favicon.png")


def serve_page(title: str, viewer, on_load=None, sidebar_width: int = 390):
    """Mark one session's page servable: ``viewer.controls()`` in the sidebar, ``viewer.main()``
    in the main area of a Bootstrap template. ``on_load`` runs once the page has loaded; then the
    session's objects are settled (see :func:`settle_session_objects`) and released at the end."""

    def start():
        try:
            if on_load is not None:
                on_load()
        finally:
            settle_session_objects()

    pn.state.onload(start)
    pn.state.on_session_destroyed(release_session_objects)
    template = pn.template.BootstrapTemplate(
        title=title, sidebar=[viewer.controls()], main=[viewer.main()],
        sidebar_width=sidebar_width, header_background="#1f4e79", favicon=FAVICON)
    return template.servable()


#: closed sessions whose frozen objects are reclaimed together (see release_session_objects)
RECLAIM_AFTER_SESSIONS = 4
#: ... or once the oldest of them closed this long ago (s)
RECLAIM_AFTER_S = 300.0
_CLOSED = {"n": 0, "since": None}


def release_session_objects(session_context) -> None:
    """Counterpart of :func:`settle_session_objects` for a destroyed session.

    A closed session's objects can only be collected once unfrozen, and the full collection
    that follows (Bokeh and Panel run one after every closed session) then scans every object of
    every open session: ~0.5–1 s of a blocked event loop per closed tab on a small machine.
    So closed sessions are reclaimed in batches: everything is unfrozen when
    :data:`RECLAIM_AFTER_SESSIONS` sessions have closed, or when the oldest of them closed more
    than :data:`RECLAIM_AFTER_S` ago; until then at most a few closed pages stay in memory.
    """
    _resume_gc(getattr(session_context, "id", None))
    now = time.monotonic()
    with _GC_LOCK:
        _CLOSED["n"] += 1
        _CLOSED["since"] = _CLOSED["since"] if _CLOSED["since"] is not None else now
        due = _CLOSED["n"] >= RECLAIM_AFTER_SESSIONS or now - _CLOSED["since"] > RECLAIM_AFTER_S
        if due:
            _CLOSED["n"], _CLOSED["since"] = 0, None
    if due:
        gc.unfreeze()      # the full collection that follows this callback frees them


def _log_gc_pauses():
    """Debug aid (NEUROTWIN_UI_DEBUG): print garbage-collector pauses longer than 50 ms."""
    started = {}

    def cb(phase, info):
        if phase == "start":
            started["t"] = time.perf_counter()
        elif "t" in started:
            dt = time.perf_counter() - started.pop("t")
            if dt > 0.05:
                log.debug("gc gen %s pause %.3f s collected %s", info["generation"], dt, info["collected"])

    gc.callbacks.append(cb)


log = logging.getLogger(__name__)
if os.environ.get("NEUROTWIN_UI_DEBUG"):
    # a served app has no command line to pass -v: the variable switches the debug messages on
    log.setLevel(logging.DEBUG)
    if not log.handlers:
        _handler = logging.StreamHandler(sys.stderr)
        _handler.setFormatter(logging.Formatter("[ui] %(message)s"))
        log.addHandler(_handler)
    _log_gc_pauses()


def _lower_priority(niceness: int = 10) -> int:
    """Set the niceness of every thread of this process (run on local Dask workers).

    Linux keeps a niceness per thread, so the worker's compute threads are changed one by one
    (``/proc/self/task``); threads started later inherit it from the main thread. Returns the
    number of threads changed.
    """
    changed = 0
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, max(niceness, os.getpriority(os.PRIO_PROCESS, tid)))
            changed += 1
        except (AttributeError, OSError):
            pass
    return changed


_CANCEL_POOL = None


def _cancel_later(future) -> None:
    """Cancel a Dask future from a helper thread.

    ``Future.cancel`` of a synchronous client waits for the scheduler's answer; called from a
    widget callback it would hold the server's event loop for that round trip.
    """
    global _CANCEL_POOL
    if future is None:
        return
    if _CANCEL_POOL is None:
        _CANCEL_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neurotwin-cancel")

    def cancel():
        try:
            future.cancel()
        except Exception:  # already finished or client gone: nothing to cancel
            pass

    _CANCEL_POOL.submit(cancel)


#: Dask priority of preview jobs: above every full run, so that under load each session's
#: preview is computed before the queued full runs (equal priorities run first come, first served).
PREVIEW_PRIORITY = 10

#: Show a preview first when the recent full runs took longer than this (s) from request to
#: result (the explorer's responsiveness goal), or when the queue holds as many jobs as workers.
PREVIEW_AFTER_S = 3.0

#: ``$NEUROTWIN_PREVIEW``: ``auto`` (default; previews under load), ``always`` or ``never``.
PREVIEW_ENV = "NEUROTWIN_PREVIEW"


class _Request:
    """One queued job of :class:`ServerLoad`: what to submit, and where its outcome goes."""

    __slots__ = ("submit", "handle", "future", "cancelled")

    def __init__(self, submit):
        self.submit = submit
        self.handle = concurrent.futures.Future()   # resolved with the job's result or error
        self.future = None                          # the Dask future once dispatched
        self.cancelled = False


class ServerLoad:
    """The server process's own fair queue in front of Dask, shared by every session.

    At most as many jobs as the cluster has worker threads are in Dask at any time; the rest
    wait here, previews first, then first come, first served. A session keeps at most one full
    request (and its preview) here, since a new request cancels the older ones
    (:meth:`cancel`: a queued one is dropped unseen, a dispatched one is cancelled in Dask and
    stops at its next :func:`~neurotwin_dash.ui.compute.job_superseded` check). Dask's own
    scheduling cannot give this order: it hands tasks to workers as they arrive and breaks
    priority ties arbitrarily.

    ``recent_wait_s`` is an exponentially weighted mean of the request-to-result time of full
    (non-preview) jobs; with the queue depth it decides :meth:`wants_preview`.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._heap: list = []
        self._seq = itertools.count()
        self.running = 0
        self.capacity = 1
        self.recent_wait_s = 0.0
        self.client_id = None

    def set_capacity(self, n: int) -> None:
        with self._lock:
            self.capacity = max(1, int(n))
        self._dispatch()

    def put(self, submit, preview: bool = False) -> _Request:
        """Queue ``submit`` (a callable that submits to Dask and returns the future)."""
        req = _Request(submit)
        with self._lock:
            heapq.heappush(self._heap, (0 if preview else 1, next(self._seq), req))
        self._dispatch()
        return req

    def cancel(self, req: _Request) -> None:
        """Drop a queued request, or cancel it in Dask (off the calling thread)."""
        with self._lock:
            req.cancelled = True
            fut = req.future
        if fut is None:
            req.handle.cancel()
            self._dispatch()          # frees nothing, but prunes the queue's head
        else:
            _cancel_later(fut)

    def pending(self) -> int:
        """Requests waiting here or running in Dask."""
        with self._lock:
            return self.running + sum(1 for *_, r in self._heap if not r.cancelled)

    def record_wait(self, seconds: float, weight: float = 0.3) -> None:
        with self._lock:
            self.recent_wait_s = (1 - weight) * self.recent_wait_s + weight * float(seconds)

    def wants_preview(self) -> bool:
        """Whether a new request should get a quick preview before its full run.

        ``$NEUROTWIN_PREVIEW`` = ``always`` / ``never`` overrides the automatic rule: preview when
        the jobs waiting or running fill the workers, or when recent full runs took longer than
        :data:`PREVIEW_AFTER_S`.
        """
        how = os.environ.get(PREVIEW_ENV, "auto").strip().lower()
        if how == "always":
            return True
        if how == "never":
            return False
        return self.pending() >= self.capacity or self.recent_wait_s > PREVIEW_AFTER_S

    def _dispatch(self) -> None:
        while True:
            with self._lock:
                while self._heap and self._heap[0][2].cancelled:
                    heapq.heappop(self._heap)
                if not self._heap or self.running >= self.capacity:
                    return
                req = heapq.heappop(self._heap)[2]
                self.running += 1
            try:
                fut = req.submit()
            except Exception as exc:      # e.g. the scheduler went away: the session shows it
                with self._lock:
                    self.running -= 1
                req.handle.set_exception(exc)
                continue
            with self._lock:
                req.future = fut
                cancelled = req.cancelled
            if cancelled:
                _cancel_later(fut)
            fut.add_done_callback(lambda f, req=req: self._finished(req, f))

    def _finished(self, req: _Request, fut) -> None:
        # runs in Dask's callback thread, not on the server's event loop
        with self._lock:
            self.running -= 1
        self._dispatch()
        if req.handle.done():
            return
        try:
            if fut.status == "cancelled":
                req.handle.cancel()
            else:
                req.handle.set_result(fut.result())
        except Exception as exc:
            if not req.handle.done():
                req.handle.set_exception(exc)


#: the server process's load and queue (all sessions)
SERVER_LOAD = ServerLoad()


def _client_threads(client) -> int:
    """Worker threads of a Dask client (blocking: call it off the event loop)."""
    try:
        return int(sum(client.nthreads().values()))
    except Exception:  # a scheduler that does not answer: assume one
        return 1


class JobRunner(param.Parameterized):
    """Runs the latest submitted job of one session in the background.

    ``mode="dask"`` queues the job in the server's fair queue (:data:`SERVER_LOAD`) in front of
    :func:`shared_client` (or ``client``) and awaits it without holding a thread, so the
    server's event loop keeps serving; ``mode="thread"`` runs the job in a thread of this
    process; ``mode="sync"`` runs it in the caller (tests, notebooks).

    The newest request wins: submitting again cancels the session's older requests (a queued
    one is dropped unseen; a running one is cancelled and stops at its next check, see
    :func:`neurotwin_dash.ui.compute.job_superseded`), and results of a job that is no longer
    the latest are discarded. With ``preview_args`` (dask mode) and the server under load
    (:meth:`ServerLoad.wants_preview`), a cheap version of the same job is queued too, ahead of
    every session's full runs: its result is shown first (``is_preview`` True) and the full
    run's replaces it.
    """

    mode = param.Selector(default="dask", objects=["dask", "thread", "sync"])
    client = param.Parameter(default=None, doc="Dask client (default: the server's shared_client())")
    busy = param.Boolean(default=False, doc="a job is running")
    result = param.Parameter(default=None, doc="result of the latest finished job")
    is_preview = param.Boolean(default=False, doc="result is the preview of a full run still to come")
    error = param.String(default="", doc="error message of the latest job ('' when it succeeded)")
    elapsed_s = param.Number(default=float("nan"), doc="wall time of the latest finished job")
    n_done = param.Integer(default=0, doc="jobs finished (results accepted)")

    def __init__(self, **params):
        super().__init__(**params)
        self._token = itertools.count(1)
        self._latest = 0
        self._full_shown = 0          # token whose full result is on screen (previews come before)
        self._requests: list = []
        self._lock = threading.Lock()

    @property
    def latest_token(self) -> int:
        return self._latest

    def submit(self, fn, *args, preview_args=None) -> int:
        """Run ``fn(*args)`` (a function importable by Dask workers); returns the job token.

        ``preview_args``: arguments of a cheaper run of the same ``fn`` (e.g. a shorter
        simulation of the same parameters), used in dask mode when the server is under load.
        """
        with self._lock:
            token = self._latest = next(self._token)
            old, self._requests = self._requests, []
        for req in old:
            SERVER_LOAD.cancel(req)
        self.busy = True
        if self.mode == "sync":
            self._run_sync(token, fn, args)
        else:
            self._schedule(token, fn, args, preview_args)
        return token

    def cancel(self) -> None:
        """Forget the pending jobs (their results will be dropped)."""
        with self._lock:
            self._latest = next(self._token)
            old, self._requests = self._requests, []
        for req in old:
            SERVER_LOAD.cancel(req)
        self.busy = False

    # --- internals -------------------------------------------------------------------------
    def _accept(self, token, result, error, t0, preview=False):
        if token != self._latest or (preview and self._full_shown == token):
            return False
        _w, _c = time.perf_counter(), time.thread_time()
        with _hold_document(), param.parameterized.batch_call_watchers(self):
            self.elapsed_s = time.perf_counter() - t0
            if not preview:
                self._full_shown = token
                self.error = error
            if not error:
                self.is_preview = preview
                self.result = result
                self.n_done += 1
            if not preview:
                self.busy = False
        log.debug("accept %s wall %.3f s cpu %.3f s", "preview" if preview else "full",
                  time.perf_counter() - _w, time.thread_time() - _c)
        return True

    def _run_sync(self, token, fn, args):
        t0 = time.perf_counter()
        try:
            res = fn(*args)
        except Exception as exc:  # shown to the user; the app stays usable
            self._accept(token, None, _message(exc), t0)
        else:
            self._accept(token, res, "", t0)

    def _schedule(self, token, fn, args, preview_args=None):

        async def job():
            await self._run_async(token, fn, args, preview_args)

        if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
            pn.state.execute(job)
        else:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                loop.create_task(job())
            else:
                threading.Thread(target=asyncio.run, args=(job(),), daemon=True).start()

    def _get_client(self):
        client = self.client if self.client is not None else shared_client()
        if SERVER_LOAD.client_id != id(client):
            SERVER_LOAD.client_id = id(client)
            SERVER_LOAD.set_capacity(_client_threads(client))
        return client

    async def _run_async(self, token, fn, args, preview_args=None):
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        if self.mode != "dask":
            try:
                res = await loop.run_in_executor(None, fn, *args)
            except Exception as exc:
                self._accept(token, None, _message(exc), t0)
            else:
                self._accept(token, res, "", t0)
            return
        try:
            client = await loop.run_in_executor(None, self._get_client)
        except Exception as exc:
            self._accept(token, None, _message(exc), t0)
            return
        stages = [(args, False)]
        if preview_args is not None and SERVER_LOAD.wants_preview():
            stages.insert(0, (preview_args, True))
        with self._lock:
            if token != self._latest:
                return
            # Dask priorities too, for schedulers shared with other clients
            self._requests = reqs = [
                SERVER_LOAD.put(lambda a=a, pv=pv: client.submit(fn, *a, pure=False,
                                                                 priority=PREVIEW_PRIORITY if pv else 0),
                                preview=pv)
                for a, pv in stages]

        async def wait(req, preview):
            try:
                res = await asyncio.wrap_future(req.handle)
            except (Exception, asyncio.CancelledError) as exc:
                # a preview's failure is not shown (the full run reports its own); a cancelled
                # request belongs to a superseded token
                if not preview and token == self._latest and not req.handle.cancelled():
                    self._accept(token, None, _message(exc), t0)
                return
            log.debug("job %s/%d %s done after %.3f s", id(self) % 10000, token,
                      "preview" if preview else "full", time.perf_counter() - t0)
            if not preview:
                SERVER_LOAD.record_wait(time.perf_counter() - t0)
            self._accept(token, res, "", t0, preview=preview)

        await asyncio.gather(*(wait(r, pv) for r, (_, pv) in zip(reqs, stages)))
        with self._lock:
            if token == self._latest:
                self._requests = []


class StagedResult(param.Parameterized):
    """One copy of a result per plot, handed over one event-loop tick at a time.

    Bind each plot to its own parameter (``staged.param[name]``). When the source result
    changes on a server, the copies are updated one per tick (each in one held Bokeh update), so
    pings and other sessions are served between two plots instead of after all of them. Outside
    a server all copies update at once.
    """

    def __init__(self, source: param.Parameterized, attr: str, names, **params):
        cls = type(self)
        for n in names:
            if n not in cls.param:
                cls.param.add_parameter(n, param.Parameter(default=None))
        super().__init__(**params)
        self._names = list(names)
        self._generation = 0
        source.param.watch(self._on_source, attr)

    def _on_source(self, event):
        self._generation += 1
        gen, value = self._generation, event.new
        doc = pn.state.curdoc
        if doc is None or doc.session_context is None:
            self.param.update({n: value for n in self._names})
            return

        async def hand_over():
            for n in self._names:
                if gen != self._generation:       # a newer result arrived: it takes over
                    return
                _w, _c = time.perf_counter(), time.thread_time()
                with _hold_document():
                    setattr(self, n, value)
                log.debug("plot %s wall %.3f s cpu %.3f s", n, time.perf_counter() - _w,
                          time.thread_time() - _c)
                await asyncio.sleep(0)

        pn.state.execute(hand_over)


def _hold_document():
    """Send the Bokeh changes of one update as one message (``pn.io.hold``) on a server.

    Not ``freeze=True``: the plots only replace data and colour ranges, which do not change
    the document's model graph, and a frozen hold would force a recompute of that whole graph
    (hundreds of models) on exit — ~30 ms per plot instead of ~1 ms.
    """
    if pn.state.curdoc is None or pn.state.curdoc.session_context is None:
        return contextlib.nullcontext()
    return pn.io.hold(pn.state.curdoc)


def _message(exc: BaseException) -> str:
    msg = str(exc).strip() or type(exc).__name__
    if not isinstance(exc, (ValueError, LookupError)):
        msg = f"{type(exc).__name__}: {msg}"
        if os.environ.get("NEUROTWIN_UI_DEBUG"):
            msg += "\n" + "".join(traceback.format_exception(exc))
    return msg


# --- the explorer's state --------------------------------------------------------------------

def _connectome_choices() -> list[str]:
    return [SINGLE_NODE] + catalog.names("connectome")


def _montage_choices() -> list[str]:
    return catalog.names("montage")


def _empirical_for(connectome: str) -> str:
    """Catalog empirical dataset matching a connectome (``hcp80`` -> ``hcp80_fc``), or ``"none"``."""
    cand = f"{connectome}_fc"
    return cand if cand in catalog.names("empirical") else "none"


class ExplorerState(param.Parameterized):
    """Everything the explorer shows; a change of a simulation input re-simulates.

    Model and network parameters live in :attr:`model_params` and :attr:`network_params`
    (instances of :func:`paramset_class` classes); a new model replaces :attr:`model_params`.
    """

    model = param.Selector(default="jansen_rit", objects=["jansen_rit"], doc="Neural mass model")
    output = param.Selector(default="v_pyr", objects=["v_pyr"],
                            doc="Model output analysed in the region plots (the model's observed outputs)")
    connectome = param.Selector(default="tvb76", objects=[SINGLE_NODE, "tvb76"],
                                doc="Structural connectome from the data catalog (or one uncoupled node)")
    normalisation = param.Selector(default="max", objects=["none", "max", "rowsum", "spectral", "log"],
                                   doc="Weight normalisation applied to the catalog weights before the edits")
    weight_scale = param.Number(default=1.0, bounds=(0.0, 5.0), step=0.05, label="weight scale",
                                doc="Multiplies every (normalised, edited) structural weight")
    lesions = param.ListSelector(default=[], objects=[], label="lesioned regions",
                                 doc="Regions disconnected from the network (all their in- and out-going weights set to 0)")
    edges = param.List(default=[], item_type=tuple,
                       doc="Edited edges (target, source, weight in normalised units), symmetric")
    duration_s = param.Number(default=20.0, bounds=(0.5, 120.0), step=0.5, label="duration (s)",
                              doc="Simulated time analysed (after the transient); band-limited FC "
                                  "needs ~20 s to show structure, BOLD FC ≥ 60 s")
    transient_s = param.Number(default=0.5, bounds=(0.0, 10.0), step=0.1, label="transient (s)",
                               doc="Initial period simulated and dropped")
    seed = param.Integer(default=0, bounds=(0, 2**31 - 1), doc="Noise seed (same seed, same result)")
    montage = param.Selector(default="standard_1020", objects=["standard_1020"],
                             doc="EEG montage for the simulated sensors and the topomap")
    head = param.Selector(default="sphere", objects=list(HEADS),
                          doc="Head model of the EEG lead field: four-shell sphere or the template BEM")
    empirical_fc = param.Selector(default="none", objects=["none"], label="empirical FC",
                                  doc="Empirical functional connectivity to score the simulated FC against")
    band = param.Selector(default="alpha", objects=list(BANDS),
                          doc="Frequency band of the brain map and topomap (no re-simulation)")
    map_band = param.Selector(default="low_gamma", objects=list(BANDS),
                              label="brain map band", doc="Band of the power-per-region brain map")
    fc_measure = param.Selector(default="plv_alpha", objects=list(FC_MEASURES), label="FC measure",
                                doc="Functional connectivity shown (no re-simulation): alpha-band PLV "
                                    "(default; structure shapes it at the default coupling), AEC, "
                                    "orthogonalised AEC, Pearson of the raw signal, BOLD FC")
    region = param.Selector(default="", objects=[""], doc="Region highlighted in the spectrum plot")
    model_params = param.Parameter(doc="Model parameters (from the model's ParamSet)")
    network_params = param.Parameter(doc="Network parameters (simulate.NETWORK_PARAMS)")
    auto_run = param.Boolean(default=True, doc="Re-simulate whenever an input changes")

    _SIM_INPUTS = ("model", "output", "connectome", "normalisation", "weight_scale", "lesions", "edges",
                   "duration_s", "transient_s", "seed", "montage", "head", "empirical_fc")

    def __init__(self, mode: str = "dask", **params):
        models = available_models()
        self.param.model.objects = models
        self.param.connectome.objects = _connectome_choices()
        self.param.montage.objects = _montage_choices()
        self.param.empirical_fc.objects = ["none"] + catalog.names("empirical")
        params.setdefault("model", models[0] if "jansen_rit" not in models else "jansen_rit")
        params.setdefault("connectome", catalog.default_connectome())
        self.runner = JobRunner(mode=mode)
        self._get_model = get_model
        self._network_cls = paramset_class(NETWORK_PARAMS, "NetworkParams")
        self._suspend = 0
        super().__init__(**params)
        self.network_params = self._network_cls()
        self.network_params.param.watch(self._on_input, list(NETWORK_PARAMS.names))
        self._suspend += 1
        try:
            self._install_model_params()
        finally:
            self._suspend -= 1
        self._refresh_regions()
        self.param.watch(self._on_model, ["model"])
        self.param.watch(self._on_connectome, ["connectome"])
        self.param.watch(self._on_input, list(self._SIM_INPUTS))

    # --- derived pieces ----------------------------------------------------------------------
    @property
    def model_module(self):
        return self._get_model(self.model)

    @property
    def connectome_name(self) -> str | None:
        return None if self.connectome == SINGLE_NODE else self.connectome

    def labels(self) -> list[str]:
        """Region labels of the current connectome (``["node"]`` for a single node)."""
        name = self.connectome_name
        if name is None:
            return ["node"]
        return catalog.load_connectome(name).labels

    def spec(self) -> dict:
        """The picklable job spec of the current inputs (see :func:`compute.explorer_spec`)."""
        params = values_of(self.model_params)
        net = values_of(self.network_params)
        if self.connectome_name is None:
            net = {k: v for k, v in net.items() if k not in ("coupling", "speed_m_s")}
        params.update(net)
        return explorer_spec(
            model=self.model, connectome=self.connectome_name, params=params,
            duration_s=self.duration_s, transient_s=self.transient_s, seed=self.seed,
            normalisation=self.normalisation, weight_scale=self.weight_scale,
            lesions=list(self.lesions), edges=list(self.edges),
            montage=self.montage if self.connectome_name else None,
            empirical_fc=None if self.empirical_fc == "none" else self.empirical_fc,
            output=self.output, head=self.head,
        )

    # --- actions -----------------------------------------------------------------------------
    def run(self) -> int:
        """Simulate the current inputs (in the background unless ``mode="sync"``).

        Under load the runner first shows a preview: the same run, :data:`compute.PREVIEW_S` long.
        """
        spec = self.spec()
        preview = preview_spec(spec)
        return self.runner.submit(explorer_job, spec, preview_args=None if preview is None else (preview,))

    def add_edge(self, target: str, source: str, weight: float) -> None:
        """Set the weight between two regions (normalised units, symmetric); raises on bad input."""
        labels = self.labels()
        for field, lab in (("edge target", target), ("edge source", source)):
            if lab not in labels:
                raise ValueError(f"{field}: unknown region {lab!r} in {self.connectome}")
        if target == source:
            raise ValueError("edge: target and source must differ")
        w = float(weight)
        if not np.isfinite(w) or w < 0 or w > 10:
            raise ValueError(f"edge weight must be in [0, 10] (normalised units), got {weight!r}")
        kept = [e for e in self.edges if {e[0], e[1]} != {target, source}]
        self.edges = kept + [(target, source, w)]

    def update_params(self, values: dict) -> None:
        """Set several model/network/state values at once (one re-simulation)."""
        self._suspend += 1
        try:
            for k, v in values.items():
                if k in self.model_params.param:
                    setattr(self.model_params, k, float(v))
                elif k in self.network_params.param:
                    setattr(self.network_params, k, float(v))
                elif k in self.param and k != "name" and type(self.param[k]) is not param.Parameter:
                    p = self.param[k]       # untyped Parameters (model_params ...) are not settings
                    if isinstance(p, param.ListSelector) and p.objects:
                        unknown = [x for x in v if x not in p.objects]
                        if unknown:
                            raise ValueError(f"{k}: unknown {unknown[:3]}; e.g. {list(p.objects)[:3]}")
                    setattr(self, k, v)
                else:
                    raise ValueError(f"unknown explorer setting {k!r}")
        finally:
            self._suspend -= 1
        self._on_input()

    # --- watchers ----------------------------------------------------------------------------
    def _install_model_params(self):
        mod = self.model_module
        cls = paramset_class(mod.PARAMS, f"{mod.NAME.title().replace('_', '')}Params")
        obj = cls()
        obj.param.watch(self._on_input, list(mod.PARAMS.names))
        self.model_params = obj
        # each model has its own network defaults (e.g. the coupling of its reference rhythm)
        for name, value in network_params(mod).defaults().items():
            setattr(self.network_params, name, float(value))
        observed = list(getattr(mod, "OBSERVED", ()) or ())
        self.param.output.objects = observed
        if self.output not in observed:
            self.output = observed[0]

    def _refresh_regions(self):
        labels = self.labels()
        self.param.lesions.objects = labels if self.connectome_name else []
        self.param.region.objects = labels
        if self.region not in labels:
            self.region = labels[0]

    def _on_model(self, event):
        self._suspend += 1
        try:
            self._install_model_params()
        finally:
            self._suspend -= 1

    def _on_connectome(self, event):
        self._suspend += 1
        try:
            self.lesions = []
            self.edges = []
            self._refresh_regions()
            self.empirical_fc = _empirical_for(self.connectome)
        finally:
            self._suspend -= 1

    def _on_input(self, *events):
        if self._suspend or not self.auto_run:
            return
        self.run()
