"""The inference page served by `neurotwin serve`, driven in Debian's chromium."""
from __future__ import annotations

import pytest

from ui_browser import figure_data, serving, wait_for_figure_change

pytest.importorskip("sbi")


@pytest.fixture(scope="module")
def posterior_dir(tmp_path_factory):
    """A small posterior trained here (Jansen–Rit A, B, C; 300 simulations, 30 held out)."""
    from neurotwin_dash import infer
    work = tmp_path_factory.mktemp("infer-browser")
    spec = infer.InferSpec(model="jansen_rit", name="browser test",
                           params={"A": {"low": 2.5, "high": 5.0}, "B": {"low": 15.0, "high": 30.0},
                                   "C": {"low": 90.0, "high": 200.0}},
                           features={"psd_hz": [4, 8, 10, 12, 16, 25, 40], "alpha_peak": True},
                           n_simulations=300, n_test=30, duration_s=6.0, batch_size=150,
                           estimator={"max_num_epochs": 40})
    infer.train(spec, work / "runs", client="sync").save(work / "posteriors" / "jr_browser")
    return work / "posteriors"


@pytest.fixture(scope="module")
def server(posterior_dir):
    with serving(["infer"], env={"NEUROTWIN_POSTERIORS": str(posterior_dir)}) as s:
        yield s


def test_infer_page_renders_a_posterior_and_reacts_to_a_feature_slider(new_page, server, artifacts):
    page, log = new_page(height=2200)
    page.goto(server.url("/infer"))
    page.locator(".infer-summary", has_text="Observation: a simulation").first.wait_for(timeout=90_000)
    page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0")
    before = figure_data(page, "infer-marginal-A")
    assert before is not None and any(v for v in str(before))
    pred = figure_data(page, "infer-predictive")
    assert pred is not None
    page.screenshot(path=str(artifacts / "infer_initial.png"))

    handle = page.locator(".feature-log_psd_10Hz .noUi-handle").first
    handle.focus()
    handle.press("End")                                   # the alpha power feature to its maximum
    after = wait_for_figure_change(page, "infer-marginal-A", before, timeout_s=30)
    assert after != before
    page.locator(".infer-summary", has_text="Observation: the feature sliders").first.wait_for(timeout=30_000)
    page.wait_for_timeout(400)
    page.screenshot(path=str(artifacts / "infer_after_slider.png"))
    assert log.errors == []
