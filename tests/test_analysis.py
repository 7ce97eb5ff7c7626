"""Analysis on synthetic signals with known answers."""
import dask.array as dsa
import numpy as np
import pytest
import xarray as xr

from neurotwin_dash import analysis as an
from neurotwin_dash.analysis import connectivity, spectra

FS = 500.0


def _signals(x, fs=FS, node="region"):
    x = np.asarray(x, float)
    dims = ("time", node) if x.ndim == 2 else ("batch", "time", node)
    return xr.DataArray(x, dims=dims, coords={"time": np.arange(x.shape[-2]) / fs,
                                              node: [f"n{i}" for i in range(x.shape[-1])]})


def _t(seconds, fs=FS):
    return np.arange(int(seconds * fs)) / fs


def test_welch_of_a_10hz_sinusoid_peaks_at_10hz_with_the_right_power():
    t = _t(20)
    rng = np.random.default_rng(0)
    x = np.stack([2 * np.sin(2 * np.pi * 10 * t), np.sin(2 * np.pi * 23.3 * t)], -1) \
        + 0.1 * rng.standard_normal((t.size, 2))
    psd = an.welch(_signals(x))
    assert psd.dims == ("region", "frequency")
    assert float(psd.frequency[1] - psd.frequency[0]) == pytest.approx(0.5)
    pk = an.peak_frequency(psd, "alpha")
    assert float(pk.sel(region="n0")) == pytest.approx(10.0, abs=0.05)
    assert float(an.peak_frequency(psd, (15, 30)).sel(region="n1")) == pytest.approx(23.3, abs=0.15)
    bp = an.band_power(psd)
    # power of a sinusoid of amplitude A is A²/2
    assert float(bp.sel(region="n0", band="alpha")) == pytest.approx(2.0, rel=0.05)
    rel = an.band_power(psd, relative=True)
    assert float(rel.sel(region="n0", band="alpha")) > 0.95
    assert list(bp.band.values) == list(an.BANDS)


def test_gamma_power_and_band_table_follow_science_md():
    assert an.BANDS["alpha"] == (8.0, 13.0) and an.BANDS["gamma"] == (30.0, 80.0)
    t = _t(10)
    x = np.stack([np.sin(2 * np.pi * 40 * t), np.sin(2 * np.pi * 10 * t)], -1)
    g = an.gamma_power(an.welch(_signals(x)))
    assert float(g.sel(region="n0")) == pytest.approx(0.5, rel=0.05)
    assert float(g.sel(region="n1")) < 1e-3


def test_aperiodic_exponent_recovers_the_slope_of_power_law_noise():
    rng = np.random.default_rng(3)
    n = int(60 * FS)
    f = np.fft.rfftfreq(n, 1 / FS)
    out = []
    for chi in (1.0, 2.0):
        amp = np.zeros_like(f)
        amp[1:] = f[1:] ** (-chi / 2)
        spec = amp * np.exp(2j * np.pi * rng.random(f.size))
        out.append(np.fft.irfft(spec, n))
    psd = an.welch(_signals(np.stack(out, -1)))
    ex = an.aperiodic_exponent(psd, (2, 40))
    np.testing.assert_allclose(ex.values, [1.0, 2.0], atol=0.15)


def test_welch_and_fc_work_lazily_on_dask_chunks():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4000, 5))
    da = _signals(x)
    lazy = da.copy(data=dsa.from_array(x, chunks=(1, 4000, 5)))
    p_lazy = an.welch(lazy)
    assert p_lazy.chunks is not None
    xr.testing.assert_allclose(p_lazy.compute(), an.welch(da))
    f_lazy = an.fc_pearson(lazy)
    assert f_lazy.chunks is not None
    xr.testing.assert_allclose(f_lazy.compute(), an.fc_pearson(da))


def test_identical_signals_give_fc_and_plv_of_one_and_independent_noise_fc_near_zero():
    rng = np.random.default_rng(2)
    t = _t(30)
    base = np.sin(2 * np.pi * 10 * t + 0.3 * np.cumsum(rng.standard_normal(t.size)) / 30) \
        + 0.3 * rng.standard_normal(t.size)
    same = _signals(np.stack([base, base, 2 * base + 1], -1))
    fc = an.fc_pearson(same)
    assert fc.dims == ("region", "region2")
    np.testing.assert_allclose(fc.values, 1.0, atol=1e-10)
    np.testing.assert_allclose(an.plv(same, "alpha").values, 1.0, atol=1e-10)
    np.testing.assert_allclose(an.aec(same, "alpha").values, 1.0, atol=1e-10)
    noise = _signals(rng.standard_normal((t.size, 8)))
    off = connectivity.upper_triangle(an.fc_pearson(noise))
    assert np.abs(off).max() < 0.05                 # 15,000 samples: sd of r ≈ 0.008
    off_plv = connectivity.upper_triangle(an.plv(noise, "alpha"))
    # independent phases: PLV ~ sqrt(pi / 4N) with N ≈ bandwidth × duration = 150 → 0.07
    assert off_plv.mean() < 0.1 and off_plv.max() < 0.25


def test_plv_sees_a_constant_phase_lag_that_pearson_fc_misses():
    t = _t(20)
    rng = np.random.default_rng(4)
    phase = 2 * np.pi * 10 * t + np.cumsum(rng.standard_normal(t.size)) * 0.05
    x = np.stack([np.cos(phase), np.cos(phase + np.pi / 2)], -1) + 0.2 * rng.standard_normal((t.size, 2))
    da = _signals(x)
    assert float(an.plv(da, "alpha")[0, 1]) > 0.9
    assert abs(float(an.fc_pearson(da)[0, 1])) < 0.2
    # orthogonalised AEC removes zero-lag leakage: copies of one signal are not "connected"
    leak = _signals(np.stack([x[:, 0], x[:, 0]], -1))
    assert float(an.aec(leak, "alpha")[0, 1]) == pytest.approx(1.0)
    assert abs(float(an.aec(leak, "alpha", orthogonalise=True)[0, 1])) < 0.3


def test_coherence_from_mne_connectivity_separates_shared_from_independent_alpha():
    rng = np.random.default_rng(5)
    t = _t(40)
    shared = np.sin(2 * np.pi * 10 * t + np.cumsum(rng.standard_normal(t.size)) * 0.05)
    x = np.stack([shared + 0.5 * rng.standard_normal(t.size), shared + 0.5 * rng.standard_normal(t.size),
                  rng.standard_normal(t.size)], -1)
    coh = an.coherence(_signals(x), "alpha")
    assert coh.dims == ("region", "region2")
    assert float(coh[0, 1]) > 0.6
    assert float(coh[0, 2]) < 0.2
    np.testing.assert_allclose(coh.values, coh.values.T)


def test_fcd_is_high_and_flat_for_stationary_coupling_and_bimodal_for_switching():
    rng = np.random.default_rng(6)
    fs = 2.0
    n = 1200
    common = rng.standard_normal((n, 1))
    # stationary: same correlation structure in every window
    stat = common * np.array([0.2, 0.5, 1, 1.5, 2, 3]) + rng.standard_normal((n, 6))
    # switching: two communities alternate every 100 s
    sw = rng.standard_normal((n, 6))
    for k in range(0, n, 400):
        sw[k:k + 200, :3] += 2 * common[k:k + 200]
        sw[k + 200:k + 400, 3:] += 2 * common[k + 200:k + 400]
    f_stat = an.fcd(_signals(stat, fs=fs), window_s=60, step_s=10)
    f_sw = an.fcd(_signals(sw, fs=fs), window_s=60, step_s=10)
    assert f_stat.dims == ("window", "window2")
    np.testing.assert_allclose(np.diag(f_stat.values), 1.0)
    u_stat, u_sw = connectivity.upper_triangle(f_stat), connectivity.upper_triangle(f_sw)
    assert u_stat.mean() > 0.9 and u_stat.var() < 0.005
    assert u_sw.var() > 0.08 and u_sw.min() < -0.2
    assert an.fcd_ks_distance(f_stat, f_stat) == 0.0
    assert an.fcd_ks_distance(f_stat, f_sw) > 0.3


def test_fc_fit_score_is_one_for_the_same_matrix_and_handles_batches():
    rng = np.random.default_rng(7)
    fc = an.fc_pearson(_signals(rng.standard_normal((400, 10)) + rng.standard_normal((400, 1))))
    assert an.fc_fit_score(fc, fc) == pytest.approx(1.0)
    noisy = fc + 0.3 * rng.standard_normal(fc.shape)
    batch = xr.concat([fc, noisy], dim="batch")
    s = an.fc_fit_score(batch, fc)
    assert s.dims == ("batch",)
    assert float(s[0]) == pytest.approx(1.0) and 0.0 < float(s[1]) < 0.95
    with pytest.raises(ValueError, match="sizes"):
        an.fc_fit_score(fc.isel(region=slice(0, 5), region2=slice(0, 5)).values, fc.values)


def _pac_signal(coupled, seconds=30, fs=1000.0, seed=0):
    rng = np.random.default_rng(seed)
    t = _t(seconds, fs)
    # alpha with a wandering phase (coherence time ~ 1 s), as in real rhythms
    slow_phase = 2 * np.pi * 10 * t + np.cumsum(rng.standard_normal(t.size)) * np.sqrt(2 / fs)
    mod = 1 + 0.8 * np.cos(slow_phase) if coupled else np.ones_like(t)
    x = np.sin(slow_phase) + 0.3 * mod * np.sin(2 * np.pi * 50 * t) + 0.3 * rng.standard_normal(t.size)
    return x


def test_tort_mi_of_locked_gamma_is_far_above_surrogates_and_uncoupled_is_not():
    x = np.stack([_pac_signal(True), _pac_signal(False, seed=1)], -1)
    res = an.phase_amplitude_coupling(_signals(x, fs=1000.0), "alpha", (35, 65), n_surrogates=100)
    mi, z, p = res["mi"].values, res["mi_z"].values, res["p_value"].values
    assert mi[0] > 10 * res["mi_surrogate_mean"].values[0]
    assert z[0] > 10 and p[0] == pytest.approx(1 / 101)
    assert abs(z[1]) < 3 and p[1] > 0.01
    # noise-free value: amplitude ∝ 1 + 0.8 cos φ → MI ≈ 0.8² / (4 ln 18) = 0.055 (small-m expansion);
    # unmodulated broadband noise in the gamma band lowers it
    assert 0.025 < mi[0] < 0.06
    assert mi[1] < 0.002


def test_modulation_index_is_zero_for_uniform_amplitude_and_validates_shapes():
    ph = np.linspace(-np.pi, np.pi, 1800, endpoint=False)
    assert an.modulation_index(ph, np.ones_like(ph)) == pytest.approx(0.0, abs=1e-12)
    peaked = np.where((ph >= 0) & (ph < 2 * np.pi / 18), 1.0, 0.0)   # all amplitude in one bin
    assert an.modulation_index(ph, peaked) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same length"):
        an.modulation_index(ph, ph[:-1])


def test_bad_bands_and_time_axes_are_rejected_with_named_fields():
    with pytest.raises(ValueError, match="band"):
        spectra.resolve_band("ultra")
    with pytest.raises(ValueError, match="band"):
        spectra.resolve_band((20, 10))
    da = _signals(np.zeros((100, 2)))
    with pytest.raises(ValueError, match="time"):
        an.welch(da.isel(time=[0, 1, 5, 7]))
    with pytest.raises(ValueError, match="overlap"):
        an.welch(da, overlap=1.0)
    with pytest.raises(ValueError, match="Nyquist"):
        an.plv(da, (100, 300))
