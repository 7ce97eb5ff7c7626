"""LaNMM: alpha from P1, gamma from P2, phase-amplitude coupling, AD gamma loss (docs/science.md §3)."""
import numpy as np
import pytest
from scipy.signal import butter, hilbert, sosfiltfilt, welch

from neurotwin_dash.models import lanmm
from neurotwin_dash.simulate import simulate

FS = 1000.0


@pytest.fixture(scope="module")
def healthy_and_ad():
    ds = simulate("lanmm", None, duration_s=12.0, transient_s=2.0, params={"C7": [550.0, 140.0]}, seed=0)
    assert not ds.diverged.any()
    return ds


def _spectrum(v):
    f, p = welch(v, fs=FS, nperseg=4000)
    return f, p


def _band_power(f, p, lo, hi):
    m = (f >= lo) & (f <= hi)
    return p[m].sum() * (f[1] - f[0])


def _tort_mi(phase_signal, amp_signal, n_bins=18):
    """Tort et al. (2010) modulation index: alpha (8–12 Hz) phase, gamma (30–50 Hz) amplitude."""
    band = lambda x, lo, hi: sosfiltfilt(butter(4, [lo, hi], btype="band", fs=FS, output="sos"), x)  # noqa
    phase = np.angle(hilbert(band(phase_signal, 8, 12)))
    amp = np.abs(hilbert(band(amp_signal, 30, 50)))

    def mi(ph, am):
        idx = np.minimum(((ph + np.pi) / (2 * np.pi) * n_bins).astype(int), n_bins - 1)
        mean = np.bincount(idx, am, n_bins) / np.bincount(idx, minlength=n_bins)
        q = mean / mean.sum()
        return (np.log(n_bins) + np.sum(q * np.log(q))) / np.log(n_bins)

    rng = np.random.default_rng(0)
    surrogates = [mi(phase, np.roll(amp, rng.integers(1000, amp.size - 1000))) for _ in range(100)]
    return mi(phase, amp), np.array(surrogates)


def test_lanmm_has_14_synapses_and_p2_threshold_1mV():
    assert len(lanmm.SYNAPSES) == 14 and len(lanmm.STATES) == 28
    assert lanmm.PARAMS["v0_p2"].default == 1.0 and lanmm.PARAMS["v0"].default == 6.0


def test_p1_generates_alpha_and_p2_generates_gamma_near_40_hz(healthy_and_ad):
    f, p1 = _spectrum(healthy_and_ad.v_p1.values[0, :, 0])
    _, p2 = _spectrum(healthy_and_ad.v_p2.values[0, :, 0])
    keep = f >= 2
    assert 9.0 <= f[keep][np.argmax(p1[keep])] <= 12.0
    assert 35.0 <= f[keep][np.argmax(p2[keep])] <= 45.0
    assert _band_power(f, p1, 8, 12) > 5 * _band_power(f, p1, 30, 50)
    assert _band_power(f, p2, 30, 50) > 5 * _band_power(f, p2, 8, 12)


def test_alpha_phase_modulates_gamma_amplitude(healthy_and_ad):
    mi, surrogates = _tort_mi(healthy_and_ad.v_p1.values[0, :, 0], healthy_and_ad.v_p2.values[0, :, 0])
    assert mi > surrogates.mean() + 3 * surrogates.std()
    assert mi > 1e-3


def test_ad_connectivity_loses_gamma_and_slows_alpha(healthy_and_ad):
    f, p2_h = _spectrum(healthy_and_ad.v_p2.values[0, :, 0])
    _, p2_ad = _spectrum(healthy_and_ad.v_p2.values[1, :, 0])
    _, p1_ad = _spectrum(healthy_and_ad.v_p1.values[1, :, 0])
    assert _band_power(f, p2_ad, 30, 50) < 0.05 * _band_power(f, p2_h, 30, 50)
    keep = f >= 2
    assert f[keep][np.argmax(p1_ad[keep])] < 9.5
