"""SimulationPlan: one resolver of a run, shared by the API, CLI, sweeps, fits, twins and dashboards."""
import dataclasses

import numpy as np
import pytest
import xarray as xr

from neurotwin_dash import sweep
from neurotwin_dash.cli import main
from neurotwin_dash.fit import FitProblem, FreeParam
from neurotwin_dash.simulate import (SimulationError, SimulationPlan, all_params, network_params, plan,
                                     run_plan, simulate, time_grid)
from neurotwin_dash.twin import Twin
from neurotwin_dash.ui.compute import explorer_plan
from neurotwin_dash.ui.state import ExplorerState

# one set of inputs, spelled in each path's own terms below
INPUTS = dict(model="jansen_rit", connectome="tvb76", duration_s=0.6, transient_s=0.1, dt_ms=0.1,
              sample_rate_hz=500.0, seed=3, normalisation="max", method="euler")
VALUES = {"coupling": 1.5, "p": 200.0}


def test_plan_fills_every_default_from_the_single_parameter_resolver():
    p = plan(**INPUTS)
    assert isinstance(p, SimulationPlan) and p.params.names == all_params("jansen_rit").names
    for spec in all_params("jansen_rit"):
        np.testing.assert_array_equal(p.value(spec.name), spec.default)
    # the network defaults are the model's own (JR: coupling 2.0), not NETWORK_PARAMS' 0
    assert p.value("coupling")[0, 0] == 2.0 == network_params("jansen_rit")["coupling"].default
    assert p.n_batch == 1 and p.n_region == 76 and p.time.n_samples == 250
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.method = "heun"
    with pytest.raises(ValueError, match="read-only"):
        p.values[0, 0, 0] = 1.0
    start = np.full((1, 76, 6), 0.01)                 # the plan freezes a copy, not the caller's array
    frozen = plan(**INPUTS, initial=start)
    start[0, 0, 0] = 1.0
    assert frozen.x0[0, 0, 0] == 0.01 and frozen.initial == "array"


def test_plan_and_simulate_agree_and_the_result_records_the_plan():
    p = plan(**INPUTS, params=VALUES)
    res = run_plan(p)
    assert res.attrs["plan_sha256"] == p.fingerprint()
    again = simulate(**INPUTS, params=VALUES)
    np.testing.assert_array_equal(res["v_pyr"].values, again["v_pyr"].values)
    assert plan(**INPUTS, params=VALUES) == p
    assert plan(**INPUTS, params=dict(VALUES, coupling=1.6)) != p
    assert plan(**dict(INPUTS, seed=4), params=VALUES) != p


def test_time_grid_checks_the_clock_before_any_compute():
    g = time_grid(duration_s=1.0, dt_ms=0.1, sample_rate_hz=250.0, transient_s=0.2)
    assert (g.decim, g.n_steps, g.n_transient_steps, g.n_samples) == (40, 10000, 2000, 200)
    np.testing.assert_allclose(g.sample_times()[:2], [0.2, 0.204])
    with pytest.raises(SimulationError, match="sample_rate_hz = 300 does not divide"):
        time_grid(1.0, 0.1, 300.0)


def test_every_path_gives_the_same_plan_for_the_same_inputs(tmp_path):
    """API, CLI, sweep, fit, twin and the explorer dashboard resolve the same run."""
    api = plan(**INPUTS, params=VALUES)

    out = tmp_path / "cli.nc"
    assert main(["simulate", "--model", "jansen_rit", "--connectome", "tvb76", "--duration", "0.6",
                 "--transient", "0.1", "--dt", "0.1", "--sample-rate", "500", "--seed", "3",
                 "--normalisation", "max", "--method", "euler", "--set", "coupling=1.5",
                 "--set", "p=200", "--no-progress", "--out", str(out)]) == 0
    cli = xr.load_dataset(out, engine="h5netcdf")
    assert cli.attrs["plan_sha256"] == api.fingerprint()

    # sweeps draw their noise with the counter generator by default: the same inputs name NumPy's
    spec = sweep.SweepSpec(axes={"coupling": {"values": [1.5]}}, fixed={"p": 200.0}, noise_rng="numpy", **INPUTS)
    assert sweep.batch_plan(spec, {"coupling": np.array([1.5])}, [0]) == api

    problem = FitProblem(free=[FreeParam("coupling", 0.0, 3.0)], objective=None, fixed={"p": 200.0},
                         **INPUTS)
    assert problem.plan(problem.encode({"coupling": 1.5})[None, :]) == api

    twin = Twin.from_result(run_plan(api))
    assert twin.plan() == api
    fast = plan(**INPUTS, params=VALUES, noise_rng="counter")
    assert Twin.from_result(run_plan(fast)).plan() == fast       # a twin records the generator
    cheap = plan(**INPUTS, params=VALUES, noise_rng="counter", math_mode="fast")
    assert Twin.from_result(run_plan(cheap)).plan() == cheap     # ... and the math mode

    state = ExplorerState(mode="sync", auto_run=False, model="jansen_rit", connectome="tvb76",
                          duration_s=0.5, transient_s=0.1, seed=3, normalisation="max")
    state.update_params(VALUES)                     # duration: the explorer counts analysed time
    assert explorer_plan(state.spec()) == api


def test_sweep_over_connectome_scale_without_a_fixed_coupling_scales_the_models_coupling():
    """Regression: the sweep used coupling 0 (NETWORK_PARAMS' default) instead of simulate's
    model default (JR 2.0), so every connectome_scale sample ran uncoupled."""
    spec = sweep.SweepSpec(axes={"connectome_scale": {"values": [1.0, 2.0]}}, **INPUTS)
    batch = {"connectome_scale": np.array([1.0, 2.0])}
    p = sweep.batch_plan(spec, batch)
    np.testing.assert_array_equal(p.value("coupling")[:, 0], [2.0, 4.0])
    res = simulate(**sweep.build_simulate_kwargs(spec, batch))
    plain = simulate(**INPUTS, noise_rng=spec.noise_rng)   # coupling left to the model's default
    np.testing.assert_array_equal(res["v_pyr"].values[0], plain["v_pyr"].values[0])
    uncoupled = simulate(**INPUTS, params={"coupling": 0.0})
    assert np.abs(res["v_pyr"].values[0] - uncoupled["v_pyr"].values[0]).max() > 1e-3


def test_sweep_dtype_reaches_the_plan_and_float64_keeps_old_fingerprints():
    """A sweep spec's dtype (issue 20: float32 allowed for sweeps) is the batch plan's; the
    float64 default leaves the spec's fingerprint as it was before the option existed."""
    spec64 = sweep.SweepSpec(axes={"coupling": {"values": [1.5]}}, **INPUTS)
    spec32 = sweep.SweepSpec(axes={"coupling": {"values": [1.5]}}, dtype="float32", **INPUTS)
    batch = {"coupling": np.array([1.5])}
    assert sweep.batch_plan(spec64, batch).dtype == "float64"
    assert sweep.batch_plan(spec32, batch).dtype == "float32"
    assert "dtype" not in sweep.build_simulate_kwargs(spec64, batch)   # custom simulators need not know it
    assert spec32.fingerprint() != spec64.fingerprint()
    legacy = spec64.to_dict()
    del legacy["dtype"]
    assert sweep.SweepSpec.from_dict(legacy).fingerprint() == spec64.fingerprint()
    with pytest.raises(sweep.SweepError, match="dtype"):
        sweep.SweepSpec(axes={"coupling": {"values": [1.5]}}, dtype="float16", **INPUTS)


def test_sweep_math_mode_reaches_the_plan_and_the_default_keeps_old_fingerprints():
    """``math_mode: fast`` (opt-in cheaper exp) is the batch plan's; the default leaves the spec's
    fingerprint and the simulate() call as they were before the option existed."""
    base = sweep.SweepSpec(axes={"coupling": {"values": [1.5]}}, **INPUTS)
    fast = sweep.SweepSpec(axes={"coupling": {"values": [1.5]}}, math_mode="fast", **INPUTS)
    batch = {"coupling": np.array([1.5])}
    assert sweep.batch_plan(base, batch).math_mode == "default"
    assert sweep.batch_plan(fast, batch).math_mode == "fast"
    assert "math_mode" not in sweep.build_simulate_kwargs(base, batch)
    assert fast.fingerprint() != base.fingerprint()
    legacy = base.to_dict()
    del legacy["math_mode"]
    assert sweep.SweepSpec.from_dict(legacy).fingerprint() == base.fingerprint()
    with pytest.raises(sweep.SweepError, match="math_mode 'quick' unknown; allowed: default, fast"):
        sweep.SweepSpec(axes={"coupling": {"values": [1.5]}}, math_mode="quick", **INPUTS)
    with pytest.raises(sweep.SweepError, match="math_mode='fast' needs noise_rng='counter', dtype='float64'"):
        sweep.SweepSpec(axes={"coupling": {"values": [1.5]}}, math_mode="fast", noise_rng="numpy", **INPUTS)


@pytest.mark.parametrize("modes", [
    dict(noise_rng="numpy", dtype="float64", math_mode="fast"),
    dict(noise_rng="counter", dtype="float32", math_mode="fast"),
    dict(noise_rng="counter", dtype="float64", math_mode="quick"),
    dict(noise_rng="philox", dtype="float64", math_mode="default"),
    dict(noise_rng="counter", dtype="float16", math_mode="default"),
])
def test_kernel_plan_and_sweep_apply_one_mode_rule_with_one_message(modes):
    """The rule on noise_rng / dtype / math_mode lives in one function; the kernel's tag, the
    simulation plan and the sweep spec refuse the same combinations with the same words."""
    from neurotwin_dash.models._kernel import kernel_tag, mode_error
    msg = mode_error(**modes)
    field = msg.split()[0].split("=")[0]        # the message starts with the field it refuses
    assert field in modes and repr(modes[field]) in msg
    with pytest.raises(ValueError) as tag_err:
        kernel_tag("jansen_rit", **modes)
    with pytest.raises(SimulationError) as plan_err:
        plan(**{**INPUTS, **modes})
    with pytest.raises(sweep.SweepError) as spec_err:
        sweep.SweepSpec(axes={"coupling": {"values": [1.5]}}, **{**INPUTS, **modes})
    assert str(tag_err.value) == str(plan_err.value) == str(spec_err.value) == msg
    assert mode_error("counter", "float64", "fast") is None and mode_error("numpy", "float32", "default") is None
    assert mode_error("counter", "float64", "fast", backend="numpy") is not None
