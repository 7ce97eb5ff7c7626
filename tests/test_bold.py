"""Balloon–Windkessel BOLD: baseline, impulse response timing, undershoot, chunking, reference."""
import numpy as np
import pytest
import xarray as xr

from neurotwin_dash.observe import bold
from neurotwin_dash.params import ParamError


def _drive(z, dt=1e-3, lead=None):
    z = np.asarray(z, float)
    dims = ("time", "region") if z.ndim == 2 else ("batch", "time", "region")
    coords = {"time": np.arange(z.shape[-2]) * dt, "region": [f"r{i}" for i in range(z.shape[-1])]}
    return xr.DataArray(z, dims=dims, coords=coords)


def test_zero_input_stays_at_baseline():
    out = bold.balloon_windkessel(_drive(np.zeros((20000, 4))), tr_s=0.5, dt_ms=0.5)
    assert out.sizes["time"] == 40
    np.testing.assert_array_equal(out.values, 0.0)


@pytest.mark.parametrize("constants, t_peak, t_under", [("classic", 3.2, 9.3), ("stephan2007", 4.3, 12.4)])
def test_half_second_impulse_peaks_when_the_constants_predict_then_undershoots(constants, t_peak, t_under):
    r = bold.impulse_response(constants, duration_s=30.0, impulse_s=0.5, dt_ms=1.0, tr_s=0.01)
    y = r.values
    i, j = int(np.argmax(y)), int(np.argmin(y))
    assert float(r.time[i]) == pytest.approx(t_peak, abs=0.1)
    assert y[i] > 0.005                                # ≥ 0.5 % signal change
    assert float(r.time[j]) == pytest.approx(t_under, abs=0.3)
    assert -0.5 * y[i] < y[j] < -0.02 * y[i]           # undershoot, smaller than the peak
    assert abs(y[-1]) < 0.01 * y[i]                    # back to baseline
    if constants == "classic":                         # docs/science.md §5: 1.5 % and −0.27 %
        assert y[i] == pytest.approx(0.0151, abs=0.0005)
        assert y[j] == pytest.approx(-0.0027, abs=0.0002)


def test_numba_kernel_agrees_with_numpy_reference():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2000, 3)) * 2 + np.array([0.0, 0.5, -0.3])
    for constants in ("classic", "stephan2007"):
        ref = bold.balloon_windkessel_reference(z, 1e-3, 2.5e-4, constants, tr=0.05)
        got = bold.balloon_windkessel(_drive(z), tr_s=0.05, dt_ms=0.25, constants=constants)
        assert got.shape == ref.shape == (40, 3)
        np.testing.assert_allclose(got.values, ref, rtol=0, atol=1e-6 * np.abs(ref).max())  # powers carried by ODEs between samples


def test_chunked_and_unchunked_runs_agree_and_batches_are_independent():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((2, 30000, 5))
    whole = bold.balloon_windkessel(_drive(z), tr_s=0.72, chunk_s=1e6)
    chunked = bold.balloon_windkessel(_drive(z), tr_s=0.72, chunk_s=1.37)
    np.testing.assert_array_equal(whole.values, chunked.values)
    assert whole.dims == ("batch", "time", "region")
    np.testing.assert_allclose(whole.time.values, np.arange(42) * 0.72, atol=1e-9)
    alone = bold.balloon_windkessel(_drive(z[1]), tr_s=0.72)
    np.testing.assert_array_equal(whole.isel(batch=1).values, alone.values)


def test_integration_step_barely_changes_the_response():
    a = bold.impulse_response("classic", duration_s=20, dt_ms=1.0, tr_s=0.1).values
    b = bold.impulse_response("classic", duration_s=20, dt_ms=0.1, tr_s=0.1).values
    np.testing.assert_allclose(a, b, atol=0.01 * a.max())


def test_bold_from_result_uses_rate_out_zscored_and_keeps_batch_coords():
    rng = np.random.default_rng(2)
    t = np.arange(20000) * 1e-3
    rate = 3 + rng.random((2, t.size, 3))
    rate[1] = np.nan
    res = xr.Dataset(
        {"rate_out": (("batch", "time", "region"), rate),
         "v_pyr": (("batch", "time", "region"), rng.standard_normal((2, t.size, 3)))},
        coords={"batch": [0, 1], "time": t, "region": ["a", "b", "c"], "coupling": ("batch", [0.0, 1.0])})
    out = bold_out = bold.bold_from_result(res, tr_s=1.0)
    assert out.attrs["drive"] == "rate_out" and out.attrs["drive_norm"] == "zscore"
    assert list(out.coupling.values) == [0.0, 1.0]
    assert np.all(np.isfinite(bold_out.isel(batch=0))) and np.all(np.isnan(bold_out.isel(batch=1)))
    # z-scored drive: a constant offset or scale on the rate does not change the BOLD
    res2 = res.assign(rate_out=res.rate_out * 4 + 10)
    np.testing.assert_allclose(bold.bold_from_result(res2, tr_s=1.0).isel(batch=0).values,
                               out.isel(batch=0).values, rtol=1e-8, atol=1e-12)


def test_bold_inputs_are_validated():
    d = _drive(np.zeros((1000, 2)))
    with pytest.raises(ParamError, match="dt_ms"):
        bold.balloon_windkessel(d, dt_ms=5.0)
    with pytest.raises(ParamError, match="dt_ms"):
        bold.balloon_windkessel(d, dt_ms=0.3)
    with pytest.raises(ParamError, match="tr_s"):
        bold.balloon_windkessel(d, tr_s=20.0)
    with pytest.raises(ParamError, match="constants"):
        bold.balloon_windkessel(d, constants="fancy")
    with pytest.raises(ParamError, match="tau"):
        bold.resolve_constants({"tau": -1.0})
