"""Stimulation effects with uncertainty: the paired estimator, its calibration, and tACS outcomes."""
import numpy as np
import pytest
import xarray as xr
from scipy import signal, stats

from neurotwin_dash.simulate import Drive, simulate
from neurotwin_dash.stimulation.effects import (SHAM_VERDICT, entrainment_plv, format_effect, mean_ci,
                                                paired_effect, power_at_frequency, stimulation_effect,
                                                stimulation_outcomes)
from neurotwin_dash.stimulation.waveforms import TACS


def test_t_interval_matches_scipy_and_bootstrap_agrees_for_normal_data():
    rng = np.random.default_rng(3)
    x = rng.normal(0.7, 2.0, size=(4, 12))
    da = xr.DataArray(x, dims=("arm", "seed"))
    ci = mean_ci(da, "seed")
    lo, hi = stats.t.interval(0.95, 11, loc=x.mean(axis=1), scale=stats.sem(x, axis=1))
    np.testing.assert_allclose(ci["ci_low"], lo, rtol=1e-12)
    np.testing.assert_allclose(ci["ci_high"], hi, rtol=1e-12)
    boot = mean_ci(da, "seed", method="bootstrap")
    # percentile bootstrap is a little narrower than t at n = 12, but of the same size
    w_t, w_b = (ci["ci_high"] - ci["ci_low"]).values, (boot["ci_high"] - boot["ci_low"]).values
    assert np.all((w_b > 0.6 * w_t) & (w_b < 1.05 * w_t))
    with pytest.raises(ValueError, match="at least 2 values along 'seed'"):
        mean_ci(da.isel(seed=[0]), "seed")
    with pytest.raises(ValueError, match="method 'z' unknown"):
        mean_ci(da, "seed", method="z")


def test_paired_effect_verdicts_and_text():
    sham = xr.DataArray([1.0, 2.0, 3.0, 4.0, 5.0], dims="seed")
    up = paired_effect(sham + np.array([0.9, 1.1, 1.0, 0.95, 1.05]), sham)
    assert float(up["effect"]) == pytest.approx(1.0) and str(up["verdict"].values) == "above sham"
    noisy = paired_effect(sham + np.array([1.0, -1.0, 0.5, -0.5, 0.1]), sham)
    assert str(noisy["verdict"].values) == SHAM_VERDICT and not bool(noisy["excludes_zero"])
    assert float(up["sham"]) == 3.0 and up.attrs["n_seeds"] == 5
    text = format_effect(up["effect"], up["ci_low"], up["ci_high"], 5, "mV²")
    assert text.startswith("+1 ± 0.09") and "5 seeds" in text and text.endswith("above sham")
    with pytest.raises(ValueError, match="same 'seed' length"):
        paired_effect(sham, sham.isel(seed=slice(0, 3)))


def test_power_at_frequency_equals_welch_on_its_grid_and_plv_of_the_reference_is_one():
    fs = 500.0
    t = np.arange(3000) / fs
    rng = np.random.default_rng(0)
    x = xr.DataArray(np.sin(2 * np.pi * 40 * t) + rng.normal(0, 1, (2, t.size)), dims=("batch", "time"),
                     coords={"time": t})
    f, p = signal.welch(x.values, fs=fs, nperseg=1000, noverlap=500, axis=-1)
    np.testing.assert_allclose(power_at_frequency(x, 40.0).values, p[:, f == 40.0][:, 0], rtol=1e-10)
    # off the 0.5 Hz grid the direct DFT sees the whole line at its own frequency: a unit sine
    # through a 2-s Hann window has PSD (1/2)·(Σw)²/(fs·Σw²) = window_s / 3 at its frequency
    y = xr.DataArray(np.sin(2 * np.pi * 40.25 * t), dims="time", coords={"time": t})
    assert float(power_at_frequency(y, 40.25)) == pytest.approx(2.0 / 3, rel=1e-3)
    assert float(power_at_frequency(y, 40.0)) < 0.75 * 2.0 / 3               # a binned estimate misses part
    ref = np.sin(2 * np.pi * 40 * t)
    assert float(entrainment_plv(x.isel(batch=0) * 0 + ref, ref, 40.0)) == pytest.approx(1.0, abs=1e-6)
    noise = xr.DataArray(rng.normal(0, 1, t.size), dims="time", coords={"time": t})
    assert float(entrainment_plv(noise, ref, 40.0)) < 0.3


def test_ci_calibration_two_sham_arms_with_different_seeds():
    """0 mA in both arms, no common random numbers: the 95 % CI holds 0 in ≥ 17 of 20 repetitions."""
    n_rep, n_seeds = 20, 5
    n = n_rep * 2 * n_seeds
    res = simulate("lanmm", None, duration_s=3.5, transient_s=0.5, sample_rate_hz=500.0,
                   seed=list(range(1000, 1000 + n)), params={"C7": np.full(n, 550.0)}, record=["v_p2"])
    wave = TACS(40.0)
    out = stimulation_outcomes(res, "v_p2", None, 40.0, wave(res["time"].values), (30.0, 50.0))
    contains = {o: 0 for o in out.data_vars}
    for r in range(n_rep):
        a = slice(r * 2 * n_seeds, r * 2 * n_seeds + n_seeds)
        b = slice(r * 2 * n_seeds + n_seeds, (r + 1) * 2 * n_seeds)
        for o in out.data_vars:
            e = paired_effect(out[o].isel(batch=a).rename(batch="seed").drop_vars("seed"),
                              out[o].isel(batch=b).rename(batch="seed").drop_vars("seed"))
            contains[o] += int(str(e["verdict"].values) == SHAM_VERDICT)
    print("CIs containing 0 (of 20):", contains)
    assert all(c >= 17 for c in contains.values()), contains
    # and the arms really differ run to run (the CI is not trivially wide or zero)
    assert float(out["band_power"].std()) > 0.02 * float(out["band_power"].mean())


def test_strong_40hz_drive_locks_p2_beyond_sham_with_common_random_numbers():
    drive = Drive(spatial=np.array([[0.0], [1.0]]), waveform=TACS(40.0))     # arms: 0 mV, 1 mV
    eff = stimulation_effect("lanmm", None, drive, n_seeds=5, variable="v_p2", duration_s=3.0,
                             transient_s=0.5)
    assert eff.attrs["n_seeds"] == 5 and list(eff["outcome"].values) == ["band_power", "power_at_f", "plv"]
    zero, strong = eff.sel(arm=1), eff.sel(arm=2)
    np.testing.assert_array_equal(zero["effect"].values, 0.0)               # same seeds, no drive: identical
    plv = strong.sel(outcome="plv")
    print("1 mV at 40 Hz:", format_effect(plv["effect"], plv["ci_low"], plv["ci_high"], 5))
    assert float(plv["ci_low"]) > 0 and str(plv["verdict"].values) == "above sham"
    assert float(plv["stim"]) > 0.9 and float(plv["sham"]) < 0.4
    p40 = strong.sel(outcome="power_at_f")
    assert float(p40["ci_low"]) > 10 * float(p40["sham"])
    with pytest.raises(ValueError, match="n_seeds must be an integer ≥ 2"):
        stimulation_effect("lanmm", None, drive, n_seeds=1)
