"""Load benchmark of the served explorer: N concurrent browser sessions on one server.

Serves the explorer with ``neurotwin serve`` on loopback and opens N pages (one browser context
each, Debian's chromium through Playwright, niced like the browser tests so that the clients do
not take the server's cores first). It measures

* **first result**: ``page.goto`` until the run summary shows (all N pages opened at once);
* **change latency**: in each round every page moves its ``p`` slider by one key press (all
  within ~a second), and each page records in-page the time from its key event to new data in
  its region-spectra plot;
* **/liveness**: a thread pings ``GET /liveness`` every 50 ms during the whole run (the server's
  event-loop responsiveness; a ping that times out after 5 s counts as 5 s).

Goals (issue [safe-serve]): change p50 ≤ 3 s, /liveness p95 ≤ 200 ms with 10 sessions.

Usage: ``python bench/bench_serve.py [--sessions 10] [--rounds 3] [--query '?connectome=tvb76&duration_s=5']``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "browser"))

from ui_browser import CHROMIUM, CHROMIUM_ARGS, serving  # noqa: E402

NICE_CHROMIUM = ROOT / "tests" / "browser" / "chromium-nice"

# Arms one page: records the first keydown (t0) and, polling every animation frame, the moment the
# region-spectra data differ from what they were when armed (t1).
ARM_JS = """(name) => {
  const sig = () => {
    const fig = Bokeh.documents[0].get_model_by_name(name);
    const d = fig.renderers[1].data_source.data;
    const y = (d instanceof Map) ? d.get('y') : d['y'];
    return JSON.stringify(Array.from(y || []).slice(0, 200));
  };
  const before = sig();
  window.__t0 = null; window.__t1 = null;
  document.addEventListener('keydown', () => { if (window.__t0 === null) window.__t0 = performance.now(); },
                            {capture: true, once: true});
  const tick = () => {
    if (window.__t0 !== null && sig() !== before) { window.__t1 = performance.now(); return; }
    requestAnimationFrame(tick);
  };
  tick();
}"""
RESULT_JS = "() => (window.__t0 !== null && window.__t1 !== null) ? window.__t1 - window.__t0 : null"


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


def _pct(values, q) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--query", default="?connectome=tvb76&duration_s=5")
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print("bench_serve: Debian chromium is not installed (apt-get install -y chromium)", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright
    pings: list[float] = []
    firsts: list[float] = []
    changes: list[float] = []
    missed = 0
    stop = threading.Event()
    with serving(["explorer"]) as server, sync_playwright() as p:
        exe = NICE_CHROMIUM if NICE_CHROMIUM.exists() else CHROMIUM
        browser = p.chromium.launch(executable_path=str(exe), args=CHROMIUM_ARGS)
        pinger = threading.Thread(target=_pinger, args=(server.url("/liveness"), stop, pings), daemon=True)
        pinger.start()
        try:
            pages, starts = [], []
            for _ in range(args.sessions):
                page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
                starts.append(time.perf_counter())
                page.goto(server.url("/explorer" + args.query), wait_until="commit")
                pages.append(page)
            for page, t0 in zip(pages, starts):
                page.locator(".run-summary", has_text="median spectral peak").first.wait_for(timeout=300_000)
                firsts.append(time.perf_counter() - t0)
            for r in range(args.rounds):
                for page in pages:
                    page.evaluate(ARM_JS, "region-spectra")
                for page in pages:
                    handle = page.locator(".param-p .noUi-handle").first
                    handle.focus()
                    handle.press("ArrowRight" if r % 2 == 0 else "ArrowLeft")
                deadline = time.perf_counter() + 180
                pending = list(pages)
                while pending and time.perf_counter() < deadline:
                    still = []
                    for page in pending:
                        ms = page.evaluate(RESULT_JS)
                        if ms is None:
                            still.append(page)
                        else:
                            changes.append(ms / 1000.0)
                    pending = still
                    time.sleep(0.1)
                missed += len(pending)
        finally:
            stop.set()
            pinger.join()
            browser.close()
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.1f} at the end (shared with other "
          f"jobs); explorer{args.query} served by neurotwin serve, local Dask workers; {args.sessions} "
          f"browser sessions on the same machine")
    print(f"first result   : median {statistics.median(firsts):.1f} s, max {max(firsts):.1f} s")
    print(f"change latency : p50 {_pct(changes, 50):.2f} s, p95 {_pct(changes, 95):.2f} s "
          f"(n = {len(changes)}, {missed} not shown within 180 s; goal p50 ≤ 3 s)")
    print(f"/liveness      : p50 {_pct(pings, 50):.0f} ms, p95 {_pct(pings, 95):.0f} ms, "
          f"max {max(pings):.0f} ms (n = {len(pings)}; goal p95 ≤ 200 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
