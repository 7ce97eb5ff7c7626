"""Network simulator: reference agreement, seeds, batching, resumable chunks, divergence, input checks."""
import numpy as np
import pytest
import xarray as xr

from neurotwin_dash import simulate as sim_module
from neurotwin_dash.models import MODELS, get_model, initial_state
from neurotwin_dash.params import ParamError
from neurotwin_dash.simulate import Drive, SimulationError, all_params, simulate

from kernel_agreement import assert_recorded_close


@pytest.mark.parametrize("method", ["euler", "heun"])
@pytest.mark.parametrize("model", list(MODELS))
def test_numba_kernel_matches_numpy_reference_with_the_same_noise(model, method):
    mod = get_model(model)
    # the membrane drive is non-zero at step 0: the kernel hands the model the rates of the
    # initial state from the history, which must already include that drive
    drive = [Drive(np.linspace(0.0, 1.0, 76), lambda t: np.cos(2 * np.pi * 10 * t), "membrane"),
             Drive(np.full(76, 5.0 if model != "wilson_cowan" else 0.1), lambda t: t > 0.01, "rate")]
    record = list(mod.OUTPUTS) + [mod.STATES[mod.NOISE_STATES[0]]]
    kw = dict(model=model, connectome="tvb76", duration_s=0.04, params={"coupling": [0.5, 3.0]},
              seed=[1, 2], method=method, drive=drive, record=record)
    fast = simulate(**kw)
    ref = simulate(backend="numpy", **kw)
    assert not fast.diverged.any()
    assert_recorded_close(fast, ref, record, what=f"{model}.")


def test_same_seed_reproduces_and_other_seed_differs():
    kw = dict(model="jansen_rit", connectome="tvb76", duration_s=0.2)
    a = simulate(seed=7, **kw)
    b = simulate(seed=7, **kw)
    c = simulate(seed=8, **kw)
    assert np.array_equal(a.v_pyr.values, b.v_pyr.values)
    assert np.abs(a.v_pyr.values - c.v_pyr.values).max() > 1e-3


def test_batch_member_equals_the_same_parameters_run_alone():
    batch = simulate("jansen_rit", "tvb76", duration_s=0.3, params={"coupling": [0.5, 3.0, 8.0], "p": 200.0},
                     seed=[4, 5, 6])
    alone = simulate("jansen_rit", "tvb76", duration_s=0.3, params={"coupling": 3.0, "p": 200.0}, seed=5)
    assert np.array_equal(batch.v_pyr.values[1], alone.v_pyr.values[0])
    assert list(batch.coupling.values) == [0.5, 3.0, 8.0]
    single_thread = simulate("jansen_rit", "tvb76", duration_s=0.3,
                             params={"coupling": [0.5, 3.0, 8.0], "p": 200.0}, seed=[4, 5, 6], threads=1)
    assert np.array_equal(batch.v_pyr.values, single_thread.v_pyr.values)


def test_scalar_seed_gives_every_member_the_same_noise():
    ds = simulate("jansen_rit", None, duration_s=0.5, params={"p": [220.0, 220.0]}, seed=3)
    assert np.array_equal(ds.v_pyr.values[0], ds.v_pyr.values[1])


def test_chunked_run_equals_one_long_kernel_call(monkeypatch):
    kw = dict(model="jansen_rit", connectome="tvb76", duration_s=0.25, transient_s=0.05, seed=2,
              params={"coupling": 3.0, "speed_m_s": 2.0})
    whole = simulate(**kw)
    monkeypatch.setattr(sim_module, "_MAX_CHUNK_STEPS", 70)  # many resumed chunks, delays > chunk
    steps = []
    chunked = simulate(progress=lambda done, total: steps.append((done, total)), **kw)
    assert len(steps) > 20 and steps[-1] == (2500, 2500)
    assert np.array_equal(whole.v_pyr.values, chunked.v_pyr.values)


def test_transient_is_dropped_and_time_is_absolute():
    ds = simulate("jansen_rit", None, duration_s=1.0, transient_s=0.25, sample_rate_hz=200.0)
    assert ds.sizes["time"] == 150
    assert ds.time.values[0] == pytest.approx(0.25)
    assert ds.time.values[1] - ds.time.values[0] == pytest.approx(0.005)
    assert ds.attrs["transient_s"] == 0.25 and ds.attrs["sample_rate_hz"] == 200.0


def test_monitor_averages_each_sampling_period():
    fine = simulate("jansen_rit", None, duration_s=0.2, sample_rate_hz=10000.0, seed=1)
    coarse = simulate("jansen_rit", None, duration_s=0.2, sample_rate_hz=1000.0, seed=1)
    expect = fine.v_pyr.values[0, :, 0].reshape(-1, 10).mean(axis=1)
    np.testing.assert_allclose(coarse.v_pyr.values[0, :, 0], expect, rtol=1e-12, atol=1e-12)


def test_noise_convention_makes_fluctuations_independent_of_dt():
    # p = 60: the node rests at a stable fixed point, so v_pyr is linearly filtered input noise
    sds = []
    for dt in (0.05, 0.2):
        ds = simulate("jansen_rit", None, duration_s=40.0, transient_s=1.0, dt_ms=dt,
                      params={"p": 60.0, "noise_sd": 22.0}, seed=11)
        sds.append(float(ds.v_pyr.std()))
    assert sds[0] > 0.01
    assert sds[1] == pytest.approx(sds[0], rel=0.1)


def test_divergent_member_is_flagged_filled_with_nan_and_others_unaffected():
    # Euler is unstable for the fast synapse when g·dt > 2: g = 1000 1/s at dt = 2.5 ms blows up
    kw = dict(model="wendling", connectome="tvb76", duration_s=1.0, dt_ms=2.5, sample_rate_hz=100.0, seed=0)
    batch = simulate(params={"g": [350.0, 1000.0]}, **kw)
    assert batch.diverged.values.tolist() == [False, True]
    assert batch.g.values.tolist() == [350.0, 1000.0]
    bad = batch.v_pyr.values[1]
    assert np.isnan(bad[-1]).all() and np.isnan(bad).mean() > 0.5
    alone = simulate(params={"g": 350.0}, **kw)
    assert np.array_equal(batch.v_pyr.values[0], alone.v_pyr.values[0])


def test_membrane_drive_depolarises_only_where_its_spatial_map_is_nonzero():
    labels = list(simulate("jansen_rit", "tvb76", duration_s=0.01).region.values)
    spatial = xr.DataArray(np.zeros(76), dims="region", coords={"region": labels})
    spatial.loc["rV1"] = 5.0
    kw = dict(model="jansen_rit", connectome="tvb76", duration_s=0.3, params={"coupling": 0.0}, seed=1,
              record=["rate_out"])
    base = simulate(**kw)
    driven = simulate(drive=Drive(spatial, lambda t: np.ones_like(t), "membrane", unit="mV"), **kw)
    diff = np.abs(driven.rate_out - base.rate_out).max("time")[0]
    assert float(diff.sel(region="rV1")) > 0.5
    assert float(diff.drop_sel(region="rV1").max()) == 0.0


def test_attrs_carry_every_parameter_value_and_the_connectome_identity():
    import json
    ds = simulate("jansen_rit", "tvb76", duration_s=0.05, params={"coupling": [1.0, 2.0]})
    params = json.loads(ds.attrs["params"])
    assert params["coupling"] == [1.0, 2.0] and params["A"] == 3.25 and params["speed_m_s"] == 4.0
    assert set(params) == set(all_params("jansen_rit").names)
    assert ds.attrs["connectome"] == "tvb76" and len(ds.attrs["connectome_hash"]) == 64
    assert ds.attrs["model"] == "jansen_rit" and ds.attrs["dt_ms"] == 0.1


def test_netcdf_round_trip(tmp_path):
    ds = simulate("jansen_rit", None, duration_s=0.05, params={"p": [100.0, 200.0]})
    path = tmp_path / "run.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    back = xr.load_dataset(path, engine="h5netcdf")
    np.testing.assert_array_equal(back.v_pyr.values, ds.v_pyr.values)
    assert back.attrs["params"] == ds.attrs["params"]


def test_invalid_inputs_raise_clear_errors_before_compute(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("compute started")
    monkeypatch.setattr(sim_module, "_execute", boom)
    with pytest.raises(ParamError, match="'nosuch'"):
        simulate("jansen_rit", None, duration_s=0.1, params={"nosuch": 1.0})
    with pytest.raises(ParamError, match=r"'A'.*\[2, 10\]"):
        simulate("jansen_rit", None, duration_s=0.1, params={"A": 50.0})
    with pytest.raises(ParamError, match="shape"):
        simulate("jansen_rit", "tvb76", duration_s=0.1, params={"p": np.ones((2, 3))})
    with pytest.raises(ParamError, match="speed_m_s"):
        simulate("jansen_rit", "tvb76", duration_s=0.1, params={"speed_m_s": np.linspace(1, 5, 76)})
    with pytest.raises(SimulationError, match="sample_rate_hz"):
        simulate("jansen_rit", None, duration_s=0.1, sample_rate_hz=300.0)
    with pytest.raises(SimulationError, match="dt_ms"):
        simulate("jansen_rit", None, duration_s=0.1, dt_ms=0.0)
    with pytest.raises(SimulationError, match="transient_s"):
        simulate("jansen_rit", None, duration_s=0.1, transient_s=0.2)
    with pytest.raises(SimulationError, match="record"):
        simulate("jansen_rit", None, duration_s=0.1, record=["v_p1"])
    with pytest.raises(SimulationError, match="seed"):
        simulate("jansen_rit", None, duration_s=0.1, params={"p": [1.0, 2.0]}, seed=[1, 2, 3])
    with pytest.raises(SimulationError, match="method"):
        simulate("jansen_rit", None, duration_s=0.1, method="rk4")
    with pytest.raises(SimulationError, match=r"drive\[0\].spatial"):
        simulate("jansen_rit", "tvb76", duration_s=0.1, drive=Drive(np.ones(3), np.sin))
    with pytest.raises(SimulationError, match="target"):
        Drive(np.ones(3), np.sin, target="skull")
    with pytest.raises(ValueError, match="unknown model"):
        simulate("nosuch", None, duration_s=0.1)


def test_batch_size_is_inferred_from_a_batched_drive_and_each_member_equals_its_drive_alone():
    labels = list(simulate("jansen_rit", "tvb76", duration_s=0.01).region.values)
    dose = np.array([0.0, 1.0, 3.0])
    en = np.linspace(-1.0, 2.0, 76)
    spatial = xr.DataArray(dose[:, None] * en, dims=("batch", "region"), coords={"region": labels})
    wave = lambda t: np.sin(2 * np.pi * 40 * t)  # noqa: E731
    kw = dict(model="jansen_rit", connectome="tvb76", duration_s=0.2, seed=3, record=["v_pyr"])
    swept = simulate(drive=Drive(spatial, wave), **kw)                 # no batched parameter needed
    assert swept.sizes["batch"] == 3
    alone = simulate(drive=Drive(dose[2] * en, wave), **kw)
    assert np.array_equal(swept.v_pyr.values[2], alone.v_pyr.values[0])
    undriven = simulate(**kw)
    assert np.array_equal(swept.v_pyr.values[0], undriven.v_pyr.values[0])
    assert np.abs(swept.v_pyr.values[2] - swept.v_pyr.values[0]).max() > 0.05
    # the old workaround (a dummy batched parameter) gives the same run
    dummy = simulate(drive=Drive(spatial, wave), params={"coupling": np.full(3, 2.0)}, **kw)
    assert np.array_equal(swept.v_pyr.values, dummy.v_pyr.values)


def test_batch_size_is_inferred_from_a_seed_list():
    ds = simulate("jansen_rit", None, duration_s=0.3, seed=[5, 6, 7])
    assert ds.sizes["batch"] == 3 and ds.attrs["seed"] == "[5, 6, 7]"
    alone = simulate("jansen_rit", None, duration_s=0.3, seed=6)
    assert np.array_equal(ds.v_pyr.values[1], alone.v_pyr.values[0])
    assert np.abs(ds.v_pyr.values[0] - ds.v_pyr.values[1]).max() > 1e-3


def test_size_one_batch_axes_broadcast_over_a_larger_batch():
    en = np.linspace(0.0, 1.0, 76)
    kw = dict(model="jansen_rit", connectome="tvb76", duration_s=0.05, seed=1)
    a = simulate(params={"coupling": [1.0, 2.0, 3.0], "p": 200.0}, drive=Drive(en[None, :], np.cos), **kw)
    b = simulate(params={"coupling": [1.0, 2.0, 3.0], "p": [200.0]}, drive=Drive(en, np.cos), **kw)
    assert a.sizes["batch"] == b.sizes["batch"] == 3
    assert np.array_equal(a.v_pyr.values, b.v_pyr.values)


def test_disagreeing_batch_sizes_name_each_source_before_compute(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("compute started")
    monkeypatch.setattr(sim_module, "_execute", boom)
    two = Drive(np.ones((2, 76)), np.sin)
    with pytest.raises(SimulationError, match=r"params\['coupling'\] has 3, drive\[1\].spatial has 2"):
        simulate("jansen_rit", "tvb76", duration_s=0.1, params={"coupling": [1.0, 2.0, 3.0]},
                 drive=[Drive(np.ones(76), np.sin), two])
    with pytest.raises(SimulationError, match=r"drive\[0\].spatial has 2, seed has 4"):
        simulate("jansen_rit", "tvb76", duration_s=0.1, drive=two, seed=[1, 2, 3, 4])
    with pytest.raises(ParamError, match=r"params\['coupling'\] has 3, params\['p'\] has 2"):
        simulate("jansen_rit", "tvb76", duration_s=0.1, params={"coupling": [1.0, 2.0, 3.0], "p": [100.0, 200.0]})
    with pytest.raises(SimulationError, match=r"seed has no values"):
        simulate("jansen_rit", "tvb76", duration_s=0.1, seed=[])
    with pytest.raises(SimulationError, match=r"drive\[0\].spatial has shape \(2, 5\)"):
        simulate("jansen_rit", "tvb76", duration_s=0.1, drive=Drive(np.ones((2, 5)), np.sin))


# --- initial state --------------------------------------------------------------------------

def _mean_offdiag_fc(v):
    c = np.corrcoef(v.T)
    return float(c[~np.eye(c.shape[0], dtype=bool)].mean())


def test_random_initial_state_removes_the_spurious_fc_of_uncoupled_limit_cycles():
    # Uncoupled regions with independent noise are independent: their FC must be ~0. Started all
    # from the same (zero) state, Jansen-Rit's alpha limit cycle keeps them in phase for seconds.
    kw = dict(model="jansen_rit", connectome="tvb76", duration_s=4.0, transient_s=0.5,
              params={"coupling": 0.0}, seed=0)
    rand = simulate(**kw)
    zeros = simulate(initial="zeros", **kw)
    assert rand.attrs["initial"] == "random" and zeros.attrs["initial"] == "zeros"
    assert abs(_mean_offdiag_fc(rand.v_pyr.values[0])) < 0.1
    assert _mean_offdiag_fc(zeros.v_pyr.values[0]) > 0.4


def test_single_node_keeps_the_zero_start_and_networks_default_to_random():
    node = simulate("jansen_rit", None, duration_s=0.01, record=["y1"], params={"noise_sd": 0.0})
    assert node.attrs["initial"] == "zeros"
    # from zero PSPs, y1 grows as A a (p + C2 S(0)) t^2 / 2; its first 1-ms mean is that / 3
    s0 = 5.0 / (1.0 + np.exp(0.56 * 6.0))
    expected = 3.25 * 100.0 * (220.0 + 108.0 * s0) * 1e-6 / 6.0
    np.testing.assert_allclose(float(node.y1.values[0, 0, 0]), expected, rtol=0.1)
    net = simulate("jansen_rit", "tvb76", duration_s=0.01, record=["y1", "y2", "y3"])
    assert net.attrs["initial"] == "random"
    y1 = net.y1.values[0, 0]
    lo, hi = get_model("jansen_rit").INITIAL_RANGE[1]
    assert y1.std() > 0.2 * (hi - lo) / np.sqrt(12)     # regions start apart
    assert y1.min() >= -0.5 and y1.max() <= hi + 1.0    # within the declared range (+ 1 ms drift)


@pytest.mark.parametrize("model", list(MODELS))
def test_random_initial_state_lies_in_the_declared_range_and_is_seeded(model):
    mod = get_model(model)
    r = np.asarray(mod.INITIAL_RANGE)
    assert r.shape == (len(mod.STATES), 2)
    x = initial_state(mod, 3, 5, rng=np.random.default_rng(1))
    assert x.shape == (3, 5, len(mod.STATES))
    assert np.all(x >= r[:, 0]) and np.all(x <= r[:, 1])
    assert np.array_equal(x, initial_state(mod, 3, 5, rng=np.random.default_rng(1)))
    assert np.any(x[:, :, r[:, 1] > r[:, 0]].std(axis=1) > 0)


def test_random_initial_state_reproduces_and_batch_member_equals_run_alone():
    kw = dict(model="lanmm", connectome="tvb76", duration_s=0.1, record=["v_p1", "v_p2"])
    batch = simulate(params={"coupling": [0.0, 1.0]}, seed=[3, 4], **kw)
    again = simulate(params={"coupling": [0.0, 1.0]}, seed=[3, 4], **kw)
    assert batch.attrs["initial"] == "random"
    assert np.array_equal(batch.v_p1.values, again.v_p1.values)
    for k, (K, s) in enumerate([(0.0, 3), (1.0, 4)]):
        alone = simulate(params={"coupling": K}, seed=s, **kw)
        assert np.array_equal(batch.v_p1.values[k], alone.v_p1.values[0])
        assert np.array_equal(batch.v_p2.values[k], alone.v_p2.values[0])
    other = simulate(params={"coupling": 0.0}, seed=5, **kw)
    assert np.abs(other.v_p1.values[0] - batch.v_p1.values[0]).max() > 1e-3
    # the initial state has its own stream: the noise realisation of a seed is unchanged
    x0 = np.zeros((76, len(get_model("lanmm").STATES)))
    a = simulate(params={"coupling": 0.0, "noise_sd": 30.0}, seed=3, initial=x0, **kw)
    z = simulate(params={"coupling": 0.0, "noise_sd": 30.0}, seed=3, initial="zeros", **kw)
    assert a.attrs["initial"] == "array"
    assert np.array_equal(a.v_p1.values, z.v_p1.values)


def test_numba_matches_numpy_reference_from_a_random_initial_state():
    kw = dict(model="jansen_rit", connectome="tvb76", duration_s=0.05, params={"coupling": [0.0, 2.0]},
              seed=[5, 6], initial="random", record=["v_pyr", "y4"])
    fast = simulate(**kw)
    ref = simulate(backend="numpy", **kw)
    assert not np.array_equal(fast.v_pyr.values[:, 0, 0], fast.v_pyr.values[:, 0, 1])
    assert_recorded_close(fast, ref, ("v_pyr", "y4"))


def test_bad_initial_state_is_rejected_naming_the_field():
    kw = dict(model="jansen_rit", connectome="tvb76", duration_s=0.01)
    with pytest.raises(SimulationError, match="initial 'uniform' unknown"):
        simulate(initial="uniform", **kw)
    with pytest.raises(SimulationError, match=r"initial has shape \(76, 5\)"):
        simulate(initial=np.zeros((76, 5)), **kw)
    with pytest.raises(SimulationError, match="initial contains NaN"):
        simulate(initial=np.full(6, np.nan), **kw)
