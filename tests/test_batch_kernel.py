"""Batch-vectorised kernel (lanes innermost): same results as the per-member kernel, divergence
per lane, the polynomial exponential, and packed SIMD instructions in the compiled code."""
import math

import numpy as np
import pytest

from neurotwin_dash.models import MODELS, get_model
from neurotwin_dash.models import _batch_kernel
from neurotwin_dash.models._kernel import exp, model_tag
from neurotwin_dash.simulate import Drive, SimulationError, simulate

N_BATCH = 10  # two blocks of 8 lanes, the second padded


def _both(**kw):
    return simulate(kernel="batch", **kw), simulate(kernel="member", **kw)


@pytest.mark.parametrize("method", ["euler", "heun"])
@pytest.mark.parametrize("model", list(MODELS))
def test_batch_kernel_equals_member_kernel(model, method):
    mod = get_model(model)
    rng = np.random.default_rng(0)
    # per-member membrane drive (its own map for every member) and a shared rate drive
    drive = [Drive(rng.uniform(0.0, 1.0, (N_BATCH, 76)), lambda t: np.cos(2 * np.pi * 10 * t), "membrane"),
             Drive(np.full(76, 5.0 if model != "wilson_cowan" else 0.1), lambda t: t > 0.01, "rate")]
    record = list(mod.OUTPUTS) + [mod.STATES[mod.NOISE_STATES[0]]]
    kw = dict(model=model, connectome="tvb76", duration_s=0.05, method=method, drive=drive, record=record,
              params={"coupling": np.linspace(0.0, 4.0, N_BATCH)}, seed=list(range(N_BATCH)))
    fast, ref = _both(**kw)
    assert not ref.diverged.any()
    np.testing.assert_array_equal(fast.diverged.values, ref.diverged.values)
    for name in record:
        scale = float(np.abs(ref[name]).max())
        assert scale > 0
        np.testing.assert_allclose(fast[name].values, ref[name].values, rtol=0, atol=1e-9 * scale,
                                   err_msg=f"{model}.{name}")


def test_diverging_member_is_flagged_and_leaves_the_other_lanes_alone():
    # Euler is unstable for Wendling's fast synapse when g·dt > 2 (g = 1000 1/s at dt = 2.5 ms)
    g = np.full(N_BATCH, 350.0)
    g[[2, 9]] = 1000.0
    kw = dict(model="wendling", connectome="tvb76", duration_s=1.0, dt_ms=2.5, sample_rate_hz=100.0,
              seed=list(range(N_BATCH)), params={"g": g})
    fast, ref = _both(**kw)
    assert fast.diverged.values.tolist() == [k in (2, 9) for k in range(N_BATCH)]
    np.testing.assert_array_equal(np.isnan(fast.v_pyr.values), np.isnan(ref.v_pyr.values))
    assert np.isnan(fast.v_pyr.values[2, -1]).all()
    ok = ~fast.diverged.values
    np.testing.assert_allclose(fast.v_pyr.values[ok], ref.v_pyr.values[ok], rtol=0, atol=1e-9)
    # a lane next to the diverging one equals that member run without the diverging members
    calm = simulate(kernel="batch", **{**kw, "seed": [1, 3], "params": {"g": [350.0, 350.0]}})
    np.testing.assert_allclose(fast.v_pyr.values[[1, 3]], calm.v_pyr.values, rtol=0, atol=1e-9)


def test_auto_kernel_needs_shared_delays():
    kw = dict(model="jansen_rit", connectome="tvb76", duration_s=0.01, params={"speed_m_s": [3.0, 5.0]})
    with pytest.raises(SimulationError, match="speed_m_s"):
        simulate(kernel="batch", **kw)
    assert simulate(**kw).v_pyr.shape == (2, 10, 76)        # auto: the per-member kernel
    with pytest.raises(SimulationError, match="kernel"):
        simulate(kernel="lanes", **kw)


def test_polynomial_exp_matches_libm_to_1e_15():
    from numba import njit

    @njit
    def many(a):
        out = np.empty_like(a)
        for k in range(a.size):
            out[k] = exp(a[k])
        return out

    x = np.concatenate([np.linspace(-708.0, 709.7, 400_001), np.random.default_rng(1).uniform(-40, 40, 100_000)])
    rel = np.abs(many(x) / np.exp(x) - 1.0)
    assert rel.max() <= 1e-15
    edge = many(np.array([np.nan, np.inf, -np.inf, 710.0, -746.0, -740.0, 0.0]))
    assert np.isnan(edge[0]) and edge[1] == np.inf and edge[2] == 0.0 and edge[3] == np.inf
    assert edge[4] == 0.0 and edge[5] == pytest.approx(math.exp(-740.0), rel=1e-12) and edge[6] == 1.0


def test_compiled_lane_loops_use_packed_vector_instructions():
    simulate("jansen_rit", "tvb76", duration_s=0.01, params={"coupling": [1.0, 2.0]}, kernel="batch")
    counts = _batch_kernel.packed_instruction_count(model_tag("jansen_rit"))
    if sum(counts.values()) == 0:
        pytest.skip("kernel loaded from numba's cache: no assembly to inspect")
    assert counts["ymm"] + counts["zmm"] >= 50, counts


def test_chunked_batch_run_equals_one_call(monkeypatch):
    from neurotwin_dash import simulate as sim_module
    kw = dict(model="jansen_rit", connectome="tvb76", duration_s=0.25, transient_s=0.05, seed=[2, 3, 4],
              params={"coupling": [1.0, 3.0, 5.0], "speed_m_s": 2.0}, kernel="batch")
    whole = simulate(**kw)
    monkeypatch.setattr(sim_module, "_MAX_CHUNK_STEPS", 70)  # many resumed chunks, delays > chunk
    chunked = simulate(**kw)
    assert np.array_equal(whole.v_pyr.values, chunked.v_pyr.values)
    alone = simulate(**{**kw, "seed": 3, "params": {"coupling": 3.0, "speed_m_s": 2.0}, "kernel": "member"})
    np.testing.assert_allclose(whole.v_pyr.values[1], alone.v_pyr.values[0], rtol=0, atol=1e-9)
