"""Load benchmark of the served explorer: N concurrent browser sessions on one server.

Serves the explorer with ``neurotwin serve`` on loopback and opens N pages (one browser context
each, Debian's chromium through Playwright, niced like the browser tests so that the clients do
not take the server's cores first). Under load the explorer shows a labelled preview (a 1-s run
of the same settings) before the full run, so each latency is reported twice: **first** = the
first new data on screen (the preview, or the full run when no preview was needed) and **full** =
the full run on screen. It measures

* **page load**: navigation start until the region spectra show a first / the full result (all N
  pages opened at once; recorded in each page);
* **change latency**: in each round every page moves its ``p`` slider by one key press (all
  within ~a second), and each page records the time from its key event to new data (first) and
  to the full run's data (full) in its region-spectra plot;
* **/liveness**: a thread pings ``GET /liveness`` every 50 ms during the whole run (the server's
  event-loop responsiveness; a ping that times out after 5 s counts as 5 s);
* **CPU per round** of changes (``/proc``): the browsers, the server process, its Dask workers —
  where the machine's two cores went.

The pages watch their plot with a 25-ms timer on the plot's title and first 200 values (an
earlier version compared the whole data on every animation frame, which alone doubled the
browsers' CPU on this 2-core machine and slowed everything it measured).

Goals (issue [safe-serve]): change p50 ≤ 3 s, /liveness p95 ≤ 200 ms with 10 sessions.

Usage: ``python bench/bench_serve.py [--sessions 10] [--rounds 3] [--query '?connectome=tvb76&duration_s=5']``.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "browser"))

from ui_browser import CHROMIUM, CHROMIUM_ARGS, serving  # noqa: E402

NICE_CHROMIUM = ROOT / "tests" / "browser" / "chromium-nice"

# Installed before the page loads: records when the region spectra first show a result and when
# they show the full (non-preview) one, in ms since navigation start.
LOAD_JS = """
window.__load = {first: null, full: null};
const __iv = setInterval(() => {
  try {
    const t = Bokeh.documents[0].get_model_by_name('region-spectra').title.text;
    if (!t.includes('regions)')) return;
    const now = performance.now();
    if (window.__load.first === null) window.__load.first = now;
    if (!t.includes('preview')) { window.__load.full = now; clearInterval(__iv); }
  } catch (e) {}
}, 25);
"""

# Arms one page: records the first keydown (t0), the first change of the region-spectra plot
# (tf: preview or full) and the change that shows the full run (tF).
ARM_JS = """(name) => {
  const fig = () => Bokeh.documents[0].get_model_by_name(name);
  const sig = () => {
    const f = fig();
    const d = f.renderers[1].data_source.data;
    const y = (d instanceof Map) ? d.get('y') : d['y'];
    return f.title.text + '|' + Array.prototype.slice.call(y || [], 0, 200).join(',');
  };
  const before = sig();
  window.__t0 = null; window.__tf = null; window.__tF = null;
  document.addEventListener('keydown', () => { if (window.__t0 === null) window.__t0 = performance.now(); },
                            {capture: true, once: true});
  const iv = setInterval(() => {
    if (window.__t0 === null) return;
    const s = sig();
    if (s === before) return;
    const now = performance.now();
    if (window.__tf === null) window.__tf = now;
    if (!fig().title.text.includes('preview')) { window.__tF = now; clearInterval(iv); }
  }, 25);
}"""
RESULT_JS = ("() => (window.__t0 !== null && window.__tF !== null) ? "
             "[window.__tf - window.__t0, window.__tF - window.__t0] : null")


def cpu_by_pid(procs) -> dict:
    """CPU seconds (user + system) of each process, by pid."""
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def cpu_delta(before: dict, after: dict) -> float:
    """CPU used between two :func:`cpu_by_pid` readings; a process that ended in between is left
    out (its last CPU time is unknown), a new one counts from 0."""
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


def browsers_since(old_pids):
    """Chromium processes started after ``old_pids`` was taken (not other users' browsers)."""
    return [q for q in psutil.process_iter(["name"])
            if q.info["name"] and "chrom" in q.info["name"] and q.pid not in old_pids]


def _cpu_groups(server, old_pids) -> dict:
    """CPU seconds by group: the browsers, the server process (event loop and its threads), its
    Dask worker processes (its descendants)."""
    srv = psutil.Process(server.proc.pid)
    try:
        workers = srv.children(recursive=True)
    except psutil.Error:
        workers = []
    return {"browsers": cpu_by_pid(browsers_since(old_pids)), "server": cpu_by_pid([srv]),
            "Dask workers": cpu_by_pid(workers)}


def _pinger(url: str, stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                r.read()
            out.append((time.perf_counter() - t0) * 1000)
        except OSError:
            out.append(5000.0)
        time.sleep(0.05)


def _line(name, values, unit="s", scale=1.0, fmt=".2f") -> str:
    v = np.asarray(values, dtype=float) * scale
    if v.size == 0:
        return f"{name}: none"
    return (f"{name}: p50 {np.percentile(v, 50):{fmt}} {unit}, p95 {np.percentile(v, 95):{fmt}} {unit}, "
            f"max {v.max():{fmt}} {unit} (n = {v.size})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--query", default="?connectome=tvb76&duration_s=5")
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print("bench_serve: Debian chromium is not installed (apt-get install -y chromium)", file=sys.stderr)
        return 1
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright
    pings: list[float] = []
    load_first, load_full, change_first, change_full = [], [], [], []
    missed = 0
    stop = threading.Event()
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    with serving(["explorer"]) as server, sync_playwright() as p:
        exe = NICE_CHROMIUM if NICE_CHROMIUM.exists() else CHROMIUM
        old_pids = {q.pid for q in psutil.process_iter()}
        browser = p.chromium.launch(executable_path=str(exe), args=CHROMIUM_ARGS)
        pinger = threading.Thread(target=_pinger, args=(server.url("/liveness"), stop, pings), daemon=True)
        pinger.start()
        try:
            pages = []
            for _ in range(args.sessions):
                page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
                page.add_init_script(LOAD_JS)
                page.goto(server.url("/explorer" + args.query), wait_until="commit")
                pages.append(page)
            for page in pages:
                page.wait_for_function("() => window.__load && window.__load.full !== null", polling=100,
                                       timeout=300_000)
                first, full = page.evaluate("() => [window.__load.first, window.__load.full]")
                load_first.append(first / 1000.0)
                load_full.append(full / 1000.0)
            cpu0 = _cpu_groups(server, old_pids)
            for r in range(args.rounds):
                for page in pages:
                    page.evaluate(ARM_JS, "region-spectra")
                for page in pages:
                    handle = page.locator(".param-p .noUi-handle").first
                    handle.focus()
                    handle.press("ArrowRight" if r % 2 == 0 else "ArrowLeft")
                # the times are recorded in each page: waiting for the pages one after the
                # other (cheap in-page polling, every 100 ms) does not bias them
                pending = []
                deadline = time.perf_counter() + 180
                for page in pages:
                    try:
                        page.wait_for_function("() => window.__tF !== null", polling=100,
                                               timeout=max(1.0, deadline - time.perf_counter()) * 1000)
                    except PlaywrightTimeout:
                        pending.append(page)
                        continue
                    ms = page.evaluate(RESULT_JS)
                    change_first.append(ms[0] / 1000.0)
                    change_full.append(ms[1] / 1000.0)
                missed += len(pending)
            cpu1 = _cpu_groups(server, old_pids)
            round_cpu = {k: cpu_delta(cpu0[k], cpu1[k]) / max(args.rounds, 1) for k in cpu0}
        finally:
            stop.set()
            pinger.join()
            browser.close()
    load_after = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores; load average (1 min) {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} at the end ({time.perf_counter() - t_start:.0f} s run); explorer{args.query} "
          f"served by neurotwin serve, local Dask workers; {args.sessions} browser sessions on the same machine")
    print(_line("page load, first result", load_first))
    print(_line("page load, full result ", load_full))
    print(_line("change, first new data ", change_first) + "  (preview or full; goal p50 ≤ 3 s)")
    print(_line("change, full result    ", change_full) + f"  ({missed} not shown within 180 s)")
    print(_line("/liveness              ", pings, "ms", 1.0, ".0f") + "  (goal p95 ≤ 200 ms)")
    print("CPU seconds per round of changes (from /proc; a round ends when every page shows its full run): "
          + ", ".join(f"{k} {v:.1f}" for k, v in round_cpu.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
