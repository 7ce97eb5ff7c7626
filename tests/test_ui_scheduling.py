"""The explorer's scheduling under load, on a real Dask cluster: the newest request of a session
wins (older ones are dropped or stopped), and previews overtake queued full runs."""
from __future__ import annotations

import threading
import time

import dask
import pytest
from distributed import Client, LocalCluster

from neurotwin_dash.ui import compute
from neurotwin_dash.ui.state import DASHBOARD_DASK_CONFIG, PREVIEW_ENV, SERVER_LOAD, JobRunner

# In-process workers (processes=False) run the jobs in threads of this process, so the jobs can
# write down what really ran, in order.
EVENTS: list[tuple[str, object]] = []
_LOCK = threading.Lock()


def _job(name, seconds):
    with _LOCK:
        EVENTS.append(("start", name))
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if compute.job_superseded():
            with _LOCK:
                EVENTS.append(("stopped", name))
            raise compute.JobSuperseded(name)
        time.sleep(0.01)
    return name


def _blocker(seconds):
    time.sleep(seconds)          # never checks: stands for another session's running job
    return "blocker"


def _wait(cond, timeout=20.0):
    t0 = time.perf_counter()
    while not cond():
        if time.perf_counter() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def client():
    with dask.config.set(DASHBOARD_DASK_CONFIG), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cl, \
            Client(cl) as c:
        yield c


@pytest.fixture(autouse=True)
def _clean():
    EVENTS.clear()
    yield


def started():
    return [name for what, name in EVENTS if what == "start"]


def test_superseded_requests_are_dropped_and_the_newest_runs(client):
    other = JobRunner(mode="dask", client=client)
    other.submit(_blocker, 1.0)                              # another session takes the only worker
    _wait(lambda: SERVER_LOAD.running == 1)
    r = JobRunner(mode="dask", client=client)
    for i in range(1, 6):                                    # five quick changes of one session
        r.submit(_job, i, 0.05)
        time.sleep(0.02)
    _wait(lambda: not (r.busy or other.busy))
    assert other.result == "blocker"
    assert r.result == 5 and r.error == ""
    assert started() == [5]                                  # 1-4 were dropped unseen


def test_a_running_request_stops_when_a_newer_one_arrives(client):
    r = JobRunner(mode="dask", client=client)
    r.submit(_job, "old", 30.0)
    _wait(lambda: started() == ["old"])
    t0 = time.perf_counter()
    r.submit(_job, "new", 0.05)
    _wait(lambda: not r.busy)
    assert r.result == "new"
    assert ("stopped", "old") in EVENTS and started() == ["old", "new"]
    assert time.perf_counter() - t0 < 5.0                    # not the 30 s the old one asked for


def test_a_preview_overtakes_queued_full_runs_and_is_replaced_by_its_full_run(client, monkeypatch):
    monkeypatch.setenv(PREVIEW_ENV, "always")
    other = JobRunner(mode="dask", client=client)
    other.submit(_blocker, 1.0)
    _wait(lambda: SERVER_LOAD.running == 1)
    a, b, c = (JobRunner(mode="dask", client=client) for _ in range(3))
    shown = []
    c.param.watch(lambda e: shown.append((e.new, c.is_preview)), "result")
    n0 = SERVER_LOAD.pending()
    a.submit(_job, "A full", 0.05)                           # two sessions queue full runs ...
    _wait(lambda: SERVER_LOAD.pending() >= n0 + 1)
    b.submit(_job, "B full", 0.05)
    _wait(lambda: SERVER_LOAD.pending() >= n0 + 2)
    c.submit(_job, "C full", 0.05, preview_args=("C preview", 0.05))   # ... then a third changes
    _wait(lambda: not (a.busy or b.busy or c.busy or other.busy))
    assert started() == ["C preview", "A full", "B full", "C full"]
    assert shown == [("C preview", True), ("C full", False)]
    assert (a.result, b.result) == ("A full", "B full") and not (a.is_preview or b.is_preview)


def test_preview_spec_is_the_same_run_shorter():
    spec = compute.explorer_spec(duration_s=5.0, seed=3, params={"p": 150.0})
    pv = compute.preview_spec(spec)
    assert pv["duration_s"] == compute.PREVIEW_S and pv["preview_of_s"] == 5.0
    assert {k: v for k, v in pv.items() if k not in ("duration_s", "preview_of_s")} == \
        {k: v for k, v in spec.items() if k != "duration_s"}
    assert compute.preview_spec(compute.explorer_spec(duration_s=1.5)) is None   # short runs: none
    assert not compute.job_superseded()                      # outside a worker


def test_closed_sessions_are_reclaimed_in_batches():
    import gc
    from types import SimpleNamespace
    from neurotwin_dash.ui.state import RECLAIM_AFTER_SESSIONS, release_session_objects
    gc.freeze()
    try:
        counts = []
        for i in range(RECLAIM_AFTER_SESSIONS):
            release_session_objects(SimpleNamespace(id=f"s{i}"))
            counts.append(gc.get_freeze_count())
        # frozen until the batch is complete, then everything is handed back to the collector
        assert all(c > 0 for c in counts[:-1]) and counts[-1] == 0
        assert gc.isenabled()
    finally:
        gc.unfreeze()
