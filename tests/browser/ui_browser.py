"""Browser-test helpers: serve an app with `neurotwin serve` on loopback, drive Debian's chromium.

Chromium is Debian's package (``apt-get install chromium``; ``.ci/run`` does it), driven by the
Playwright Python package; ``playwright install`` is never used. Screenshots land in
``test-artifacts/``.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `neurotwin serve` process on 127.0.0.1 (its own process group, so it is stopped whole)."""

    def __init__(self, apps, extra=(), env=None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = ARTIFACTS / f"server-{'-'.join(apps)}-{self.port}.log"
        extra = list(extra)
        prefix = extra[extra.index("--prefix") + 1].strip("/") if "--prefix" in extra else ""
        self.liveness = f"/{prefix}/liveness" if prefix else "/liveness"
        cmd = [sys.executable, "-m", "neurotwin_dash.cli", "serve", *apps, "--port", str(self.port),
               "--address", "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{self.port}", *extra]
        ARTIFACTS.mkdir(exist_ok=True)
        self._log = open(self.log, "w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})}, start_new_session=True)
        self._wait()

    def _wait(self, timeout=90):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early; log:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.base + self.liveness, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server did not answer within {timeout} s; log:\n{self.log.read_text()[-3000:]}")

    def url(self, path: str) -> str:
        return self.base + path

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._log.close()


@contextmanager
def serving(apps, extra=(), env=None):
    server = Server(apps, extra, env)
    try:
        yield server
    finally:
        server.stop()


class ConsoleLog:
    """Collects console errors and uncaught page errors of one page."""

    def __init__(self, page):
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))


# Signature of the data shown by a named Bokeh figure (see neurotwin_dash.ui.panes.named).
FIGURE_DATA_JS = """(name) => {
  const docs = (window.Bokeh && window.Bokeh.documents) || [];
  for (const doc of docs) {
    const fig = doc.get_model_by_name(name);
    if (!fig) continue;
    const flat = (v) => (v && typeof v === 'object' && v.length !== undefined)
        ? Array.from(v, flat) : (typeof v === 'number' ? Math.round(v * 1e6) / 1e6 : v);
    return JSON.stringify(fig.renderers.map(r => {
      const d = r.data_source ? r.data_source.data : {};
      const keys = (d instanceof Map) ? Array.from(d.keys()) : Object.keys(d);
      const get = (k) => (d instanceof Map) ? d.get(k) : d[k];
      return keys.sort().map(k => [k, flat(get(k))]);
    }));
  }
  return null;
}"""


def figure_data(page, name: str):
    raw = page.evaluate(FIGURE_DATA_JS, name)
    return None if raw is None else json.loads(raw)


def wait_for_figure_change(page, name: str, before, timeout_s: float = 60.0):
    """Wait until the named figure's data differs from ``before``; returns the new data."""
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        now = figure_data(page, name)
        if now is not None and now != before:
            return now
        page.wait_for_timeout(100)
    raise AssertionError(f"figure {name!r} did not change within {timeout_s} s")


# Page coordinates of a data point in a named Bokeh figure (to click on it).
DATA_TO_PAGE_JS = """([name, x, y]) => {
  for (const doc of (window.Bokeh && window.Bokeh.documents) || []) {
    const fig = doc.get_model_by_name(name);
    if (!fig) continue;
    const view = window.Bokeh.index.find_one(fig);
    if (!view) return null;
    const sx = view.frame.x_scale.compute(x), sy = view.frame.y_scale.compute(y);
    const r = view.canvas_view.el.getBoundingClientRect();
    return [r.left + sx, r.top + sy];
  }
  return null;
}"""


def data_to_page(page, name: str, x: float, y: float):
    return page.evaluate(DATA_TO_PAGE_JS, [name, x, y])
