"""Network simulator: reference agreement, seeds, batching, divergence, input checks."""
import numpy as np
import pytest

from neurotwin_dash.params import ParamError
from neurotwin_dash.simulate import Drive, SimulationError, simulate


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_numba_kernel_matches_numpy_reference_on_76_region_network(method):
    drive = [Drive(np.linspace(0.0, 1.0, 76), lambda t: np.sin(2 * np.pi * 10 * t), "membrane"),
             Drive(np.full(76, 5.0), lambda t: t > 0.01, "rate")]
    kw = dict(model="jansen_rit", connectome="tvb76", duration_s=0.06, params={"coupling": [1.0, 20.0]},
              seed=[1, 2], method=method, drive=drive, record=["v_pyr", "rate_out", "y4"])
    fast = simulate(**kw)
    ref = simulate(backend="numpy", **kw)
    assert float(np.abs(fast.v_pyr).max()) > 1.0  # something happened
    for name in kw["record"]:
        scale = float(np.abs(ref[name]).max())
        np.testing.assert_allclose(fast[name].values, ref[name].values, rtol=0, atol=1e-10 * scale)


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


def test_unknown_or_out_of_range_parameter_raises_before_compute():
    with pytest.raises(ParamError, match="'nosuch'"):
        simulate("jansen_rit", None, duration_s=0.1, params={"nosuch": 1.0})
    with pytest.raises(ParamError, match=r"'A'.*\[2, 10\]"):
        simulate("jansen_rit", None, duration_s=0.1, params={"A": 50.0})
    with pytest.raises(ParamError, match="shape"):
        simulate("jansen_rit", "tvb76", duration_s=0.1, params={"p": np.ones((2, 3))})
    with pytest.raises(SimulationError, match="sample_rate_hz"):
        simulate("jansen_rit", None, duration_s=0.1, sample_rate_hz=300.0)
    with pytest.raises(SimulationError, match="record"):
        simulate("jansen_rit", None, duration_s=0.1, record=["v_p1"])
    with pytest.raises(ValueError, match="unknown model"):
        simulate("nosuch", None, duration_s=0.1)
