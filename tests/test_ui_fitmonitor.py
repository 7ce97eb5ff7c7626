"""Fit/sweep monitor state and plots in plain Python (runs in this process, no browser)."""
from __future__ import annotations

import threading
import time
from urllib.parse import parse_qs, urlparse

import numpy as np
import panel as pn
import pytest

from neurotwin_dash import sweep
from neurotwin_dash.ui.explorer import parse_query
from neurotwin_dash.ui.fitmonitor import FitMonitor, MonitorState, explorer_url, personal_table


def test_sweep_runs_in_the_background_and_its_heatmap_links_to_the_explorer(tmp_path):
    s = MonitorState(client="sync", run_dir=tmp_path)
    s.param.update(x_param="p", x_low=60.0, x_high=320.0, x_num=3, y_param="C", y_low=100.0, y_high=200.0,
             y_num=2, duration_s=1.0, metric="alpha_power", batch_size=2)
    mon = FitMonitor(state=s)
    assert s.start() and s.running
    s.wait()
    assert not s.running and s.error == "" and s.done == s.total == 6
    # the heatmap shows the store's values
    ds = sweep.open_sweep(str(s.store)).load()
    np.testing.assert_allclose(mon.map.cells.data["value"], ds["alpha_power"].values)
    # p = 60 is below JR's Hopf point: no alpha rhythm; the best cell lies at p >= 190
    assert s.data["best"]["p"] >= 190.0
    assert "best alpha_power" in s.best_text
    # a cell's link opens the explorer on exactly that simulation
    i = int(np.argmax(mon.map.cells.data["value"]))
    url = mon.map.cells.data["url"][i]
    q = parse_query({k: [v.encode() for v in vs] for k, vs in parse_qs(urlparse(url).query).items()})
    assert q["p"] == pytest.approx(mon.map.cells.data["x"][i]) and q["C"] == pytest.approx(mon.map.cells.data["y"][i])
    assert q["connectome"] == "single node" and q["model"] == "jansen_rit" and urlparse(url).path == "explorer"
    # the download gives the finished samples as netCDF that reloads with the same numbers
    import io
    import xarray as xr
    assert not mon.download.disabled
    got = xr.load_dataset(io.BytesIO(mon._results_file().getvalue()), engine="h5netcdf")
    np.testing.assert_allclose(got["alpha_power"].values, ds["alpha_power"].values)
    assert mon.download.filename == "sweep-results.nc"


def test_the_status_line_never_reads_finished_while_a_run_starts(tmp_path):
    s = MonitorState(client="sync", run_dir=tmp_path)
    s.param.update(x_param="p", x_low=60.0, x_high=320.0, x_num=2, y_param="C", y_low=100.0, y_high=200.0,
                   y_num=2, duration_s=0.5, metric="alpha_power", batch_size=4)
    mon = FitMonitor(state=s)
    shown = []
    mon.status.param.watch(lambda e: shown.append(e.new), "object")
    for _ in range(2):                     # a first run, and a second one after a finished run
        shown.clear()
        assert s.start()
        assert shown and all("finished" not in t for t in shown), shown
        assert shown[-1].startswith("**running**: 0 / 4")
        s.wait()
        assert "**finished**: 4 / 4" in mon.status.object


def test_stopped_sweep_keeps_its_partial_results_and_a_restart_computes_only_the_missing_batches(
        tmp_path, monkeypatch):
    real_run_batch = sweep.run_batch
    gate = threading.Event()
    calls = []

    def gated_run_batch(spec, batch, sample_index=None, functions=None):
        calls.append(sample_index[0] // 2)           # batch number (batch_size 2)
        if len(calls) >= 3:
            gate.wait(20)                            # the third batch runs while Stop is clicked
        return real_run_batch(spec, batch, sample_index, functions)

    monkeypatch.setattr(sweep, "run_batch", gated_run_batch)
    s = MonitorState(client="sync", run_dir=tmp_path)
    s.param.update(x_param="p", x_low=60.0, x_high=320.0, x_num=4, y_param="C", y_low=100.0, y_high=200.0,
                   y_num=3, duration_s=0.5, metric="alpha_power", batch_size=2)
    mon = FitMonitor(state=s)
    assert mon.stop_button.disabled and not s.stop()          # nothing to stop yet
    assert s.start() and not mon.stop_button.disabled and mon.start_button.disabled
    deadline = time.time() + 20
    while len(calls) < 3 and time.time() < deadline:
        time.sleep(0.01)
    s.poll_now()
    assert s.running and s.done == 4                         # two batches written, the third running
    assert s.stop() and mon.stop_button.disabled and "stopping" in mon.status.object
    gate.set()
    s.wait()
    assert not s.running and s.stopped and s.error == ""
    status = sweep.sweep_status(s.store)
    assert status["done"] == [0, 1, 2] and status["pending"] == [3, 4, 5]   # fewer than all 6
    assert s.done == 6 and s.total == 12
    assert mon.status.object.startswith("**stopped**: 6 / 12 samples")
    # the partial results stay browsable: finished cells shown, pending ones empty
    v = np.asarray(mon.map.cells.data["value"], dtype=float)
    assert v.shape == (12,) and np.isfinite(v[:6]).all() and np.isnan(v[6:]).all()
    assert mon.stop_button.disabled and not mon.start_button.disabled
    # Start with the same settings resumes: only batches 3-5 are computed
    calls.clear()
    store = s.store
    assert s.start() and s.store == store
    s.wait()
    assert sorted(calls) == [3, 4, 5]
    assert not s.running and not s.stopped and s.done == s.total == 12
    assert mon.status.object.startswith("**finished**: 12 / 12 samples")
    ds = sweep.open_sweep(str(s.store)).load()
    assert ds.sizes["sample"] == 12
    np.testing.assert_allclose(mon.map.cells.data["value"], ds["alpha_power"].values)
    # and equals the same sweep run in one go
    fresh = sweep.run_sweep(s.sweep_spec(), tmp_path / "fresh.zarr", client="sync", progress=False).dataset
    np.testing.assert_allclose(ds["alpha_power"].values, fresh["alpha_power"].values, rtol=1e-12)


def test_fit_reports_evaluations_and_the_best_loss(tmp_path):
    s = MonitorState(client="sync", run_dir=tmp_path, mode="fit")
    s.param.update(x_param="p", x_low=100.0, x_high=300.0, y_param="noise_sd", y_low=5.0, y_high=50.0,
             duration_s=2.0, generations=2, popsize=3, method="cmaes")
    mon = FitMonitor(state=s)
    assert s.fit_problem().noise_rng == "counter"          # the page's fits draw in the kernel
    assert s.start()
    s.wait()
    assert s.error == "" and s.done == 6
    loss = np.asarray(mon.map.points.data["value"])
    assert loss.shape == (6,) and np.all(loss >= 0)
    assert mon.losses.best.data["y"][-1] == pytest.approx(np.nanmin(loss))
    assert 100.0 <= s.data["best"]["p"] <= 300.0 and "best loss" in s.best_text
    res = s.results()                                    # what "Download results" writes
    np.testing.assert_allclose(res["loss"].values, loss)
    assert res.sizes["evaluation"] == 6 and set(res["generation"].values) == {0, 1}


def test_bad_ranges_are_refused_with_a_message():
    s = MonitorState(client="sync")
    s.param.update(x_param="p", x_low=-10.0, x_high=100.0)
    assert not s.start()
    assert "x range of 'p' = [-10, 100] is outside the allowed range [0, 350] 1/s" in s.error
    s.param.update(x_low=10.0, y_param="p")
    assert not s.start() and "two different parameters" in s.error


def test_choosing_an_axis_parameter_resets_its_range_to_the_declared_bounds():
    s = MonitorState(client="sync")
    s.x_param = "B"                                   # p's range 60-320 mV does not fit B (10-50 mV)
    assert (s.x_low, s.x_high) == (10.0, 50.0)


def _visible_widgets(obj) -> set[str]:
    """Names of the widgets a user sees: visible, inside visible layouts."""
    if not obj.visible:
        return set()
    names = {obj.name} if isinstance(obj, pn.widgets.Widget) else set()
    for child in getattr(obj, "objects", []):
        names |= _visible_widgets(child)
    return names


def test_each_mode_shows_only_the_controls_it_uses():
    mon = FitMonitor(state=MonitorState(client="sync"))
    column = mon.controls()
    shown = _visible_widgets(column)
    assert {"x parameter", "y parameter", "Model", "Metric", "Batch size", "Start"} <= shown
    assert not {"Subject", "Generations", "Method"} & shown
    mon.state.mode = "fit"
    shown = _visible_widgets(column)
    assert {"x parameter", "Model", "Method", "Generations", "Popsize", "Start"} <= shown
    assert not {"Subject", "Metric", "Batch size"} & shown
    mon.state.mode = "personal"    # model, connectome and ranges come from the subject and its linear fit
    shown = _visible_widgets(column)
    assert {"Subject", "Regime", "Quick", "Generations", "Popsize", "Start"} <= shown
    assert not {"x parameter", "Model", "Connectome", "Metric", "Method", "duration (s)"} & shown


def test_explorer_url_is_relative_and_encodes_the_single_node():
    url = explorer_url("jansen_rit", None, {"p": 120.0}, 2.0)
    assert url.startswith("explorer?") and "connectome=single+node" in url and "p=120" in url


def test_personal_mode_runs_personalize_off_the_event_loop_and_shows_the_twin_beside_its_baselines(tmp_path):
    s = MonitorState(client="sync", run_dir=tmp_path, mode="personal")
    assert s.subject == "hcp:101309" and "gw:NAP_013" in s.param.subject.objects
    s.param.update(subject="hcp:102311", quick=True, regime="excitatory")
    mon = FitMonitor(state=s)
    assert s.start()
    assert s.running                                     # returns at once: the fit runs in a thread
    s.wait()
    assert s.error == "" and not s.running and s.done == s.total == 2
    summary = s.data["summary"]
    assert summary["subject"] == "hcp:102311" and set(summary["baselines"]) >= {
        "log_sc", "strength", "regression", "linear_global", "linear_regional", "group_others"}
    r = summary["heldout"]["r"]
    assert -1 < r < 1 and f"twin held-out r {r:.3f}" in s.best_text
    table = mon.personal_result.object
    for name in summary["baselines"]:
        assert f"| {name} | {summary['baselines'][name]['r']:.3f} |" in table
    # the evaluations are decoded into the personal parameters (coupling, noise level)
    assert np.asarray(mon.map.points.data["x"]).shape == (2,) and np.all(np.asarray(mon.map.points.data["y"]) > 0)
    folder = tmp_path / "personal-hcp_102311-excitatory-quick"
    assert (folder / "twin.nc").exists() and (folder / "scores.json").exists()
    res = s.results()
    assert res.sizes["evaluation"] == 2 and "personal" in res.attrs


def test_personal_mode_can_fit_the_effective_twin_with_the_robustness_bound(tmp_path):
    s = MonitorState(client="sync", run_dir=tmp_path, mode="personal")
    s.param.update(subject="gw:NAP_013", quick=True, weights="effective")
    st = s.personal_settings()
    assert (st.coupling, st.robust_criterion, st.ec_maxiter) == ("effective", "bound", 25)
    assert s.start()
    s.wait()
    assert s.error == "" and not s.running
    summary = s.data["summary"]
    assert "linear_effective" in summary["baselines"] and -1 < summary["heldout"]["r"] < 1
    assert summary["margin"]["criterion"] == "bound" and summary["settings"]["coupling"] == "effective"
    assert (tmp_path / "personal-gw_NAP_013-alpha-effective-quick" / "twin.nc").exists()
    assert "**twin (alpha, effective)**" in personal_table(summary)
