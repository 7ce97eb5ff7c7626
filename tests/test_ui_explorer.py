"""Explorer state, jobs and panes exercised in plain Python (no browser, no server)."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from neurotwin_dash.models import get_model
from neurotwin_dash.ui import compute, panes
from neurotwin_dash.ui.explorer import Explorer, parse_query
from neurotwin_dash.ui.state import SINGLE_NODE, ExplorerState, JobRunner, paramset_class, values_of
from neurotwin_dash.ui.widgets import NumberBox, paramset_widgets


def _peak_hz(res, lo=1.0):
    f = res["frequency"].values
    p = res["psd_region"].values.mean(axis=0)
    sel = f >= lo
    return f[sel][np.argmax(p[sel])]


@pytest.fixture(scope="module")
def node_state():
    s = ExplorerState(mode="sync", connectome=SINGLE_NODE, auto_run=False)
    s.duration_s = 4.0
    s.auto_run = True
    s.run()
    assert s.runner.error == ""
    return s


def test_sliders_come_from_the_models_declared_params():
    jr = get_model("jansen_rit")
    obj = paramset_class(jr.PARAMS, "JR")()
    widgets = {w.name: w for w in paramset_widgets(obj)}
    spec = jr.PARAMS["A"]
    w = widgets[spec.label]                       # "A (mV)": the unit is in the label
    assert spec.label == "A (mV)"
    assert (w.start, w.end, w.value) == (spec.low, spec.high, spec.default)
    assert obj.param["A"].doc == spec.doc         # the doc is the tooltip
    with pytest.raises(ValueError):
        obj.A = spec.high + 1                     # declared bounds are enforced
    assert len(widgets) == len(jr.PARAMS)


def test_coupling_slider_uses_a_narrower_soft_range_but_keeps_declared_bounds():
    from neurotwin_dash.simulate import NETWORK_PARAMS
    obj = paramset_class(NETWORK_PARAMS, "Net")()
    (w,) = [x for x in paramset_widgets(obj, ["coupling"])]
    assert w.end == 50.0
    obj.coupling = NETWORK_PARAMS["coupling"].high          # typed values up to the declared bound
    assert obj.coupling == NETWORK_PARAMS["coupling"].high


def test_single_node_jansen_rit_peaks_in_alpha_and_moves_when_input_drops(node_state):
    s = node_state
    res = s.runner.result
    assert 10.0 <= _peak_hz(res) <= 11.5                    # docs/science.md: 10.75 Hz at p = 220
    alpha = float(res["band_region"].sel(band="alpha").values[0])
    n_before = s.runner.n_done
    s.model_params.p = 60.0                                  # below the Hopf point: no limit cycle
    assert s.runner.n_done == n_before + 1                   # the change re-simulated
    res2 = s.runner.result
    assert res2 is not res
    alpha2 = float(res2["band_region"].sel(band="alpha").values[0])
    assert alpha2 < 0.05 * alpha                             # alpha power collapses (noise only)
    s.model_params.p = 220.0
    assert 10.0 <= _peak_hz(s.runner.result) <= 11.5


def test_view_only_settings_do_not_resimulate(node_state):
    s = node_state
    n = s.runner.n_done
    s.band = "beta"
    s.map_band = "theta"
    assert s.runner.n_done == n


def test_same_seed_gives_identical_result_and_new_seed_differs(node_state):
    s = node_state
    a = s.runner.result["psd_region"].values.copy()
    s.seed = 1
    b = s.runner.result["psd_region"].values.copy()
    s.seed = 0
    c = s.runner.result["psd_region"].values
    np.testing.assert_array_equal(a, c)
    assert np.abs(np.log(a[:, 10:] / b[:, 10:])).max() > 0.01


def test_connectome_edits_reach_the_simulated_weights():
    s = ExplorerState(mode="sync", auto_run=False, connectome="tvb76")
    s.duration_s = 1.0
    s.montage = "starstim8"
    labels = s.labels()
    s.update_params({"lesions": ["rA1"], "weight_scale": 0.5, "coupling": 2.0})
    s.add_edge("lV1", "rV1", 0.8)
    s.run()
    assert s.runner.error == ""
    res = s.runner.result
    w = res["weights"].values
    i = labels.index("rA1")
    assert w[i].sum() == 0 and w[:, i].sum() == 0            # lesioned region disconnected
    a, b = labels.index("lV1"), labels.index("rV1")
    assert w[a, b] == pytest.approx(0.4) and w[b, a] == pytest.approx(0.4)   # 0.8 × scale 0.5
    assert w.max() == pytest.approx(0.5)                     # max-normalised, then × 0.5
    assert res.sizes["sensor"] == 8 and res["eeg"].shape[1] == 8
    spec = s.spec()
    assert spec["params"]["coupling"] == 2.0 and spec["lesions"] == ["rA1"]


def test_bad_edge_is_refused_with_a_message_naming_the_field():
    s = ExplorerState(mode="sync", auto_run=False, connectome="tvb76")
    with pytest.raises(ValueError, match="edge weight must be in"):
        s.add_edge("lV1", "rV1", -1)
    with pytest.raises(ValueError, match="edge target: unknown region"):
        s.add_edge("nowhere", "rV1", 1)
    assert s.edges == []


def test_switching_to_hcp80_loads_its_empirical_fc_and_scores_the_fit():
    s = ExplorerState(mode="sync", auto_run=False)
    s.connectome = "hcp80"
    assert s.empirical_fc == "hcp80_fc"
    s.update_params({"duration_s": 2.0, "coupling": 5.0, "montage": "starstim8"})
    s.run()
    res = s.runner.result
    assert s.runner.error == ""
    fc = res["fc"].sel(measure="pearson").values
    fit = float(res["fc_fit"].sel(measure="pearson"))
    assert np.isfinite(fit) and -1 <= fit <= 1
    assert fit == pytest.approx(compute.fc_fit(fc, res["fc_empirical"].values))
    # the FC plot shows simulated (upper) and empirical (lower) triangles on shared colour limits
    plot = panes.FCPlot()
    plot.update(res, "pearson")
    z = plot.source.data["image"][0]
    n = res.sizes["region"]
    iu, il = np.triu_indices(n, 1), np.tril_indices(n, -1)
    np.testing.assert_allclose(z[iu], fc[iu])
    np.testing.assert_allclose(z[il], res["fc_empirical"].values[il])
    assert f"r = {fit:.2f}" in plot.figure.title.text
    both = np.concatenate([fc[iu], res["fc_empirical"].values[il]])
    lim = max(abs(np.nanmin(both)), abs(np.nanmax(both)))
    assert (plot.mapper.low, plot.mapper.high) == pytest.approx((-lim, lim))   # signed: symmetric


def test_model_error_is_shown_not_raised():
    s = ExplorerState(mode="sync", auto_run=False, connectome=SINGLE_NODE)
    s.duration_s = 1.0
    spec = s.spec()
    spec["params"]["A"] = 99.0                               # outside [2, 10] mV
    s.runner.submit(compute.explorer_job, spec)
    assert "'A'" in s.runner.error and "[2, 10]" in s.runner.error
    assert not s.runner.busy


def test_job_runner_keeps_only_the_latest_result():
    r = JobRunner(mode="thread")
    r.submit(time.sleep, 0.6)                                # stale: returns None after 0.6 s
    r.submit(abs, -7)                                        # latest
    t0 = time.time()
    while (r.busy or r.n_done == 0) and time.time() - t0 < 5:
        time.sleep(0.02)
    assert r.result == 7 and r.n_done == 1
    time.sleep(0.8)                                          # the stale job finished meanwhile
    assert r.result == 7 and r.n_done == 1


def test_number_box_shows_inline_errors_and_keeps_last_good_value():
    box = NumberBox("current", 1.0, -2.0, 2.0, unit="mA")
    box.set_text("abc")
    assert box.value == 1.0 and box.alert.visible
    assert box.error == "current: 'abc' is not a number; allowed [-2, 2] mA"
    box.set_text("3.5")
    assert "outside the allowed range [-2, 2] mA" in box.error and box.value == 1.0
    box.set_text("-1.5")
    assert box.value == -1.5 and box.error == "" and not box.alert.visible


def test_query_arguments_set_the_explorer_state():
    assert parse_query({"coupling": [b"5"], "seed": [b"3"], "lesions": [b"rA1,lV1"]}) == \
        {"coupling": 5.0, "seed": 3, "lesions": ["rA1", "lV1"]}
    ex = Explorer(mode="sync")
    ex.state.auto_run = False
    ex.apply_query({"connectome": [b"tvb76"], "coupling": [b"7.5"], "p": [b"180"]})
    assert ex.state.network_params.coupling == 7.5 and ex.state.model_params.p == 180.0
    ex.apply_query({"coupling": [b"lots"]})
    assert ex.query_error.visible and "coupling" in ex.query_error.object


def test_plots_update_in_place_from_a_result(node_state):
    res = node_state.runner.result
    plots = panes.explorer_plots()
    sources = {k: [r.data_source for r in p.figure.renderers] for k, p in plots.items()}
    for p in plots.values():
        p.update(None)
        assert "waiting" in p.figure.title.text
    for p in plots.values():
        p.update(res)
    # same figures and sources, new data
    assert {k: [r.data_source for r in p.figure.renderers] for k, p in plots.items()} == sources
    sp = plots["region_spectra"]
    np.testing.assert_allclose(sp.mean.data["y"], np.log10(res["psd_region"].values[0]), rtol=1e-12)
    assert "needs a connectome" in plots["brain_map"].figure.title.text      # single node
    assert "needs a connectome and a montage" in plots["topomap"].figure.title.text
    assert plots["eeg_traces"].figure.title.text.startswith("Region signals")


def test_set_columns_sends_only_the_columns_that_changed():
    from bokeh.document import Document
    from bokeh.models import ColumnDataSource
    src = ColumnDataSource({"x": np.arange(4.0), "y": np.array([1.0, np.nan, 3, 4]), "name": list("abcd")})
    doc = Document()
    doc.add_root(src)
    events = []
    doc.on_change(lambda e: events.append(e))
    panes.set_columns(src, {"x": np.arange(4.0), "y": np.array([1.0, np.nan, 3, 4]), "name": list("abcd")})
    assert events == []                                   # identical data (NaN included): nothing sent
    panes.set_columns(src, {"x": np.arange(4.0), "y": np.array([1.0, 2, 3, 4]), "name": list("abcd")})
    assert len(events) == 1 and events[0].cols == ["y"]   # the x values and names do not travel again
    np.testing.assert_array_equal(src.data["y"], [1, 2, 3, 4])
    panes.set_columns(src, {"x": np.arange(3.0), "y": np.ones(3), "name": list("abc")})   # new length
    assert len(events) == 2 and src.data["x"].tolist() == [0, 1, 2] and list(src.data["name"]) == list("abc")


def test_spectra_lines_are_one_nan_separated_glyph():
    x, y = panes.nan_joined(np.arange(3.0), np.array([[1.0, 2, 3], [4, 5, 6]]), offsets=[0, 10])
    np.testing.assert_array_equal(x, [0, 1, 2, np.nan, 0, 1, 2, np.nan])
    np.testing.assert_array_equal(y, [1, 2, 3, np.nan, 14, 15, 16, np.nan])


def test_network_plots_show_centres_topomap_and_traces():
    s = ExplorerState(mode="sync", auto_run=False, connectome="tvb76")
    s.update_params({"duration_s": 1.0})
    s.run()
    res = s.runner.result
    d = panes.brain_map_data(res, "alpha")
    c = res["centres"].values
    right = [i for i, lab in enumerate(d["region"]) if lab.startswith("r")]
    assert np.all(d["x"][right] > 0)                         # right hemisphere on the right
    np.testing.assert_allclose(d["power"], np.log10(res["band_region"].sel(band="alpha").values))
    np.testing.assert_allclose(d["y"], c[:, 1])
    Z, sensors = panes.topomap_data(res, "alpha")
    assert Z.shape == (64, 64) and np.isfinite(Z[32, 32]) and np.isnan(Z[0, 0])
    # the interpolant passes (nearly) through the electrode values
    g = np.linspace(-1.15, 1.15, 64)
    i = sensors["channel"].index("Cz")
    ix, iy = np.abs(g - sensors["x"][i]).argmin(), np.abs(g - sensors["y"][i]).argmin()
    assert abs(Z[iy, ix] - sensors["power"][i]) < 0.1 * (np.nanmax(Z) - np.nanmin(Z))
    line, ticks, title = panes.traces_data(res)
    assert list(ticks.values()) == [ch for ch in panes.CLASSIC_1020 if ch in sensors["channel"]]
    assert title.startswith("Simulated EEG") and "µV" in title


def test_topomap_layout_puts_electrodes_where_they_belong():
    from neurotwin_dash.observe import forward
    fwd = forward.forward_model("tvb76", "standard_1020")
    xy = compute.sensor_layout_2d(fwd["sensor_position"].values, fwd.attrs["sphere_r0_m"])
    pos = dict(zip([str(s) for s in fwd["sensor"].values], xy))
    assert np.hypot(*pos["Cz"]) < 0.15                      # vertex in the middle
    assert pos["T7"][0] < -0.9 and pos["T8"][0] > 0.9        # left / right on the rim
    assert pos["Fpz"][1] > 0.9 and pos["Oz"][1] < -0.8      # nose up


def test_explorer_viewer_builds_its_page():
    ex = Explorer(mode="sync")
    page = ex.__panel__()
    assert page.get_root() is not None
    ex.state.model = ex.state.model                          # no-op keeps the same sliders
    assert set(values_of(ex.state.model_params)) == set(get_model(ex.state.model).PARAMS.names)


@pytest.mark.parametrize("model", ["wendling", "lanmm", "wilson_cowan", "lopes_da_silva"])
def test_every_model_gets_its_own_sliders_and_simulates(model):
    s = ExplorerState(mode="sync", auto_run=False, connectome=SINGLE_NODE)
    s.duration_s = 1.0
    s.model = model
    spec = get_model(model)
    assert set(values_of(s.model_params)) == set(spec.PARAMS.names)
    assert s.output == spec.OBSERVED[0] and list(s.param.output.objects) == list(spec.OBSERVED)
    s.run()
    assert s.runner.error == ""
    res = s.runner.result
    assert res.attrs["output"] == s.output and np.isfinite(res["psd_region"].values).all()


def test_lanmm_superficial_output_carries_gamma():
    s = ExplorerState(mode="sync", auto_run=False, connectome=SINGLE_NODE, model="lanmm")
    s.update_params({"duration_s": 3.0, "output": "v_p2"})
    s.run()
    assert s.runner.result.attrs["output"] == "v_p2"
    assert 30.0 <= _peak_hz(s.runner.result, lo=20.0) <= 50.0       # docs/science.md: P2 peak ~39 Hz


def test_network_sliders_start_at_each_models_own_network_defaults():
    from neurotwin_dash.simulate import network_params
    state = ExplorerState(mode="sync", model="jansen_rit", connectome=SINGLE_NODE, auto_run=False)
    jr = network_params("jansen_rit").defaults()
    assert jr["coupling"] > 0  # the coupling of its reference alpha rhythm on tvb76, not 0
    assert state.network_params.coupling == pytest.approx(jr["coupling"])
    state.model = "lanmm"
    assert state.network_params.coupling == pytest.approx(network_params("lanmm").defaults()["coupling"])


def test_explorer_band_powers_equal_neurotwin_analyse_on_the_same_run(tmp_path):
    """One analysis library: the explorer's spectra and band powers are `neurotwin analyse`'s."""
    from neurotwin_dash import analysis as an
    from neurotwin_dash.simulate import simulate
    s = ExplorerState(mode="sync", auto_run=False, connectome="tvb76")
    s.update_params({"duration_s": 2.0, "transient_s": 0.5, "montage": "starstim8"})
    s.run()
    res = s.runner.result
    spec = s.spec()
    sim = simulate(model=spec["model"], connectome=compute.build_connectome(spec),
                   duration_s=spec["duration_s"] + spec["transient_s"], dt_ms=spec["dt_ms"],
                   params=spec["params"], seed=spec["seed"], sample_rate_hz=spec["sample_rate_hz"],
                   transient_s=spec["transient_s"], normalisation="none")
    m = an.standard_metrics(sim, aperiodic=False)
    bp = m["band_power"].isel(batch=0).transpose("band", "region")
    assert list(bp["band"].values) == list(res["band"].values) == list(an.BANDS)
    np.testing.assert_allclose(res["band_region"].values, bp.values, rtol=1e-9)
    psd = m["psd"].isel(batch=0).transpose("region", "frequency")
    common = np.intersect1d(psd["frequency"].values, res["frequency"].values)
    assert common.size > 100
    np.testing.assert_allclose(res["psd_region"].sel(frequency=common).values,
                               psd.sel(frequency=common).values, rtol=1e-9)


def test_fc_selector_shows_each_measure_and_says_when_bold_needs_a_longer_run():
    s = ExplorerState(mode="sync", auto_run=False, connectome="tvb76")
    s.update_params({"duration_s": 4.0, "montage": "starstim8"})
    s.run()
    res = s.runner.result
    assert list(res["measure"].values) == list(compute.FC_MEASURES)
    plot = panes.FCPlot()
    iu = np.triu_indices(76, 1)
    seen = {}
    for measure in ("plv_alpha", "aec_alpha", "aec_alpha_orth", "pearson"):
        plot.update(res, measure)
        z = np.array(plot.source.data["image"][0])
        seen[measure] = z
        fc = res["fc"].sel(measure=measure).values
        np.testing.assert_allclose(z[iu], fc[iu])
        assert compute.FC_MEASURES[measure] in plot.figure.title.text and "r(FC, log SC)" in plot.figure.title.text
    assert np.nanmin(res["fc"].sel(measure="plv_alpha").values) >= 0
    plot.update(res, "plv_alpha")                       # PLV is non-negative: sequential map from 0
    assert plot.mapper.low == 0.0 and plot.mapper.high == pytest.approx(np.nanmax(seen["plv_alpha"]))
    assert not np.allclose(seen["plv_alpha"][iu], seen["pearson"][iu])
    plot.update(res, "bold")
    assert "needs ≥ 60 s simulated" in plot.figure.title.text
    # a preview (the server is busy: a 1-s run first) shows no r(FC, SC): a 1-s FC is mostly noise
    pv = res.copy()
    pv.attrs.update(preview_of_s=20.0, spec=json.dumps(dict(json.loads(res.attrs["spec"]), duration_s=1.0,
                                                            preview_of_s=20.0)))
    plot.update(pv, "plv_alpha")
    assert "preview: 1 s, too short for FC" in plot.figure.title.text and "r(FC" not in plot.figure.title.text
    summary = panes.summary_markdown(pv, measure="plv_alpha")
    assert "preview: 1 s" in summary and "r(FC, log SC)" not in summary
    # a real preview computes no FC at all: the plot says why instead of showing noise
    real_pv = compute.explorer_job(compute.preview_spec(json.loads(res.attrs["spec"])))
    assert "fc" not in real_pv and "psd_region" in real_pv
    plot.update(real_pv, "plv_alpha")
    assert "preview: 1 s, too short for FC" in plot.figure.title.text
    assert np.isnan(plot.source.data["image"][0]).all() and plot.source.data["image"][0].shape == z.shape
    plot.update(res, "bold")
    # hemisphere separators and group ticks on both axes, labels for the hover
    assert plot.labels.data["labels"][0] == str(res["region"].values[0])
    assert sorted(plot.figure.xaxis.major_label_overrides.values()) == ["left", "right"]
    assert len(plot.separators.data["xs"]) == 2


def test_fc_sc_correlation_is_the_upper_triangle_r_with_log_sc():
    from neurotwin_dash import analysis as an
    rng = np.random.default_rng(0)
    w = rng.random((10, 10))
    fc = np.log10(0.5 * (w + w.T) / w.max() + 1e-3)
    assert an.fc_sc_correlation(fc, w) == pytest.approx(1.0)
    assert abs(an.fc_sc_correlation(rng.random((10, 10)), w)) < 0.5


def test_explorer_default_regime_has_structure_shaped_alpha_fc():
    """Jansen-Rit on tvb76 at the explorer's defaults: alpha PLV follows the structure.

    Five noise seeds at the default coupling against the same seeds uncoupled (K = 0): the
    structure-function correlation r(PLV, log SC) must be clearly positive with coupling and
    vanish without it, while the alpha peak stays (README: 0.36 ± 0.09 over seeds 0-4).
    """
    from neurotwin_dash import analysis as an
    from neurotwin_dash.simulate import simulate
    s = ExplorerState(mode="sync", auto_run=False, connectome="tvb76")
    spec = s.spec()
    assert spec["duration_s"] == 20.0 and s.fc_measure == "plv_alpha"
    con = compute.build_connectome(spec)
    k = spec["params"]["coupling"]
    n = 5
    params = dict(spec["params"], coupling=[k] * n + [0.0] * n)
    sim = simulate(model=spec["model"], connectome=con, duration_s=spec["duration_s"] + spec["transient_s"],
                   dt_ms=spec["dt_ms"], params=params, seed=list(range(n)) * 2, sample_rate_hz=250.0,
                   transient_s=spec["transient_s"], normalisation="none")
    x = sim["v_pyr"]
    r = np.array([an.fc_sc_correlation(an.plv(x.isel(batch=b), band="alpha").values, con.weights)
                  for b in range(2 * n)])
    coupled, uncoupled = r[:n], r[n:]
    se = coupled.std(ddof=1) / np.sqrt(n)
    assert coupled.mean() - 2.78 * se > 0.15           # 95 % t interval (4 dof) well above 0
    assert abs(uncoupled.mean()) < 0.1
    peak = an.peak_frequency(an.welch(x.isel(batch=slice(0, n))), band=(2, 40))
    assert 9.5 <= float(peak.median()) <= 11.5


def test_export_gives_the_run_its_twin_and_a_report_that_reload(tmp_path):
    import xarray as xr
    from neurotwin_dash.twin import Twin
    ex = Explorer(mode="sync")
    ex.state.auto_run = False
    ex.state.update_params({"duration_s": 2.0, "transient_s": 0.5, "montage": "starstim8", "coupling": 3.0})
    ex.state.run()
    ex.export_button.clicks += 1
    assert ex.export_runner.error == ""
    assert not ex.downloads["run.nc"].disabled and "Ready" in ex.export_status.object
    for name, d in ex.downloads.items():
        (tmp_path / name).write_bytes(d.file.getvalue())
    run = xr.load_dataset(tmp_path / "run.nc", engine="h5netcdf")
    shown = ex.state.runner.result
    # the exported run is the run on screen: its spectrum equals the explorer's
    from neurotwin_dash.ui import compute as c
    f, p = c.welch_psd(run["v_pyr"].isel(batch=0).transpose("time", "region").values, shown.attrs["sample_rate_hz"])
    np.testing.assert_allclose(p.T, shown["psd_region"].values, rtol=1e-9)
    twin = Twin.load(tmp_path / "twin.nc")
    assert twin.params["coupling"] == 3.0 and twin.verify()          # reproduces it bit for bit
    assert (tmp_path / "report.html").read_text().count("<svg") == 5
    # the link reopens the same settings
    assert "coupling=3" in ex.link.value and "duration_s=2" in ex.link.value


def test_a_tabs_plots_are_built_when_it_is_first_opened_and_show_the_latest_result():
    from neurotwin_dash.ui.explorer import PLOT_TABS
    ex = Explorer(mode="sync")
    ex.state.update_params({"duration_s": 1.0, "transient_s": 0.2})    # one run (sync)
    res = ex.state.runner.result
    assert res is not None and set(ex.plots) == set(PLOT_TABS["Spectra"])   # hidden tabs: nothing built
    assert [len(ex.tabs[i].objects) for i in range(len(PLOT_TABS))] == [2, 0, 0, 0]
    np.testing.assert_allclose(ex.plots["region_spectra"].mean.data["y"],
                               np.nanmean(np.log10(res["psd_region"].values), axis=0), rtol=1e-12)
    ex.tabs.active = list(PLOT_TABS).index("Connectivity")
    assert set(ex.plots) == set(PLOT_TABS["Spectra"]) | set(PLOT_TABS["Connectivity"])
    fc = ex.plots["fc_matrix"]
    assert fc.source.data["image"][0].shape == (76, 76) and "(76 regions)" in fc.figure.title.text
    ex.tabs.active = 0
    ex.tabs.active = list(PLOT_TABS).index("Connectivity")                # built once, kept
    assert ex.plots["fc_matrix"] is fc and len(ex.tabs[2].objects) == 2


def test_busy_indicator_spins_only_while_the_runner_is_busy():
    from neurotwin_dash.ui.widgets import busy_indicator
    r = JobRunner(mode="sync")
    ind = busy_indicator(r.param.busy)
    assert 'class="nt-idle"' in ind.object and (ind.width, ind.height) == (28, 28)   # fixed size
    r.busy = True
    assert 'class="nt-busy"' in ind.object
    r.busy = False
    assert 'class="nt-idle"' in ind.object
