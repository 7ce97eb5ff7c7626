"""get_client: one LocalCluster per process, sized to the machine, or any scheduler/client."""
import logging
import os

import pytest
from distributed import Client

from neurotwin_dash import cluster


def test_get_client_starts_one_local_cluster_of_worker_processes_and_logs_dashboard(caplog):
    cluster.close_client()
    caplog.set_level(logging.INFO, logger="neurotwin_dash")
    client = cluster.get_client(n_workers=2)
    assert "dashboard: http://" in caplog.text
    pids = client.run(os.getpid)
    assert len(pids) == 2
    assert os.getpid() not in pids.values()          # processes, not threads
    assert len(set(pids.values())) == 2
    info = client.scheduler_info(n_workers=-1)["workers"]
    assert all(w["nthreads"] == 1 for w in info.values())
    # one client per process: a second call returns the same object without logging again
    caplog.clear()
    assert cluster.get_client() is client
    assert caplog.text == ""


def test_get_client_accepts_scheduler_address_and_existing_client():
    local = cluster.get_client(n_workers=2, quiet=True)
    address = local.scheduler.address
    same = cluster.get_client(address, quiet=True)
    assert same is local                               # already connected to that scheduler
    with Client(address) as mine:
        assert cluster.get_client(mine) is mine       # caller-owned client is used as is
        assert mine.submit(sum, [1, 2, 3]).result() == 6
    assert cluster.get_client() is local


def test_default_n_workers_matches_available_cores():
    assert cluster.default_n_workers() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("bad, match", [("localhost:8786", "tcp://host:8786"), (3.5, "address must be")])
def test_get_client_rejects_malformed_address(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        cluster.get_client(bad)


def test_get_client_rejects_zero_workers():
    cluster.close_client()
    with pytest.raises(ValueError, match="n_workers must be ≥ 1"):
        cluster.get_client(n_workers=0)
