"""One Dask client per process: a LocalCluster sized to the machine, or any scheduler.

Sweeps and fits submit batched simulations to a :class:`distributed.Client`. By default
:func:`get_client` starts a :class:`distributed.LocalCluster` with one single-threaded worker
*process* per available core (numba kernels release the GIL, but processes isolate failures
and make a killed worker a recoverable event), and prints the link to the Dask dashboard.

When one machine is not enough, start a scheduler elsewhere and pass its address
(``"tcp://host:8786"``), or pass a :class:`~distributed.Client` created by Dask-Jobqueue
(SLURM, PBS, ...) or Dask-Gateway; the README shows both. Only functions that live in the
installed ``neurotwin_dash`` package are submitted, so any worker with the package installed
can run them.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading

log = logging.getLogger(__name__)

__all__ = ["get_client", "close_client", "default_n_workers", "add_cluster_arguments", "client_from_arguments"]

_lock = threading.Lock()
_state: dict = {"client": None, "cluster": None}
_PROTOCOLS = ("tcp://", "tls://", "ws://", "wss://", "inproc://", "ucx://")


def default_n_workers() -> int:
    """Number of cores this process may use (CPU affinity aware), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _total_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _alive(client) -> bool:
    return client is not None and getattr(client, "status", "closed") in ("running", "connecting")


def get_client(address=None, n_workers: int | None = None, threads_per_worker: int = 1,
               memory_limit: str | int | None = None, dashboard: bool = True,
               quiet: bool = False):
    """Return the process-wide Dask client, creating it on first use.

    Parameters
    ----------
    address : None, str or distributed.Client
        ``None``: reuse this process's client, or start a ``LocalCluster`` with
        ``processes=True`` and ``n_workers`` worker processes. A string such as
        ``"tcp://host:8786"``: connect to that scheduler. A ``Client``: use it as is
        (e.g. ``Client(SLURMCluster(...))``); the caller keeps ownership of it.
    n_workers : int, optional
        LocalCluster worker processes; default: the cores available to this process.
    threads_per_worker : int
        Threads per worker process (1: one numba batch per core at a time).
    memory_limit : str or int, optional
        Per-worker memory limit; default: machine memory divided by ``n_workers``.
    dashboard : bool
        Serve the Dask dashboard (on a free port of 127.0.0.1, reach it from elsewhere through an
        SSH tunnel) and print its link.
    quiet : bool
        Do not print the dashboard link.

    Returns
    -------
    distributed.Client
    """
    from distributed import Client, LocalCluster  # heavy: distributed (~0.7 s); the CLI imports this module at start

    with _lock:
        if isinstance(address, Client):
            # A caller-owned client (Dask-Jobqueue, Dask-Gateway, tests): used as is, never closed here.
            return address
        if address is not None and not isinstance(address, str):
            raise TypeError(f"address must be None, a scheduler address string or a distributed.Client, "
                            f"got {type(address).__name__}")
        if address is not None and not address.startswith(_PROTOCOLS):
            raise ValueError(f"scheduler address {address!r} must look like 'tcp://host:8786' "
                             "(protocol tcp, tls, ws, wss, inproc or ucx)")
        current = _state["client"]
        if _alive(current):
            if address is None or _scheduler_address(current) == address:
                return current
            _close_locked()
        if address is not None:
            client = Client(address)
            _state["client"], _state["cluster"] = client, None
        else:
            n = default_n_workers() if n_workers is None else int(n_workers)
            if n < 1:
                raise ValueError(f"n_workers must be ≥ 1, got {n_workers}")
            if threads_per_worker < 1:
                raise ValueError(f"threads_per_worker must be ≥ 1, got {threads_per_worker}")
            if memory_limit is None:
                total = _total_memory_bytes()
                memory_limit = int(total // n) if total else "auto"
            # Scheduler, workers and dashboard listen on the loopback interface only: the
            # dashboard has no login and the scheduler runs any task it is sent.
            cluster = LocalCluster(n_workers=n, threads_per_worker=threads_per_worker,
                                   processes=True, memory_limit=memory_limit, host="127.0.0.1",
                                   dashboard_address="127.0.0.1:0" if dashboard else None)
            client = Client(cluster)
            _state["client"], _state["cluster"] = client, cluster
        _announce(client, quiet)
        return client


def _scheduler_address(client) -> str | None:
    try:
        return client.scheduler.address
    except AttributeError:
        return None


def _announce(client, quiet: bool) -> None:
    if quiet:
        return
    link = getattr(client, "dashboard_link", None)
    n = len(client.scheduler_info(n_workers=-1).get("workers", {})) if _alive(client) else 0
    where = _scheduler_address(client)
    log.info("Dask: %d workers at %s; dashboard: %s", n, where, link or "not served")


def add_cluster_arguments(parser) -> None:
    """The command-line options of every Dask-backed command (``sweep``, ``fit``):
    ``--scheduler``, ``--workers`` and ``--no-progress``."""
    parser.add_argument("--scheduler", default=None,
                        help="Dask scheduler address (tcp://host:8786); default: a LocalCluster on this "
                             "machine; 'sync' runs the batches in this process")
    parser.add_argument("--workers", type=int, default=None,
                        help="LocalCluster worker processes (default: cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def client_from_arguments(args):
    """The client the options of :func:`add_cluster_arguments` ask for (``"sync"`` stays a string)."""
    return "sync" if args.scheduler == "sync" else get_client(args.scheduler, n_workers=args.workers)


def close_client() -> None:
    """Close this process's client (and its LocalCluster, when we started it)."""
    with _lock:
        _close_locked()


def _close_locked() -> None:
    client, cluster = _state["client"], _state["cluster"]
    _state["client"], _state["cluster"] = None, None
    if client is not None:
        try:
            client.close()
        except Exception:  # already closed or scheduler gone: nothing left to release
            pass
    if cluster is not None:
        try:
            cluster.close()
        except Exception:
            pass


atexit.register(close_client)
