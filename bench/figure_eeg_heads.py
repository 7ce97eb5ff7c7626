"""EEG alpha topography of homogeneous Jansen–Rit on tvb76 seen through both heads.

Writes ``bench/figures/eeg_alpha_heads.png`` and prints the numbers the README quotes: the
occipital/frontal alpha ratio per head and the correlation of the two topographies over
sensors. Run: ``.venv/bin/python bench/figure_eeg_heads.py`` (about a minute with the template
BEM cached; the first run builds it).
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mne  # noqa: E402
import numpy as np  # noqa: E402

from neurotwin_dash.analysis import spectra  # noqa: E402
from neurotwin_dash.observe import eeg, forward  # noqa: E402
from neurotwin_dash.simulate import simulate  # noqa: E402

OUT = Path(__file__).parent / "figures" / "eeg_alpha_heads.png"
MONTAGE = "standard_1020"
HEADS = ("sphere", "template_bem")


def main():
    res = simulate("jansen_rit", "tvb76", duration_s=20.0, transient_s=2.0, seed=0, sample_rate_hz=250.0)
    info = forward.montage_info(MONTAGE)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    maps = {}
    for ax, head in zip(axes, HEADS):
        x = eeg.region_to_sensor(res.isel(batch=0), "tvb76", MONTAGE, head=head)
        psd = spectra.welch(x, window_s=2.0)
        alpha = spectra.band_power(psd, {"alpha": spectra.BANDS["alpha"]}).sel(band="alpha")
        a = alpha.sel(sensor=list(info.ch_names)).values * 1e12          # µV²
        maps[head] = a
        names = np.array(info.ch_names)
        occ = a[np.char.startswith(names, "O")].mean()
        front = a[np.char.startswith(names, "F") & ~np.char.startswith(names, "FT")].mean()
        peak = float(spectra.peak_frequency(psd.mean("sensor"), "alpha"))
        print(f"{head}: alpha peak {peak:.2f} Hz, mean alpha power {a.mean():.3f} µV², occipital/frontal "
              f"{occ / front:.2f}, strongest {', '.join(names[np.argsort(a)[::-1][:4]])}")
        mne.viz.plot_topomap(a, info, axes=ax, show=False, cmap="viridis", contours=4, sphere="auto")
        ax.set_title(f"{head}\nalpha 8–13 Hz, µV² (max {a.max():.2f})", fontsize=10)
    r = np.corrcoef(maps["sphere"], maps["template_bem"])[0, 1]
    print(f"topography correlation over sensors sphere vs template_bem: r = {r:.2f}")
    fig.suptitle("Jansen–Rit on tvb76 (20 s): scalp alpha with two heads", fontsize=11)
    fig.tight_layout()
    OUT.parent.mkdir(exist_ok=True)
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
