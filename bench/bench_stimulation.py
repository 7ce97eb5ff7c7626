"""Stimulation benchmark: field matrices, montage fields, the Stimweaver QP, a tACS dose run.

Prints wall-clock times and the field figures of merit reported in the README (Stimulation).
Run: ``.venv/bin/python bench/bench_stimulation.py``.
"""
import os
import tempfile
import time

import numpy as np

os.environ.setdefault("NEUROTWIN_CACHE", tempfile.mkdtemp(prefix="nt_bench_cache_"))

from neurotwin_dash.stimulation import efield  # noqa: E402
from neurotwin_dash.stimulation.coupling import tes_drives  # noqa: E402
from neurotwin_dash.stimulation.montage import Montage  # noqa: E402
from neurotwin_dash.stimulation.optimize import Target, optimize_montage  # noqa: E402
from neurotwin_dash.stimulation.waveforms import TACS  # noqa: E402


def timed(fn, *a, repeat=1, **kw):
    t = time.perf_counter()
    for _ in range(repeat):
        out = fn(*a, **kw)
    return out, (time.perf_counter() - t) / repeat


def main():
    for layout in ("standard_1020", "standard_1005"):
        f, dt = timed(efield.electrode_fields, "tvb76", layout, cache=False)
        print(f"field matrix tvb76 x {layout} ({f.sizes['electrode']} electrodes), computed: {dt:.2f} s"
              + (" (includes importing MNE)" if layout == "standard_1020" else ""))
    _, dt = timed(efield.electrode_fields, "tvb76", "standard_1020")
    fields, dt2 = timed(efield.electrode_fields, "tvb76", "standard_1020")
    print(f"field matrix with caches: first {dt * 1000:.0f} ms (disk), then {dt2 * 1e6:.0f} us (in process)")
    m = Montage({"F3": 1.0, "F4": 0.5, "P3": -0.75, "P4": -0.75})
    _, dt = timed(efield.montage_field, m, fields, repeat=200)
    print(f"montage field (4 electrodes, 76 regions): {dt * 1e6:.0f} us")
    print("bipolar 1 mA fields (sphere 0.33/1.0/0.004/0.33 S/m): max / median |E| V/m")
    for a, b in (("T7", "T8"), ("F3", "F4"), ("O1", "Fz"), ("F3", "Fp2")):
        mag = efield.montage_field(Montage.bipolar(a, b, 1.0), fields)["E_mag"].values
        print(f"  {a}-{b}: {mag.max():.3f} / {np.median(mag):.3f}")
    print("Stimweaver QP, 8 electrodes of 69 candidates, 2 mA / 4 mA limits:")
    for target in ("lPFCDL", "rM1", "lV1"):
        res, dt = timed(optimize_montage, Target([target]), fields)
        bip = efield.bipolar_over([target], fields, 2.0)
        s = efield.field_summary(efield.montage_field(bip, fields), [target])
        r = res.metrics
        print(f"  {target}: {dt:.2f} s, {len(res.history)} solves; target E_n {r['target_En']:.3f} V/m, "
              f"off-target |E| {r['offtarget_Emag']:.3f}, focality {r['focality']:.1f}  |  bipolar "
              f"{'-'.join(bip.active_electrodes)}: {s['target_En']:.3f}, {s['offtarget_Emag']:.3f}, "
              f"{s['focality']:.1f}")
    from neurotwin_dash.simulate import simulate
    (d,) = tes_drives(Montage.bipolar("T7", "T8", 2.0), TACS(40.0), fields=fields, dose=[0, 0.25, 0.5, 0.75, 1.0])
    _, dt = timed(simulate, "jansen_rit", "tvb76", duration_s=1.0, params={"coupling": np.full(5, 2.0)}, drive=d)
    _, dt = timed(simulate, "jansen_rit", "tvb76", duration_s=10.0, params={"coupling": np.full(5, 2.0)}, drive=d)
    print(f"40 Hz tACS dose sweep, JR x tvb76, 5 doses x 10 s at dt 0.1 ms (one batched run): {dt:.1f} s")


if __name__ == "__main__":
    main()
