"""Explorer latency measured in the browser: slider release -> updated spectrum on screen.

Serves the explorer with ``neurotwin serve`` on loopback, opens it in Debian's chromium
(Playwright, never ``playwright install``), then for each case moves the ``p`` slider with the
keyboard (a key press is a complete slider change, like releasing the mouse) and measures, in the
page, the time from the key event to the moment the region-spectra plot's data source holds new
data. Targets (issue [ui]): < 0.5 s for one node, < 2 s for the 76-region network with 5 s
simulated.

Usage: ``python bench/bench_ui.py [--trials 5]``; prints a table (median, min, max per case).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "browser"))

from ui_browser import CHROMIUM, CHROMIUM_ARGS, serving  # noqa: E402

CASES = [
    ("single node, 5 s simulated", "?connectome=single%20node&duration_s=5", 0.5),
    ("tvb76 (76 regions), 5 s simulated", "?connectome=tvb76&duration_s=5", 2.0),
]

# Resolves with the ms between the first keydown after arming and new data in the figure.
ARM_JS = """() => {
  window.__t0 = null;
  document.addEventListener('keydown', () => { if (window.__t0 === null) window.__t0 = performance.now(); },
                            {capture: true, once: true});
}"""
WAIT_JS = """([name, before, timeout]) => new Promise((resolve) => {
  const sig = () => {
    const fig = Bokeh.documents[0].get_model_by_name(name);
    const d = fig.renderers[1].data_source.data;
    const y = (d instanceof Map) ? d.get('y') : d['y'];
    return JSON.stringify(Array.from(y || []).slice(0, 200));
  };
  const start = performance.now();
  const tick = () => {
    const now = performance.now();
    if (sig() !== before) { resolve(now - (window.__t0 ?? now)); return; }
    if (now - start > timeout) { resolve(-1); return; }
    requestAnimationFrame(tick);
  };
  tick();
})"""
SIG_JS = """(name) => {
  const fig = Bokeh.documents[0].get_model_by_name(name);
  const d = fig.renderers[1].data_source.data;
  const y = (d instanceof Map) ? d.get('y') : d['y'];
  return JSON.stringify(Array.from(y || []).slice(0, 200));
}"""


def measure(page, trials: int) -> list[float]:
    handle = page.locator(".param-p .noUi-handle").first
    out = []
    for k in range(trials + 1):                     # the first move warms caches (not counted)
        before = page.evaluate(SIG_JS, "region-spectra")
        page.evaluate(ARM_JS)
        handle.focus()
        handle.press("ArrowRight" if k % 2 == 0 else "ArrowLeft")
        ms = page.evaluate(WAIT_JS, ["region-spectra", before, 60_000])
        if ms < 0:
            raise RuntimeError("the spectrum did not change within 60 s")
        if k:
            out.append(ms / 1000.0)
        page.wait_for_timeout(300)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=5)
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print("bench_ui: Debian chromium is not installed (apt-get install -y chromium)", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright
    rows = []
    with serving(["explorer"]) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for label, query, target in CASES:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            t0 = time.perf_counter()
            page.goto(server.url("/explorer" + query))
            page.locator(".run-summary", has_text="median spectral peak").first.wait_for(timeout=180_000)
            first = time.perf_counter() - t0
            times = measure(page, args.trials)
            rows.append((label, statistics.median(times), min(times), max(times), target, first))
            page.close()
        browser.close()
    print(f"machine: {os.cpu_count()} cores; explorer served by neurotwin serve, local Dask workers")
    print(f"{'case':38s} {'median s':>9s} {'min s':>7s} {'max s':>7s} {'target s':>9s}  first load s")
    for label, med, lo, hi, target, first in rows:
        flag = "ok" if med < target else "MISSED"
        print(f"{label:38s} {med:9.2f} {lo:7.2f} {hi:7.2f} {target:9.1f}  {first:6.1f}   {flag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
