"""Amortised simulation-based inference: priors, features, training on Dask, calibration, files, UI.

One posterior is trained per session (Jansen–Rit single node, A, B, C; a small budget) and shared
by the tests; torch runs on one thread.
"""
from __future__ import annotations

import io
import json
import time
import zipfile

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("sbi")        # the optional "infer" extra (PyTorch CPU + sbi)
import torch                      # noqa: E402

from neurotwin_dash import infer                                   # noqa: E402
from neurotwin_dash.infer import Posterior                         # noqa: E402
from neurotwin_dash.cluster import get_client                      # noqa: E402
from neurotwin_dash.params import ParamError                       # noqa: E402
from neurotwin_dash.simulate import simulate                       # noqa: E402
from neurotwin_dash.sweep import register_simulator, run_sweep                        # noqa: E402

#: log PSD at fixed frequencies, alpha peak and low-gamma power of the pyramidal potential
FEATURES = {"psd_hz": [2, 4, 6, 8, 9, 10, 11, 12, 14, 16, 20, 25, 30, 35, 40, 50, 60],
            "alpha_peak": True, "gamma": True}
PRIOR = {"A": {"low": 2.5, "high": 5.0}, "B": {"low": 15.0, "high": 30.0}, "C": {"low": 90.0, "high": 200.0}}
BUDGET = 2000


def jr_spec(**kw):
    base = dict(model="jansen_rit", params=PRIOR, features=FEATURES, n_simulations=BUDGET, n_test=200,
                seed=0, batch_size=250, name="jansen_rit column")
    base.update(kw)
    return infer.InferSpec(**base)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("infer")
    torch.set_num_threads(1)        # 2 shared cores: torch's own thread pool would spin against Dask
    client = get_client(n_workers=2, quiet=True)
    post = infer.train(jr_spec(), work / "runs", client=client, threads=1)
    return post, work


# --- priors and features ------------------------------------------------------------------------
def test_prior_defaults_to_the_declared_bounds_and_log_uniform_where_asked():
    from neurotwin_dash.models.jansen_rit import PARAMS
    prior = infer.Prior("jansen_rit", {"A": {}, "noise_sd": {"low": 1.0, "high": 100.0, "log": True},
                                       "coupling": {"high": 5.0}})
    a = prior.params[0]
    assert (a.low, a.high, a.log) == (PARAMS["A"].low, PARAMS["A"].high, False)
    draws = prior.sample(20000, seed=1)
    assert draws[:, 0].min() >= a.low and draws[:, 0].max() <= a.high
    # log-uniform: the median is the geometric mean of the bounds (10), not the midpoint (50.5)
    assert abs(np.median(draws[:, 1]) - 10.0) < 0.6
    assert prior.params[2].low == 0.0 and prior.params[2].high == 5.0     # a network parameter
    with pytest.raises(ParamError, match=r"'A'.*outside the allowed range \[2, 10\] mV"):
        infer.Prior("jansen_rit", {"A": {"low": 1.0}})
    with pytest.raises(ParamError, match="unknown parameter 'Q'"):
        infer.Prior("jansen_rit", ["Q"])
    with pytest.raises(ParamError, match="log-uniform prior needs low > 0"):
        infer.Prior("jansen_rit", {"coupling": {"log": True}})


def test_features_of_a_known_signal_come_from_the_analysis_library():
    t = np.arange(0, 20, 1 / 250)
    rng = np.random.default_rng(0)
    x = np.sin(2 * np.pi * 10.3 * t) + 0.1 * rng.standard_normal(t.size)
    f = infer.signal_features(x, FEATURES, sample_rate_hz=250)
    assert list(f.feature.values) == infer.feature_names(FEATURES)
    assert f.sel(feature="alpha_peak_hz") == pytest.approx(10.3, abs=0.1)
    # a unit sine has power 0.5 in its peak: the 1-Hz-wide window around 10 Hz holds most of it
    assert f.sel(feature="log_psd_10Hz") > f.sel(feature="log_psd_20Hz") + 2
    rel = infer.signal_features(3.0 * x, {**FEATURES, "relative": True}, sample_rate_hz=250)
    rel1 = infer.signal_features(x, {**FEATURES, "relative": True}, sample_rate_hz=250)
    np.testing.assert_allclose(rel.sel(feature="log_psd_10Hz"), rel1.sel(feature="log_psd_10Hz"), atol=1e-9)
    with pytest.raises(infer.FeatureError, match="unknown feature keys"):
        infer.feature_names({"psd": [10]})


def test_network_fc_summaries():
    res = simulate("jansen_rit", "tvb76", duration_s=3, transient_s=1, sample_rate_hz=250,
                   params={"coupling": [0.0, 4.0]}, seed=[1, 2])
    f = infer.compute_features(res, {"fc": ["mean", "sc_corr", "pc"], "fc_pcs": 2, "bands": ["alpha"]})
    assert list(f.feature.values) == ["log_power_alpha", "fc_mean", "fc_sc_corr", "fc_pc1", "fc_pc2"]
    assert f.dims == ("batch", "feature") and np.isfinite(f.values).all()
    # the summaries are those of the analysis library's FC matrix
    from neurotwin_dash.analysis import fc_pearson, upper_triangle
    tri = upper_triangle(fc_pearson(res["v_pyr"].transpose("batch", "time", "region")))
    np.testing.assert_allclose(f.sel(feature="fc_mean"), tri.mean(axis=-1), rtol=1e-12)
    pcs = f.sel(feature=["fc_pc1", "fc_pc2"]).values
    assert (pcs[:, 0] >= pcs[:, 1]).all() and (pcs.sum(axis=1) < 1).all() and (pcs > 1 / 76).all()


def test_bad_specs_are_refused_naming_the_field():
    with pytest.raises(infer.InferError, match="n_test must be ≥ 20"):
        jr_spec(n_test=5)
    with pytest.raises(infer.InferError, match=r"both inferred and fixed"):
        jr_spec(fixed={"A": 3.0})
    with pytest.raises(infer.InferError, match="estimator.model 'flow' unknown"):
        jr_spec(estimator={"model": "flow"})


def test_float32_and_fast_math_reach_the_training_sweep_and_defaults_keep_the_fingerprint():
    base = jr_spec()
    assert (base.dtype, base.math_mode) == ("float64", "default")
    legacy = base.to_dict()
    del legacy["dtype"], legacy["math_mode"]          # a spec written before the options existed
    assert infer.InferSpec.from_dict(legacy).fingerprint() == base.fingerprint()
    single = jr_spec(dtype="float32")
    fast = jr_spec(math_mode="fast")
    assert len({base.fingerprint(), single.fingerprint(), fast.fingerprint()}) == 3
    for part in ("train", "test"):
        assert single.sweep_spec(part).dtype == "float32" and fast.sweep_spec(part).math_mode == "fast"
        assert (base.sweep_spec(part).dtype, base.sweep_spec(part).math_mode) == ("float64", "default")
    with pytest.raises(infer.InferError, match="math_mode='fast' needs noise_rng='counter', dtype='float64'"):
        jr_spec(math_mode="fast", dtype="float32")
    with pytest.raises(infer.InferError, match="dtype 'float16' unknown; allowed: float64, float32"):
        jr_spec(dtype="float16")


def test_infer_modes_reach_simulate_survive_yaml_and_keep_old_spec_hashes(tmp_path):
    """dtype/math_mode of an InferSpec end in the simulate() plan of both sweeps' batches (not only
    in the SweepSpec), a YAML round trip keeps them, and a spec dict saved before the options
    existed (no dtype/math_mode keys: a posterior's stored ``spec`` / ``spec_sha256``) hashes as
    the same spec with the defaults does."""
    import yaml
    from neurotwin_dash import sweep
    from neurotwin_dash.sweep import spec_fingerprint
    base, single, fast = jr_spec(), jr_spec(dtype="float32"), jr_spec(math_mode="fast")
    batch = {"A": np.array([3.0]), "B": np.array([20.0]), "C": np.array([135.0])}
    for part in ("train", "test"):
        assert sweep.batch_plan(fast.sweep_spec(part), batch, [0]).math_mode == "fast"
        assert sweep.batch_plan(single.sweep_spec(part), batch, [0]).dtype == "float32"
        p = sweep.batch_plan(base.sweep_spec(part), batch, [0])
        assert (p.dtype, p.math_mode) == ("float64", "default")
    legacy = base.to_dict()
    del legacy["dtype"], legacy["math_mode"]
    assert spec_fingerprint(legacy) == base.fingerprint() != fast.fingerprint()
    for spec in (single, fast):
        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump(spec.to_dict()))
        again = infer.InferSpec.from_yaml(path)
        assert (again.dtype, again.math_mode) == (spec.dtype, spec.math_mode)
        assert again.fingerprint() == spec.fingerprint()


def test_cli_trains_and_saves_a_posterior_from_a_yaml_spec(tmp_path, capsys):
    import yaml
    from neurotwin_dash.cli import main
    spec = jr_spec(n_simulations=60, n_test=20, duration_s=3.0, batch_size=40,
                   estimator={"max_num_epochs": 5}).to_dict()
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    argv = ["infer-train", "--spec", str(tmp_path / "spec.yaml"), "--workdir", str(tmp_path / "w"),
            "--out", str(tmp_path / "post"), "--scheduler", "sync", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "coverage 80 %" in out and "0.0% of the simulations diverged" in out
    post = infer.load_posterior(tmp_path / "post")
    assert post.info["n_train"] == 60 and post.calibration["n"] == 20
    assert main(argv) == 2                       # the posterior exists: refused without --overwrite
    assert "overwrite" in capsys.readouterr().err


@register_simulator("test_infer:half_diverged")
def simulate_half_diverged(**kwargs):
    """The real simulator with every member whose B is above 25 reported as diverged."""
    res = simulate(**kwargs)
    bad = np.asarray(kwargs["params"]["B"]) > 25.0
    v = res["v_pyr"].values.copy()
    v[bad] = np.nan
    res["v_pyr"] = (res["v_pyr"].dims, v)
    res["diverged"] = ("batch", bad)
    return res


def test_diverged_simulations_are_excluded_and_counted(tmp_path):
    spec = jr_spec(n_simulations=40, n_test=20, batch_size=20, duration_s=3.0)
    sweep = spec.sweep_spec("train")
    sweep.simulator = "test_infer:half_diverged"
    run_sweep(sweep, tmp_path / "train.zarr", client="sync", progress=False)
    data = infer.load_training_data(spec, tmp_path / "train.zarr")
    n_bad = int((data["theta_diverged"][:, 1] > 25).sum())
    assert data["n_diverged"] == n_bad == data["theta_diverged"].shape[0] > 0
    assert data["diverged_fraction"] == pytest.approx(n_bad / 40)
    assert data["theta"].shape == (40 - n_bad, 3) and (data["theta"][:, 1] <= 25).all()
    assert np.isfinite(data["x"]).all()


# --- the trained posterior ----------------------------------------------------------------------
def test_80_percent_credible_intervals_cover_held_out_truths_65_to_95_percent(trained):
    post, _ = trained
    cal = post.calibration
    print("\n" + post.calibration_table())
    assert cal["n"] == 200 and post.info["n_train"] == BUDGET
    for name, p in cal["params"].items():
        assert 0.65 <= p["coverage"]["0.8"] <= 0.95, (name, p["coverage"])
    # the other levels are reported, and ordered
    for p in cal["params"].values():
        assert p["coverage"]["0.5"] < p["coverage"]["0.8"] < p["coverage"]["0.95"]
        assert sum(p["sbc_rank_hist"]) == 200


def test_posterior_mean_beats_the_prior_mean_on_20_new_simulations(trained):
    post, _ = trained
    theta = post.prior.sample(20, seed=2024)
    res = post.simulate_draws(theta, seed=777_000)          # noise seeds unseen in training
    x = infer.compute_features(res, post.spec.features)
    mean = post.sample(x.values, 1000, seed=3).mean(axis=0)   # (20, n_params)
    closer = np.abs(mean - theta) < np.abs(post.prior.mean() - theta)
    frac = dict(zip(post.param_names, closer.mean(axis=0)))
    print("\nfraction of 20 closer than the prior mean:", frac,
          "\nidentifiable (held-out shrinkage ≥ 0.75):",
          {n: p["identifiable"] for n, p in post.calibration["params"].items()})
    for name, p in post.calibration["params"].items():
        if p["identifiable"]:
            assert frac[name] >= 0.8, (name, frac)


def test_saved_posterior_reloads_with_identical_samples_and_hashes(trained, tmp_path):
    post, _ = trained
    x = post.info["feature_mean"]
    path = post.save(tmp_path / "jr")
    doc = json.loads((path / "posterior.json").read_text())
    assert {"spec", "spec_sha256", "weights_sha256", "architecture", "calibration"} <= set(doc)
    assert doc["info"]["train_data_sha256"] == post.info["train_data_sha256"]
    assert sorted(p.name for p in path.iterdir()) == ["posterior.json", "weights.safetensors"]
    again = infer.load_posterior(path)
    np.testing.assert_array_equal(again.sample(x, 500, seed=11), post.sample(x, 500, seed=11))
    assert not np.array_equal(post.sample(x, 500, seed=11), post.sample(x, 500, seed=12))
    assert again.calibration == json.loads(json.dumps(post.calibration))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        post.save(path)
    # a changed weights file is refused before anything is built from it
    w = path / "weights.safetensors"
    raw = bytearray(w.read_bytes())
    raw[-3] ^= 0xFF
    w.write_bytes(bytes(raw))
    with pytest.raises(infer.InferError, match="SHA-256"):
        infer.load_posterior(path)


def test_wrong_feature_names_or_shapes_are_refused_with_a_clear_error(trained):
    post, _ = trained
    names = post.feature_names
    good = dict(zip(names, post.info["feature_mean"]))
    bad = dict(good)
    bad.pop("alpha_peak_hz")
    bad["alpha_peak"] = 10.0
    with pytest.raises(infer.InferError, match=r"missing \['alpha_peak_hz'\], unexpected \['alpha_peak'\]"):
        post.sample(bad, 10)
    with pytest.raises(infer.InferError, match=rf"shape \(3,\); expected \({len(names)},\)"):
        post.sample([1.0, 2.0, 3.0], 10)
    da = xr.DataArray(np.zeros(2), dims="feature", coords={"feature": ["x", "y"]})
    with pytest.raises(infer.InferError, match="missing"):
        post.sample(da, 10)
    with pytest.raises(infer.InferError, match=r"\['log_gamma_power'\] are not finite"):
        post.sample({**good, "log_gamma_power": float("nan")}, 10)
    # a DataArray in another feature order is reordered by name
    shuffled = xr.DataArray(list(good.values())[::-1], dims="feature", coords={"feature": names[::-1]})
    np.testing.assert_array_equal(post.sample(shuffled, 50, seed=1), post.sample(good, 50, seed=1))


def test_map_and_posterior_predictive(trained):
    post, _ = trained
    theta = np.array([3.25, 22.0, 135.0])                    # the classic alpha column
    res = post.simulate_draws(theta[None], seed=4242)
    x = infer.compute_features(res, post.spec.features).isel(batch=0)
    m = post.map(x, seed=0, num_iter=100)
    assert set(m) == {"A", "B", "C"}
    assert abs(m["A"] - 3.25) < 0.5
    pred = post.predictive(x, n=8, seed=1)
    assert pred["features"].shape == (8, len(post.feature_names))
    assert float(pred["z_distance"].median()) < 1.5     # draws reproduce the observation's features
    peak = pred["features"].sel(feature="alpha_peak_hz")
    assert abs(float(peak.median()) - float(x.sel(feature="alpha_peak_hz"))) < 1.0


def test_viewer_updates_the_posterior_from_feature_sliders_in_under_a_second(trained):
    from neurotwin_dash.ui.infer import InferViewer
    post, _ = trained
    v = InferViewer(post, dirs=[], predictive_draws=8)
    before = dict(v.marg_src[0][0].data)
    assert v.truth is not None and np.isfinite(v.last_update_s)
    s = v.feature_sliders["log_psd_10Hz"]
    t0 = time.perf_counter()
    s.value = s.start + 0.8 * (s.end - s.start)
    v._on_feature(None)
    elapsed = time.perf_counter() - t0
    assert not np.array_equal(before["top"], v.marg_src[0][0].data["top"])
    assert v.truth is None and elapsed < 1.0, elapsed
    assert "posterior mean" in v.summary.object and "coverage 80 %" in v.calibration.object


def test_viewer_downloads_the_draws_with_calibration_and_the_posterior_itself(trained, tmp_path):
    from neurotwin_dash.ui.infer import InferViewer
    post, _ = trained
    v = InferViewer(post, dirs=[], predictive_draws=0, n_draws=500)
    path = tmp_path / "samples.nc"
    path.write_bytes(v._samples_file().getvalue())
    ds = xr.load_dataset(path, engine="h5netcdf")
    for k, p in enumerate(post.prior.params):                    # the draws on screen, units and truth
        np.testing.assert_array_equal(ds[p.name].values, v.draws[:, k])
        assert ds[p.name].attrs["units"] == (p.unit or "1") and ds[p.name].attrs["truth"] == v.truth[k]
    assert list(ds["feature"].values) == post.feature_names
    np.testing.assert_allclose(ds["observed"].values, [v.observed[f] for f in post.feature_names])
    assert dict(zip(ds["feature"].values, ds["feature_units"].values))["alpha_peak_hz"] == "Hz"
    cov = ds["calibration_coverage"].sel(param="A", level=0.8)
    assert float(cov) == post.calibration["params"]["A"]["coverage"]["0.8"]
    assert ds["calibration_sbc_rank_hist"].sum("rank_bin").values.tolist() == [post.calibration["n"]] * len(post.param_names)
    assert v.downloads["samples"].filename.endswith("-samples.nc")

    with zipfile.ZipFile(io.BytesIO(v._posterior_file().getvalue())) as z:   # posterior.json + safetensors
        names = sorted(z.namelist())
        assert [n.split("/")[1] for n in names] == ["posterior.json", "weights.safetensors"]
        z.extractall(tmp_path / "unzipped")
    back = Posterior.load(tmp_path / "unzipped" / names[0].split("/")[0])
    x = {f: v.observed[f] for f in post.feature_names}
    np.testing.assert_array_equal(back.sample(x, 50, seed=4), post.sample(x, 50, seed=4))


def test_viewer_without_a_posterior_says_where_it_looked_and_how_to_train_one(tmp_path):
    from neurotwin_dash.infer.usecases import PRESETS
    from neurotwin_dash.ui.infer import InferViewer
    from neurotwin_dash.ui.landing import app_summary
    v = InferViewer(dirs=[tmp_path / "posteriors"])
    text = v.main().objects[0].object
    assert "No trained posterior found" in text and str(tmp_path / "posteriors") in text
    assert f"neurotwin infer-train --preset jansen_rit_column --workdir runs/jr --out {tmp_path / 'posteriors' / 'jr'}" in text
    assert all(f"`{name}`" in text for name in PRESETS)
    # the landing page's card text is plain prose, not reST markup
    assert app_summary("infer") == "Inference dashboard: a trained posterior, an observation, the posterior live."
