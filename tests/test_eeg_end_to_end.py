"""A 76-region Jansen–Rit network through EEG and analysis, plotted with MNE's own functions.

Documented finding: with homogeneous parameters every region oscillates at ~10.5 Hz with
similar amplitude, so the scalp alpha topography follows the lead field and the parcellation
alone. tvb76 has 24 frontal regions (PFC*, PMC*, FEF, per hemisphere 12) against 4 occipital
ones (V1, V2), so with equal moments per region the simulated alpha is *frontal*-dominant.
Making the occipital generators stronger (as the resting brain's posterior alpha sources
are; here ×4 moment for V1/V2) turns the same pipeline's topography occipital, which the
test checks too.
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from neurotwin_dash import analysis as an  # noqa: E402
from neurotwin_dash.observe import eeg  # noqa: E402

simulate_mod = pytest.importorskip("neurotwin_dash.simulate")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def _alpha_map(raw):
    psd = raw.compute_psd(fmin=1.0, fmax=40.0, n_fft=int(2 * raw.info["sfreq"]), verbose=False)
    d, f = psd.get_data(), psd.freqs
    return psd, d[:, (f >= 8) & (f < 13)].sum(axis=1), f[np.argmax(d.mean(axis=0))]


def _frac_top(raw, power, prefixes, k=8):
    top = [raw.ch_names[i] for i in np.argsort(power)[::-1][:k]]
    return np.mean([c.startswith(prefixes) for c in top]), top


def test_jansen_rit_76_regions_to_eeg_gives_alpha_with_documented_topography_and_mne_plots():
    res = simulate_mod.simulate("jansen_rit", "tvb76", duration_s=11.0, sample_rate_hz=250.0, seed=3,
                                transient_s=1.0)
    assert not bool(res["diverged"].any())
    # analysis on the region signals: alpha peak as in docs/science.md (median 10.5 Hz)
    spec = an.spectral_metrics(res["v_pyr"], aperiodic=False)
    assert float(spec["alpha_peak_hz"].median()) == pytest.approx(10.5, abs=0.6)

    raw = eeg.simulated_eeg(res, montage="biosemi64")
    assert len(raw.ch_names) == 64 and raw.get_montage() is not None
    psd, alpha, f_peak = _alpha_map(raw)
    assert f_peak == pytest.approx(10.5, abs=0.6)
    assert 1.0 < raw.get_data().std() * 1e6 < 100.0        # microvolts, like scalp EEG
    frontal, top = _frac_top(raw, alpha, ("Fp", "AF", "F"))
    # documented: frontal-dominant. With every region started from its own random state (the
    # network default since the initial-state fix) the frontal share of the 8 strongest alpha
    # electrodes over seeds 3-14 is 0.85 on average (0.5-1.0; seed 3: 0.625); the old identical
    # zero start gave 0.93 (0.75-1.0), part of the frontal bias came from the shared start.
    assert top[0].startswith(("Fp", "AF", "F")) and frontal >= 0.5, top

    # stronger occipital generators (x4 moment for V1/V2) → occipital-dominant topography
    labels = list(res.region.values)
    gain = np.full(len(labels), eeg.DEFAULT_MOMENT_NAM_PER_MV)
    gain[[i for i, s in enumerate(labels) if s[1:] in ("V1", "V2")]] *= 4
    raw_occ = eeg.simulated_eeg(res, montage="biosemi64", moment_nAm_per_mV=gain)
    psd_occ, alpha_occ, _ = _alpha_map(raw_occ)
    posterior, top_occ = _frac_top(raw_occ, alpha_occ, ("O", "PO", "Iz"), k=4)
    assert top_occ[0].startswith(("O", "PO", "Iz")) and posterior >= 0.5, top_occ

    # MNE's own plotting: spectrum and alpha topomaps
    ARTIFACTS.mkdir(exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    psd.plot(axes=axes[0], show=False, amplitude=False, spatial_colors=True)
    psd.plot_topomap(bands={"alpha 8–13 Hz\nhomogeneous": (8, 13)}, axes=axes[1], show=False)
    psd_occ.plot_topomap(bands={"alpha 8–13 Hz\nV1/V2 ×4": (8, 13)}, axes=axes[2], show=False)
    out = ARTIFACTS / "eeg_jansen_rit_76_alpha_topomap.png"
    fig.savefig(out, dpi=80)
    plt.close(fig)
    assert out.stat().st_size > 10_000
