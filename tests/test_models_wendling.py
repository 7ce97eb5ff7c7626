"""Wendling 2002 activity types told apart by spectral and waveform features (docs/science.md §2)."""
import numpy as np
import pytest
from scipy.signal import find_peaks, welch
from scipy.stats import skew

from neurotwin_dash.models import wendling
from neurotwin_dash.simulate import simulate

TYPES = ["background", "sustained_discharges", "slow_rhythmic", "low_voltage_fast", "quasi_sinusoidal"]


@pytest.fixture(scope="module")
def signals():
    B = [wendling.ACTIVITY_TYPES[t][0] for t in TYPES]
    G = [wendling.ACTIVITY_TYPES[t][1] for t in TYPES]
    ds = simulate("wendling", None, duration_s=12.0, transient_s=2.0, params={"B": B, "G": G}, seed=0)
    assert not ds.diverged.any()
    return {t: ds.v_pyr.values[k, :, 0] for k, t in enumerate(TYPES)}


def _features(v):
    f, p = welch(v, fs=1000.0, nperseg=2000)
    keep = f >= 1.0
    med = np.median(v)
    spikes, _ = find_peaks(v, height=med + 3.0, prominence=3.0)
    return dict(peak=f[keep][np.argmax(p[keep])], sd=v.std(), spikes=len(spikes), skew=skew(v))


def test_wendling_default_fast_rate_is_350():
    assert wendling.PARAMS["g"].default == 350.0


def test_background_is_low_amplitude_and_slow_without_spikes(signals):
    f = _features(signals["background"])
    assert f["sd"] < 0.5 and f["peak"] < 8.0 and f["spikes"] == 0


def test_sustained_discharges_are_large_asymmetric_spikes_at_a_few_hz(signals):
    f = _features(signals["sustained_discharges"])
    assert 3.0 <= f["peak"] <= 6.0
    assert f["sd"] > 2.0 and f["spikes"] >= 20 and f["skew"] > 0.5


def test_slow_rhythmic_activity_is_low_amplitude_alpha_range(signals):
    f = _features(signals["slow_rhythmic"])
    assert 8.0 <= f["peak"] <= 13.0 and f["sd"] < 0.5


def test_low_voltage_fast_activity_peaks_in_beta_with_small_amplitude(signals):
    f = _features(signals["low_voltage_fast"])
    assert 15.0 <= f["peak"] <= 30.0 and f["sd"] < 0.5


def test_quasi_sinusoidal_activity_is_large_and_symmetric(signals):
    f = _features(signals["quasi_sinusoidal"])
    assert 9.0 <= f["peak"] <= 13.0
    assert f["sd"] > 2.0 and abs(f["skew"]) < 0.3
