"""The explorer served by `neurotwin serve`, driven in Debian's chromium."""
from __future__ import annotations

import json
import threading
import time
import urllib.request

import numpy as np
import pytest

from ui_browser import figure_data, serving, wait_for_figure_change

QUICK = "?connectome=tvb76&duration_s=2&montage=standard_1020"


@pytest.fixture(scope="module")
def server():
    with serving(["explorer"]) as s:
        yield s


def open_explorer(new_page, server, query=QUICK, **kw):
    page, log = new_page(**kw)
    page.goto(server.url("/explorer" + query))
    wait_for_result(page)
    return page, log


def wait_for_result(page, timeout_s=90.0, contains="median spectral peak"):
    page.locator(".run-summary", has_text=contains).first.wait_for(timeout=timeout_s * 1000)
    page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0")


def shadow_text(locator) -> str:
    """Text of an element including its shadow DOM (Panel renders panes inside shadow roots)."""
    return locator.evaluate("el => (el.shadowRoot ? el.shadowRoot.textContent : '') + el.textContent")


def summary(page) -> str:
    return shadow_text(page.locator(".run-summary", has_text="median spectral peak").first)


def press_on_slider(page, name: str, key: str, times: int = 1):
    handle = page.locator(f".param-{name} .noUi-handle").first
    handle.focus()
    for _ in range(times):
        handle.press(key)


def ping_ms(server) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(server.url("/liveness"), timeout=5) as r:
        r.read()
    return (time.perf_counter() - t0) * 1000


def test_moving_a_slider_redraws_the_spectrum_without_console_errors(new_page, server, artifacts):
    page, log = open_explorer(new_page, server)
    plot = page.locator(".plot-region-spectra canvas").first
    before_png = plot.screenshot()
    before = figure_data(page, "region-spectra")
    page.screenshot(path=str(artifacts / "explorer_before.png"))

    press_on_slider(page, "p", "End")                      # p -> 350 1/s: past the upper Hopf point
    after = wait_for_figure_change(page, "region-spectra", before)
    page.locator(".run-summary", has_text="p = 350").wait_for()
    page.wait_for_timeout(400)                             # let the canvas repaint
    assert plot.screenshot() != before_png                 # the plot really redrew
    assert after != before
    page.screenshot(path=str(artifacts / "explorer_after_slider.png"))
    assert "p = 350" in summary(page)
    assert log.errors == []


def test_five_sessions_keep_their_own_state_and_the_server_answers_pings(new_page, server, artifacts):
    moves = [("Home", 1, "p = 0"), ("End", 1, "p = 350"), ("ArrowRight", 10, "p = 230"),
             ("ArrowLeft", 10, "p = 210"), ("PageDown", 1, "p = ")]
    pages = [open_explorer(new_page, server, QUICK, width=1200, height=900)[0] for _ in moves]
    pings: list[float] = []
    failures: list[str] = []
    stop = threading.Event()

    def pinger():
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                pings.append(ping_ms(server))
            except OSError as exc:                         # timed out (5 s): the loop was blocked
                pings.append(5000.0)
                failures.append(f"{exc!r} after {time.perf_counter() - t0:.2f} s")
            time.sleep(0.05)

    t = threading.Thread(target=pinger, daemon=True)
    t.start()
    try:
        for page, (key, n, _) in zip(pages, moves):
            press_on_slider(page, "p", key, n)
        texts = []
        for page, (key, n, expect) in zip(pages, moves):
            page.locator(".run-summary", has_text=expect).wait_for(timeout=120_000)
            texts.append(summary(page))
    finally:
        stop.set()
        t.join()
    values = [float(s.split("p = ")[1].split(",")[0].split(".")[0]) if "p = " in s else None for s in texts]
    assert values[:4] == [0.0, 350.0, 230.0, 210.0]
    assert values[4] is not None and values[4] < 220 and values[4] not in values[:4]
    # each page shows its own p on its own slider too
    for page, v in zip(pages, values):
        assert f"p (1/s): {v:g}" in shadow_text(page.locator(".param-p").first)
    pages[0].screenshot(path=str(artifacts / "explorer_session_p0.png"))
    pages[1].screenshot(path=str(artifacts / "explorer_session_p350.png"))
    assert len(pings) >= 10
    (artifacts / "explorer_ping_ms.json").write_text(json.dumps(sorted(pings)))
    assert failures == []
    # The server's event loop never blocks for long (jobs run on Dask workers, plots update in
    # place one per tick). On this 2-core machine the browsers, the workers and other test
    # processes share the cores, so an odd ping waits for the CPU itself: the bound is on the
    # 95th percentile, with a hard ceiling on every ping.
    p95 = float(np.percentile(pings, 95))
    assert p95 < 200.0, f"95th percentile ping {p95:.0f} ms (n={len(pings)}): {sorted(pings)[-5:]}"
    assert max(pings) < 500.0, f"slowest ping {max(pings):.0f} ms (n={len(pings)})"


def test_text_in_a_number_box_shows_an_inline_error_and_the_app_keeps_working(new_page, server, artifacts):
    page, log = open_explorer(new_page, server)
    box = page.locator(".number-box input").first          # the edge weight box
    box.fill("abc")
    box.press("Enter")
    err = page.locator(".inline-error", has_text="is not a number").first
    err.wait_for()
    assert "edge weight: 'abc' is not a number; allowed [0, 10] normalised" in shadow_text(err)
    box.fill("99")
    box.press("Enter")
    page.locator(".inline-error", has_text="outside the allowed range [0, 10]").first.wait_for()
    page.screenshot(path=str(artifacts / "explorer_inline_error.png"))
    # still working: a slider change re-simulates and redraws
    before = figure_data(page, "region-spectra")
    press_on_slider(page, "noise_sd", "End")
    wait_for_figure_change(page, "region-spectra", before)
    page.locator(".run-summary", has_text="noise_sd = 100").wait_for()
    assert log.errors == []


def test_fc_selector_changes_the_matrix_and_downloads_reload(new_page, server, artifacts, tmp_path):
    import xarray as xr
    from neurotwin_dash.twin import Twin
    page, log = open_explorer(new_page, server)
    # plots of hidden tabs are not in the browser's document until their tab is opened
    assert figure_data(page, "fc-matrix") is None
    page.locator(".plot-tabs .bk-tab", has_text="Connectivity").first.click()
    page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('fc-matrix') !== null")
    before = figure_data(page, "fc-matrix")
    assert np.isfinite(np.array(before[0][2][1][0], dtype=float)).sum() == 76 * 75   # the latest result's FC
    page.locator(".fc-measure select").first.select_option("pearson")
    after = wait_for_figure_change(page, "fc-matrix", before, timeout_s=20)
    assert after != before
    # the title is set after the image data (FCPlot.update): its patch may arrive a moment later
    page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('fc-matrix').title.text"
                           ".startsWith('Pearson')", timeout=20_000)
    title = page.evaluate("() => Bokeh.documents[0].get_model_by_name('fc-matrix').title.text")
    assert title.startswith("Pearson of the raw signal") and "r(FC, log SC)" in title
    page.locator(".fc-measure").first.screenshot(path=str(artifacts / "explorer_fc_selector.png"))
    link = page.locator(".share-link input").first.input_value()
    assert link.startswith(server.url("/explorer?")) and "fc_measure=pearson" in link

    page.locator(".prepare-downloads button").first.click()
    page.locator(".export-status", has_text="Ready").first.wait_for(timeout=120_000)
    page.screenshot(path=str(artifacts / "explorer_downloads_ready.png"), full_page=True)
    for name, cls in (("run.nc", "download-run"), ("twin.nc", "download-twin")):
        with page.expect_download() as info:
            page.locator(f".{cls} a, .{cls} button").first.click()
        path = tmp_path / name
        info.value.save_as(path)
        if name == "run.nc":
            run = xr.load_dataset(path, engine="h5netcdf")
            assert run.sizes["region"] == 76 and "v_pyr" in run
        else:
            assert Twin.load(path).verify()
    assert log.errors == []
