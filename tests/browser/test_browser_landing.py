"""The landing page at `/` served by `neurotwin serve`, driven in Debian's chromium (offline)."""
from __future__ import annotations

import pytest

from ui_browser import serving


@pytest.fixture(scope="module")
def server():
    with serving(["explorer", "montage", "fit"], extra=["--prefix", "lab"]) as s:
        yield s


def test_landing_page_loads_offline_and_every_link_opens_its_app(new_page, server, artifacts):
    page, log = new_page(width=1280, height=900)
    failed, outside = [], []
    # a navigation away cancels the old page's pending requests (ERR_ABORTED): not a failure
    page.on("requestfailed", lambda r: failed.append(f"{r.failure} {r.url}")
            if "ERR_ABORTED" not in (r.failure or "") else None)
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("request", lambda r: outside.append(r.url)
            if not r.url.startswith((server.base, "data:", "blob:")) else None)
    page.goto(server.url("/lab/"))
    cards = page.locator(".app-card")
    cards.first.wait_for(timeout=60_000)
    page.locator(".dask-status", has_text="Dask").first.wait_for()
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(artifacts / "landing.png"), full_page=True)
    assert cards.count() == 3
    links = page.locator("a.app-link")
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    assert [h.rsplit("/", 1)[-1] for h in hrefs] == ["explorer", "montage", "fit"]
    assert all(not h.startswith("/") for h in hrefs)      # relative: works under any prefix
    assert page.locator("img").count() == 3               # thumbnails embedded, not fetched
    assert failed == [] and outside == []
    assert log.errors == []
    for name in ("explorer", "montage", "fit"):
        page.goto(server.url("/lab/"))
        page.locator("a.app-link", has_text={"explorer": "Explorer", "montage": "Montage",
                                              "fit": "Fit"}[name]).first.click()
        page.wait_for_url(f"**/lab/{name}")
        page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0", timeout=60_000)
    assert failed == [] and outside == [] and log.errors == []
