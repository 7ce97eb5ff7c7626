"""Jansen–Rit reference behaviours (docs/science.md §1)."""
import numpy as np
import pytest
from scipy.signal import welch

from neurotwin_dash.models import jansen_rit
from neurotwin_dash.simulate import simulate


def _peak_hz(v, fs=1000.0, low=1.0):
    f, p = welch(v, fs=fs, nperseg=int(4 * fs), axis=0)
    keep = f >= low
    return f[keep][np.argmax(p[keep], axis=0)]


def test_single_node_peaks_in_alpha_at_p220_without_noise():
    ds = simulate("jansen_rit", None, duration_s=12.0, transient_s=2.0, params={"noise_sd": 0.0})
    v = ds.v_pyr.values[0, :, 0]
    assert 10.0 <= _peak_hz(v) <= 11.0
    assert 2.5 < np.ptp(v) < 4.5  # docs/science.md: 3.4 mV peak-to-peak


def test_single_node_peaks_in_alpha_with_input_noise():
    ds = simulate("jansen_rit", None, duration_s=12.0, transient_s=2.0, params={"noise_sd": 22.0}, seed=1)
    assert 10.0 <= _peak_hz(ds.v_pyr.values[0, :, 0]) <= 11.25


@pytest.mark.parametrize("p", [60.0, 100.0])
def test_no_oscillation_below_the_lower_bifurcation(p):
    ds = simulate("jansen_rit", None, duration_s=10.0, transient_s=5.0, params={"p": p, "noise_sd": 0.0})
    assert np.ptp(ds.v_pyr.values) < 1e-3


def test_76_region_network_with_delays_is_stable_and_peaks_in_alpha_at_default_coupling():
    assert jansen_rit.NETWORK_DEFAULTS["coupling"] == 2.0
    ds = simulate("jansen_rit", "tvb76", duration_s=7.0, transient_s=1.0, seed=0)
    assert ds.attrs["params"].count('"coupling": 2.0') == 1
    assert not bool(ds.diverged.any())
    v = ds.v_pyr.values[0]
    assert np.all(np.isfinite(v))
    peaks = _peak_hz(v)
    assert 10.0 <= np.median(peaks) <= 11.5
    assert np.mean((peaks >= 8) & (peaks <= 13)) > 0.9
    assert v.std(axis=0).mean() > 0.5  # oscillating, not saturated


def test_strong_coupling_saturates_the_network_out_of_alpha():
    ds = simulate("jansen_rit", "tvb76", duration_s=5.0, transient_s=1.0, params={"coupling": 50.0}, seed=0)
    v = ds.v_pyr.values[0]
    assert v.std(axis=0).mean() < 0.4
    assert np.mean((_peak_hz(v) >= 8) & (_peak_hz(v) <= 13)) < 0.6
