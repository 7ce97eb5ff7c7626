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


def test_infer_page_downloads_the_draws_and_the_posterior(new_page, server, artifacts, tmp_path):
    import zipfile

    import xarray as xr

    from neurotwin_dash.infer import Posterior
    page, log = new_page(height=2200)
    page.goto(server.url("/infer"))
    page.locator(".infer-summary", has_text="Observation: a simulation").first.wait_for(timeout=90_000)
    page.locator(".download-samples").first.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "infer_downloads.png"), full_page=True)
    with page.expect_download(timeout=60_000) as info:
        page.locator(".download-samples a, .download-samples button").first.click()
    path = tmp_path / info.value.suggested_filename
    info.value.save_as(path)
    assert path.name == "jr_browser-samples.nc"
    ds = xr.load_dataset(path, engine="h5netcdf")
    assert {"A", "B", "C", "observed", "calibration_coverage"} <= set(ds.data_vars)
    assert ds.sizes["draw"] == 1000 and ds["A"].attrs["units"] == "mV" and "truth" in ds["A"].attrs
    lo, hi = 2.5, 5.0                                         # the draws lie in A's prior range
    assert lo <= float(ds["A"].min()) and float(ds["A"].max()) <= hi
    assert ds["calibration_sbc_rank_hist"].sum("rank_bin").values.tolist() == [30, 30, 30]

    with page.expect_download(timeout=60_000) as info:
        page.locator(".download-posterior a, .download-posterior button").first.click()
    zpath = tmp_path / info.value.suggested_filename
    info.value.save_as(zpath)
    with zipfile.ZipFile(zpath) as z:
        z.extractall(tmp_path / "unzipped")
    post = Posterior.load(tmp_path / "unzipped" / "jr_browser")
    assert post.param_names == ["A", "B", "C"]
    assert log.errors == []
