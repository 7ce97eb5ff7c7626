"""Guards against requests that would exhaust the machine or return silently wrong numbers.

* :func:`check_memory`: a simulation whose output cannot fit in the memory available now is
  refused before anything is allocated, with the sizes that make it up and what to change.
* :func:`dt_note`: each model declares ``MAX_DT_MS``, the largest integration step whose results
  stay close to a fine step (measured once, see the model modules and the README's bad-input
  table); :func:`neurotwin_dash.simulate.simulate` flags a run above it (a warning and the
  ``dt_warning`` attribute) and the command line refuses it.
* :func:`session_budget`: the most simulated region-seconds one served session may ask for in
  one run (``$NEUROTWIN_SESSION_MAX_REGION_SECONDS``, default :data:`SESSION_MAX_REGION_SECONDS`).
"""
from __future__ import annotations

import os

__all__ = ["available_memory_bytes", "check_memory", "dt_note", "SESSION_MAX_REGION_SECONDS",
           "session_budget", "check_session_budget"]

#: Default budget of one served session's run: samples × simulated seconds × regions. 250,000 is
#: e.g. a 6 × 6 grid of 76-region networks for 90 s each, or a 50 × 50 single-node grid for 100 s.
SESSION_MAX_REGION_SECONDS = 250_000.0
#: Share of the available memory a single simulation may plan to use.
MEMORY_SHARE = 0.5


def available_memory_bytes() -> int | None:
    """Memory available to new allocations now (``MemAvailable``; physical memory elsewhere)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _size(n_bytes: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.3g} {unit}"
    return f"{n_bytes / 1e3:.3g} kB"


def check_memory(n_batch: int, n_samples: int, n_region: int, n_record: int, error: type[Exception],
                 duration_s: float, sample_rate_hz: float) -> None:
    """Refuse a run whose float64 output (held twice while it becomes a Dataset) would use more
    than :data:`MEMORY_SHARE` of the memory available now; the message says what to change."""
    need = 2.0 * 8.0 * n_batch * n_samples * n_region * n_record
    avail = available_memory_bytes()
    if avail is None or need <= MEMORY_SHARE * avail:
        return
    raise error(f"duration_s = {duration_s:g} at sample_rate_hz = {sample_rate_hz:g} needs about "
                f"{_size(need)} of memory ({n_batch} run(s) × {n_samples:,} samples × {n_region} region(s) × "
                f"{n_record} recorded variable(s) × 8 bytes, twice while the result is built), but only "
                f"{_size(avail)} are available: shorten duration_s, lower sample_rate_hz, record fewer "
                "variables or run fewer members at once")


def dt_note(mod, dt_ms: float) -> str | None:
    """Why ``dt_ms`` is too coarse for model ``mod`` (None when it is within ``mod.MAX_DT_MS``)."""
    limit = getattr(mod, "MAX_DT_MS", None)
    if limit is None or dt_ms <= limit * (1 + 1e-9):
        return None
    return (f"dt_ms = {dt_ms:g} is above the largest accurate step of model {mod.NAME} "
            f"({limit:g} ms, MAX_DT_MS): its numbers are inaccurate even where no member diverges; "
            f"use dt_ms ≤ {limit:g}")


def session_budget() -> float:
    """Simulated region-seconds one served session may request per run (see module notes)."""
    try:
        return float(os.environ.get("NEUROTWIN_SESSION_MAX_REGION_SECONDS", SESSION_MAX_REGION_SECONDS))
    except ValueError:
        return SESSION_MAX_REGION_SECONDS


def check_session_budget(n_samples: int, duration_s: float, n_region: int) -> str:
    """'' when a run of ``n_samples`` simulations of ``duration_s`` on ``n_region`` regions fits the
    session budget, else the message shown in the page."""
    cost = float(n_samples) * float(duration_s) * int(n_region)
    budget = session_budget()
    if cost <= budget:
        return ""
    return (f"this run asks for {n_samples} simulations × {duration_s:g} s × {n_region} region(s) = "
            f"{cost:,.0f} simulated region-seconds; one session may ask for at most {budget:,.0f} "
            "(fewer grid points, generations or seconds)")
