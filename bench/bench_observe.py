"""Benchmark of the observers and the analysis library (prints figures; not a test).

1. 76 regions × 60 s at 1 kHz (a Jansen–Rit tvb76 simulation, made once, not timed)
   → EEG on 64 BioSemi channels (lead field, average reference, mne.io.RawArray)
   → Welch spectra of sensors and regions → band powers → FC (Pearson) + alpha PLV.
   Timed with a cold lead-field cache (MNE forward computed) and warm (cached).
   Target: < 2 s warm.
2. BOLD (Balloon–Windkessel) for 76 regions × 10 min, drive at 1 kHz, integrated at 0.1 ms,
   sampled at TR 0.72 s. First call (numba compile or cache load) and second call.
   Target: < 5 s.

Run: ``.venv/bin/python bench/bench_observe.py``
"""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import xarray as xr


def _region_signals(seconds=60.0, fs=1000.0):
    try:
        from neurotwin_dash.simulate import simulate
        t0 = time.perf_counter()
        res = simulate("jansen_rit", "tvb76", duration_s=seconds + 1.0, sample_rate_hz=fs, seed=0,
                       transient_s=1.0)
        print(f"  (Jansen–Rit tvb76 {seconds:g} s at dt 0.1 ms, sampled {fs:g} Hz: "
              f"{time.perf_counter() - t0:.1f} s — not part of the figures)")
        return res["v_pyr"]
    except ImportError:
        from neurotwin_dash import catalog
        labels = catalog.load("tvb76").labels
        t = np.arange(int(seconds * fs)) / fs
        x = np.random.default_rng(0).standard_normal((1, t.size, len(labels)))
        return xr.DataArray(x, dims=("batch", "time", "region"),
                            coords={"batch": [0], "time": t, "region": labels})


def _eeg_pipeline(v):
    from neurotwin_dash import analysis as an
    from neurotwin_dash.observe import eeg
    times = {}
    t0 = time.perf_counter()
    x = eeg.region_to_sensor(v.isel(batch=0), "tvb76", "biosemi64")
    raw = eeg.simulated_raw(x, "biosemi64")
    times["EEG 64 ch + RawArray"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    psd_s = an.welch(x, fmax=80)
    psd_r = an.welch(v.isel(batch=0), fmax=80)
    times["Welch (64 sensors + 76 regions)"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    bp_s = an.band_power(psd_s)
    bp_r = an.band_power(psd_r)
    pk = an.peak_frequency(psd_r, "alpha")
    times["band powers + alpha peak"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    fc = an.fc_pearson(v.isel(batch=0))
    fc_s = an.fc_pearson(x)
    times["FC (regions + sensors)"] = time.perf_counter() - t3
    t4 = time.perf_counter()
    plv = an.plv(v.isel(batch=0), "alpha")
    times["alpha PLV 76×76 (extra)"] = time.perf_counter() - t4
    total = sum(v_ for k, v_ in times.items() if "extra" not in k)
    return total, times, (raw, bp_s, bp_r, pk, fc, fc_s, plv)


def main():
    print("== EEG + analysis: 76 regions × 60 s at 1 kHz → 64 channels ==")
    v = _region_signals()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["NEUROTWIN_CACHE"] = tmp
        from neurotwin_dash.observe import eeg
        eeg._LF_MEMO.clear()
        cold, times_cold, _ = _eeg_pipeline(v)
        print(f"cold (MNE forward computed): {cold:.2f} s")
        for k, t in times_cold.items():
            print(f"    {k:34s} {t:6.3f} s")
        eeg._LF_MEMO.clear()        # disk cache only, as in a new process
        disk, _, _ = _eeg_pipeline(v)
        print(f"lead field from disk cache: {disk:.2f} s")
        warm, times_warm, out = _eeg_pipeline(v)
        print(f"warm (in-memory lead field): {warm:.2f} s   target < 2 s: {'OK' if warm < 2 else 'MISSED'}")
        for k, t in times_warm.items():
            print(f"    {k:34s} {t:6.3f} s")
        _, _, _, pk, *_ = out
        print(f"    median alpha peak of the regions: {float(pk.median()):.2f} Hz")

    print("\n== BOLD: 76 regions × 10 min, drive 1 kHz, dt 0.1 ms, TR 0.72 s ==")
    from neurotwin_dash.observe import bold
    fs = 1000.0
    t = np.arange(int(600 * fs)) / fs
    z = xr.DataArray(np.random.default_rng(1).standard_normal((t.size, 76)), dims=("time", "region"),
                     coords={"time": t, "region": [f"r{i}" for i in range(76)]})
    for label in ("first call (compile / numba cache load)", "second call"):
        t0 = time.perf_counter()
        b = bold.balloon_windkessel(z, tr_s=0.72, dt_ms=0.1)
        dt = time.perf_counter() - t0
        print(f"{label:42s} {dt:6.2f} s   ({b.sizes['time']} frames)")
    print(f"target < 5 s: {'OK' if dt < 5 else 'MISSED'}; "
          f"{76 * 600 / 1e-4 / dt / 1e6:.0f} M region-steps/s")


if __name__ == "__main__":
    main()
