"""Benchmark of bringing your own data in (prints figures; not a test).

1. EEG: a 64-channel, 5-minute, 500 Hz recording (synthetic, written once as EDF and as
   BrainVision, not timed) → read → targets (Welch spectra, band powers, alpha peak, gamma,
   AEC in alpha/beta/gamma).
2. fMRI: a 4D BOLD on the 2 mm MNI grid cropped to the brain box (79 × 95 × 79 voxels,
   200 volumes) with a 100-region label atlas → region time series + FC.
3. Derivatives: write a 76-region × 60 s × 4-member simulation and validate the folder.

Run: ``.venv/bin/python bench/bench_import.py``
"""
from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr


def _timed(label, fn):
    t0 = time.perf_counter()
    out = fn()
    print(f"  {label}: {time.perf_counter() - t0:.2f} s")
    return out


def bench_eeg(tmp: Path):
    import mne

    from neurotwin_dash.io import eeg_in
    montage = mne.channels.make_standard_montage("biosemi64")
    sf, dur = 500.0, 300.0
    rng = np.random.default_rng(0)
    t = np.arange(int(sf * dur)) / sf
    data = rng.normal(size=(64, t.size)) * 5e-6 + 10e-6 * np.sin(2 * np.pi * 10 * t)
    raw = mne.io.RawArray(data, mne.create_info(montage.ch_names, sf, "eeg"), verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mne.export.export_raw(tmp / "rec.edf", raw, fmt="edf", verbose=False)
        mne.export.export_raw(tmp / "rec.vhdr", raw, fmt="brainvision", verbose=False)
    print("EEG 64 ch × 300 s at 500 Hz:")
    for name in ("rec.edf", "rec.vhdr"):
        r = _timed(f"read {name}", lambda n=name: eeg_in.read_eeg(tmp / n))
        _timed(f"targets (spectra, bands, peaks, AEC ×3 bands) from {name}", lambda r=r: eeg_in.eeg_targets(r))


def bench_fmri(tmp: Path):
    import nibabel as nib

    from neurotwin_dash.io import fmri_in
    shape, n_vol = (79, 95, 79), 200
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = [-78, -112, -70]
    rng = np.random.default_rng(1)
    # 100 parcels: a 5 × 5 × 4 grid of boxes inside the volume
    lab = np.zeros(shape, np.int16)
    k = 1
    for i in range(5):
        for j in range(5):
            for m in range(4):
                lab[5 + 14 * i:15 + 14 * i, 5 + 17 * j:17 + 17 * j, 5 + 17 * m:17 + 17 * m] = k
                k += 1
    bold = rng.normal(size=shape + (n_vol,)).astype(np.float32)
    img = nib.Nifti1Image(bold, aff)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = 0.72
    nib.save(img, tmp / "bold.nii.gz")
    nib.save(nib.Nifti1Image(lab, aff), tmp / "atlas.nii.gz")
    print(f"fMRI {shape} × {n_vol} volumes, 100-region atlas:")
    _timed("import_fmri (load, parcellate, FC)", lambda: fmri_in.import_fmri(tmp / "bold.nii.gz", tmp / "atlas.nii.gz"))


def bench_derivatives(tmp: Path):
    from neurotwin_dash.io import derivatives as D
    sim = xr.Dataset({"v_pyr": (("batch", "time", "region"), np.random.default_rng(2).normal(size=(4, 60000, 76)))},
                     coords={"batch": np.arange(4), "time": np.arange(60000) / 1000.0,
                             "region": [f"r{i}" for i in range(76)]},
                     attrs={"model": "jansen_rit", "seed": 0, "params": "{}"})
    print("Derivatives (76 regions × 60 s × 4 members, 146 MB):")
    _timed("write_simulation", lambda: D.write_simulation(tmp / "deriv", sim, subject="01"))
    _timed("validate_derivatives", lambda: D.validate_derivatives(tmp / "deriv"))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        for fn in (bench_eeg, bench_fmri, bench_derivatives):
            sub = Path(d) / fn.__name__
            sub.mkdir()
            fn(sub)
