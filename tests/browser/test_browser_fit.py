"""The fit/sweep monitor: start a sweep, watch it finish, open a cell in the explorer."""
from __future__ import annotations

import re
import time

import pytest

from ui_browser import data_to_page, figure_data, serving


@pytest.fixture(scope="module")
def server():
    with serving(["fit", "explorer"]) as s:
        yield s


def text_of(locator) -> str:
    return locator.evaluate("el => (el.shadowRoot ? el.shadowRoot.textContent : '') + el.textContent")


def test_sweep_progress_heatmap_and_click_through_to_the_explorer(new_page, server, artifacts):
    page, log = new_page(height=1300)
    page.goto(server.url("/fit"))
    page.locator(".start-run button").first.wait_for()
    # a small grid keeps the test short: 3 x 2 single-node samples of 1 s
    for label, value in (("X num", "3"), ("Y num", "2"), ("duration (s)", "1")):
        box = page.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Enter")
    page.locator(".start-run button").first.click()
    page.locator(".run-status", has_text="finished").first.wait_for(timeout=120_000)
    status = text_of(page.locator(".run-status", has_text="finished").first)
    assert "6 / 6 samples" in status and "best alpha_power" in status
    cells = figure_data(page, "monitor-map")
    assert cells is not None
    page.screenshot(path=str(artifacts / "fit_sweep_finished.png"))

    # click the best cell (the star): the explorer opens on that simulation
    best = status.split(" at ")[1].rstrip(".").strip()
    p_val = float(best.split("p = ")[1].split(",")[0])
    c_val = float(best.split("C = ")[1].split()[0])
    xy = data_to_page(page, "monitor-map", p_val, c_val)
    with page.context.expect_page() as info:
        page.mouse.click(*xy)
    explorer = info.value
    explorer.wait_for_load_state()
    assert "/explorer?" in explorer.url and "connectome=single+node" in explorer.url
    explorer.locator(".run-summary", has_text="median spectral peak").first.wait_for(timeout=90_000)
    summary = text_of(explorer.locator(".run-summary", has_text="median spectral peak").first)
    assert f"p = {p_val:g}" in summary and f"C = {c_val:g}" in summary
    explorer.screenshot(path=str(artifacts / "fit_opened_in_explorer.png"))
    assert log.errors == []


def test_stop_keeps_the_finished_samples_and_start_resumes_the_rest(new_page, server, artifacts):
    page, log = new_page(height=1300)
    page.goto(server.url("/fit"))
    page.locator(".start-run button").first.wait_for()
    # 6 x 5 samples of 76 regions x 10 s, one per Dask task: long enough to stop half-way
    page.get_by_label("Connectome", exact=True).select_option("tvb76")
    for label, value in (("X num", "6"), ("Y num", "5"), ("duration (s)", "10"), ("Batch size", "1")):
        box = page.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Enter")
    page.locator(".start-run button").first.click()
    status = page.locator(".run-status").first
    deadline = time.monotonic() + 120
    while not re.search(r"running: [1-9]\d* / 30", text_of(status)):   # the first samples are in
        assert time.monotonic() < deadline, text_of(status)
        page.wait_for_timeout(100)
    page.locator(".stop-run button").first.click()
    page.locator(".run-status", has_text="stopped").first.wait_for(timeout=120_000)
    stopped = text_of(page.locator(".run-status", has_text="stopped").first)
    done = int(re.search(r"stopped: (\d+) / 30", stopped).group(1))
    assert 0 < done < 30, stopped
    assert page.locator(".stop-run button").first.is_disabled()
    page.screenshot(path=str(artifacts / "fit_sweep_stopped.png"))

    # Start with the same settings resumes: the finished samples are kept, the rest computed
    page.locator(".start-run button").first.click()
    page.locator(".run-status", has_text="finished").first.wait_for(timeout=180_000)
    finished = text_of(page.locator(".run-status", has_text="finished").first)
    assert "30 / 30 samples" in finished
    page.screenshot(path=str(artifacts / "fit_sweep_resumed.png"))
    assert log.errors == []


def test_personal_twin_runs_and_shows_held_out_r_beside_the_baselines(new_page, server, artifacts):
    page, log = new_page(height=1400)
    page.goto(server.url("/fit"))
    page.locator(".start-run button").first.wait_for()
    page.get_by_role("button", name="personal", exact=True).click()
    page.get_by_label("Subject", exact=True).select_option("hcp:102311")
    # quick (the default): 240 BOLD frames, 1 CMA-ES generation of 2, then the scored run
    page.locator(".start-run button").first.click()
    # the twin's held-out r appears in the status only when the run has been scored
    page.locator(".run-status", has_text="twin held-out r").first.wait_for(timeout=420_000)
    status = text_of(page.locator(".run-status", has_text="twin held-out r").first)
    assert "finished" in status and "2 / 2 evaluations" in status and "hcp:102311: twin held-out r" in status
    table = page.locator(".personal-result").first
    table.locator("table").first.wait_for()
    text = text_of(table)
    for name in ("twin (alpha)", "log_sc", "strength", "regression", "linear_global", "linear_regional",
                 "group_others"):
        assert name in text, text
    r_twin = float(re.search(r"twin \(alpha\)\s*([-0-9.]+)", text).group(1))
    assert -1 < r_twin < 1
    assert figure_data(page, "monitor-map") is not None
    page.screenshot(path=str(artifacts / "fit_personal_twin.png"))
    assert log.errors == []
