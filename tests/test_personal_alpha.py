"""The twin's local E–I loop: exact zero-frequency mapping onto the SAR model, the alpha
resonance of its linearisation, its bistable node, and twins that start from a given state."""
import numpy as np
import pytest
import xarray as xr

from neurotwin_dash import catalog
from neurotwin_dash.analysis import spectra
from neurotwin_dash.fit import personal as P
from neurotwin_dash.simulate import simulate
from neurotwin_dash.twin import Twin


@pytest.fixture(scope="module")
def subject():
    ds = catalog.load("hcp:101309")
    w = ds["weights"].values
    rng = np.random.default_rng(0)
    lin = P.LinearFit(0.9, np.exp(rng.uniform(-1.5, 1.5, 94)), float("nan"))
    return ds, w, w / np.max(np.abs(np.linalg.eigvals(w))), lin


@pytest.mark.parametrize("regime", ["alpha", "excitatory"])
def test_zero_frequency_linearisation_of_the_network_is_the_fitted_sar_model(subject, regime):
    _, w, ws, lin = subject
    sar = P.linear_fc(ws, lin.gain, lin.noise_var)
    for x_star in P.REGIMES[regime].x_grid:
        p = P.twin_from_linear(w, lin, 0.01, x_star, regime)
        fc = P.linearized_fc(ws, p["coupling"], p["x_ext"], p["noise_sd"], x_star, regime)
        np.testing.assert_allclose(fc, sar, atol=1e-9)
    if regime == "alpha":
        # the E–I loop changes the zero-frequency leak: the one-population gain formula is wrong here
        k_naive = P.coupling_for_gain(lin.gain, 0.3, "excitatory")
        xe = P.excitability(ws, k_naive, 0.3, "alpha")
        wrong = P.linearized_fc(ws, k_naive, xe, p["noise_sd"], 0.3, "alpha")
        assert not np.all(np.abs(wrong - sar) < 0.05)


def test_alpha_twin_has_an_alpha_resonance_and_the_excitatory_twin_none(subject):
    ds, w, ws, lin = subject
    delays = ds["tract_lengths"].values / 1000.0 / 10.0          # 10 m/s
    f = np.arange(1.0, 40.01, 1.0)
    mean, per_region = {}, {}
    for regime in ("alpha", "excitatory"):
        p = P.twin_from_linear(w, lin, 0.01, 0.25, regime)
        s = P.linear_spectrum(ws, p["coupling"], p["x_ext"], p["noise_sd"], f, 0.25, regime, delays_s=delays)
        mean[regime], per_region[regime] = s.mean(1), s
    a, e = mean["alpha"], mean["excitatory"]
    assert 8 <= f[np.argmax(a)] <= 12                  # the largest power of the whole spectrum is alpha
    assert a[np.argmax(a)] > 1.5 * a[0]
    assert np.all(np.diff(e) < 0) and e[f == 10][0] < 0.5 * e[0]    # low-pass, no rhythm
    psd = xr.DataArray(np.stack([per_region["alpha"][:, ::8].T, per_region["excitatory"][:, ::8].T]),
                       dims=("twin", "region", "frequency"), coords={"frequency": f})
    r = spectra.peak_over_aperiodic(psd, band=(8, 12))
    assert float(r["ratio"][0].mean()) > 1.8 and float(r["ratio"][1].mean()) < 1.1
    assert 9 < float(r["peak_frequency"][0].mean()) < 12
    # the rhythm needs the delays: without them the same node resonates in theta
    p = P.twin_from_linear(w, lin, 0.01, 0.25, "alpha")
    nodelay = P.linear_spectrum(ws, p["coupling"], p["x_ext"], p["noise_sd"], f, 0.25, "alpha").mean(1)
    assert f[np.argmax(nodelay)] < 8


def test_alpha_node_is_bistable_so_runs_start_at_the_operating_point(subject, tmp_path):
    ds, w, ws, lin = subject
    conn = P.subject_connectome(ds)
    x_star = 0.3
    p = P.twin_from_linear(w, lin, 0.01, x_star, "alpha")
    p["speed_m_s"] = 10.0
    start = np.array([x_star, P.ALPHA.y_star])
    kw = dict(params=p, duration_s=6.0, dt_ms=1.0, sample_rate_hz=100.0, transient_s=4.0,
              normalisation="spectral", record=["exc"], seed=0)
    at = simulate("wilson_cowan", conn, initial=start, **kw)["exc"].mean("time")
    low = simulate("wilson_cowan", conn, initial="random", **kw)["exc"].mean("time")
    assert float(np.abs(at - x_star).max()) < 0.01
    assert float((np.abs(low - x_star) > 0.05).mean()) > 0.5      # a random low start falls into the low state
    res = simulate("wilson_cowan", conn, initial=start, **{**kw, "duration_s": 4.5})
    with pytest.raises(Exception, match="initial"):
        Twin.from_result(res, connectome=conn)
    twin = Twin.from_result(res, connectome=conn, initial=start)
    twin.save(tmp_path / "t.nc")
    again = Twin.load(tmp_path / "t.nc")
    np.testing.assert_array_equal(np.asarray(again.simulation["initial"]), start)
    assert again.verify()
