"""Where the explorer's serving CPU goes, per page load and per update (cheap A/B measurements).

Serves the explorer on loopback and opens ONE chromium page (not niced: it is alone), then

* **page load**: the server process's CPU seconds (``/proc``: event loop + its threads, not the
  Dask workers) from the GET until the full result is on screen, and the browser's;
* **per update**: ``--changes`` parameter changes one after the other (each waits for the full
  run on screen and 1 s more for the rendering to settle): CPU seconds of the browser processes
  and of the server per update, Chrome's own metrics (``Performance.getMetrics``: script, layout,
  style) and, with ``--js-profile``, the top JavaScript functions by self time (CDP sampling
  profiler).

It is the measurement behind the figures of README "Serving to collaborators" (how much CPU a
page build and a plot update cost), cheaper and far less noisy on a shared machine than
``bench_serve.py`` (whose 10 sessions share 2 cores). Previews are off (``NEUROTWIN_PREVIEW=never``)
so that each change is one update.

Usage: ``python bench/profile_serve.py [--changes 5] [--loads 3] [--js-profile]``.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "browser"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_serve import ARM_JS, LOAD_JS, RESULT_JS, browsers_since, cpu_by_pid, cpu_delta  # noqa: E402
from ui_browser import CHROMIUM, CHROMIUM_ARGS, serving  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--changes", type=int, default=5)
    ap.add_argument("--loads", type=int, default=3)
    ap.add_argument("--query", default="?connectome=tvb76&duration_s=5")
    ap.add_argument("--js-profile", action="store_true")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright  # optional dependency of the browser tests
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with serving(["explorer"], env={"NEUROTWIN_PREVIEW": "never"}) as server, sync_playwright() as p:
        srv = psutil.Process(server.proc.pid)
        old = {q.pid for q in psutil.process_iter()}
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        loads_srv, loads_br = [], []
        page = None
        for i in range(args.loads + 1):
            ctx = browser.new_context(viewport={"width": 1200, "height": 900})
            pg = ctx.new_page()
            pg.add_init_script(LOAD_JS)
            brs = browsers_since(old)
            s0, b0 = srv.cpu_times(), cpu_by_pid(brs)
            pg.goto(server.url("/explorer" + args.query), wait_until="commit")
            pg.wait_for_function("() => window.__load && window.__load.full !== null", polling=100, timeout=120_000)
            pg.wait_for_timeout(1000)
            s1 = srv.cpu_times()
            b1 = cpu_by_pid(browsers_since(old))
            if i > 0:        # the first load starts the Dask cluster and compiles: not counted
                loads_srv.append((s1.user + s1.system) - (s0.user + s0.system))
                loads_br.append(cpu_delta(b0, b1))
            if page is None:
                page = pg
            else:
                ctx.close()
        print(f"page load ({args.loads}): server CPU {np.mean(loads_srv):.2f} s (± {np.std(loads_srv):.2f}), "
              f"browser CPU {np.mean(loads_br):.2f} s (± {np.std(loads_br):.2f}) per page")
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable")
        if args.js_profile:
            cdp.send("Profiler.enable")
            cdp.send("Profiler.setSamplingInterval", {"interval": 500})
            cdp.send("Profiler.start")
        m0 = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
        upd_srv, upd_br, lat = [], [], []
        for r in range(args.changes):
            page.evaluate(ARM_JS, "region-spectra")
            brs = browsers_since(old)
            s0, b0 = srv.cpu_times(), cpu_by_pid(brs)
            h = page.locator(".param-p .noUi-handle").first
            h.focus()
            h.press("ArrowRight" if r % 2 == 0 else "ArrowLeft")
            page.wait_for_function("() => window.__tF !== null", polling=100, timeout=120_000)
            lat.append(page.evaluate(RESULT_JS)[1] / 1000)
            page.wait_for_timeout(1500)
            s1 = srv.cpu_times()
            upd_srv.append((s1.user + s1.system) - (s0.user + s0.system))
            upd_br.append(cpu_delta(b0, cpu_by_pid(browsers_since(old))))
        m1 = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
        n = args.changes
        print(f"per update ({n}): browser CPU {np.mean(upd_br):.3f} s (± {np.std(upd_br):.3f}), server CPU "
              f"{np.mean(upd_srv):.3f} s (± {np.std(upd_srv):.3f}), change → full on screen {np.median(lat):.2f} s")
        for k in ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration", "LayoutCount",
                  "RecalcStyleCount"):
            if k in m1:
                print(f"  renderer {k}: {(m1[k] - m0.get(k, 0)) / n:.3f} per update")
        if args.js_profile:
            prof = cdp.send("Profiler.stop")["profile"]
            nodes = {nd["id"]: nd for nd in prof["nodes"]}
            dt = collections.Counter()
            for sid, d in zip(prof["samples"], prof["timeDeltas"]):
                cf = nodes[sid]["callFrame"]
                dt[(cf["functionName"] or "(anon)", Path(cf["url"]).name, cf["lineNumber"])] += d
            parent = {c: nd["id"] for nd in prof["nodes"] for c in nd.get("children", [])}
            stacks = collections.Counter()
            for sid, d in zip(prof["samples"], prof["timeDeltas"]):
                if nodes[sid]["callFrame"]["functionName"] in ("getPropertyValue", "getComputedStyle",
                                                                "getBoundingClientRect"):
                    chain, k = [], sid
                    while k in parent and len(chain) < 8:
                        k = parent[k]
                        cf = nodes[k]["callFrame"]
                        chain.append(f"{cf['functionName'] or '?'}:{cf['lineNumber']}:{cf['columnNumber']}")
                    stacks[nodes[sid]["callFrame"]["functionName"] + " <- " + " <- ".join(chain)] += d
            for st, us in stacks.most_common(8):
                print(f"    {us / 1e6 / n * 1000:7.1f} ms  {st}")
            total = sum(dt.values())
            print(f"  JS profile: {total / 1e6 / n:.3f} s sampled per update; top self time:")
            for (fn, url, line), us in dt.most_common(25):
                print(f"    {us / 1e6 / n * 1000:7.1f} ms  {fn} ({url}:{line})")
        browser.close()
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
