"""Render the landing page's app thumbnails (``neurotwin_dash/ui/thumbnails/<app>.png``).

Serves the apps with ``neurotwin serve`` on loopback, opens each in Debian's chromium
(Playwright; never ``playwright install``), waits for its first result, screenshots the main
area and shrinks it to 320 px wide. Run from the repository root after a visible change:

    python scripts/make_thumbnails.py [--overwrite]
"""
from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "neurotwin_dash" / "ui" / "thumbnails"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
#: app -> (query, CSS class and text of the element that shows its first result)
APPS = {"explorer": ("?duration_s=5", ".run-summary", "median spectral peak"),
        "montage": ("", ".effect-summary", "power in"),
        "fit": ("", ".bk-btn", "Start")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--overwrite", action="store_true", help="replace existing thumbnails")
    ap.add_argument("apps", nargs="*", default=list(APPS), help="apps to render (default: all)")
    args = ap.parse_args(argv)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "neurotwin_dash.cli", "serve", *args.apps, "--port", str(port),
                               "--allow-websocket-origin", f"127.0.0.1:{port}"], start_new_session=True)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/liveness", timeout=2)
                break
            except OSError:
                time.sleep(0.3)
        OUT.mkdir(exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            for app in args.apps:
                target = OUT / f"{app}.png"
                if target.exists() and not args.overwrite:
                    print(f"{target} exists (use --overwrite)")
                    continue
                query, css, ready = APPS[app]
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(f"http://127.0.0.1:{port}/{app}{query}")
                page.locator(css, has_text=ready).first.wait_for(timeout=180_000)
                page.wait_for_timeout(3000)
                png = page.locator("#main").first.screenshot() if page.locator("#main").count() else page.screenshot()
                img = Image.open(io.BytesIO(png)).convert("RGB")
                img = img.crop((0, 0, img.width, min(img.height, img.width * 3 // 4)))   # 4:3, top
                img.thumbnail((320, 240))
                fd, tmp = tempfile.mkstemp(suffix=".png", dir=OUT)
                os.close(fd)
                img.save(tmp, optimize=True)
                os.chmod(tmp, 0o644)          # mkstemp makes it private; thumbnails are shipped
                os.replace(tmp, target)       # atomic: never a half-written thumbnail
                print(f"wrote {target} ({target.stat().st_size // 1024} KiB)")
                page.close()
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
