"""Stimulation benchmark: head models, field matrices, montage fields, the Stimweaver QP, a tACS dose run.

Prints wall-clock times (template BEM build first time / cached; lead fields for both heads,
computed / cached) and the field figures of merit reported in the README (Stimulation), including
the sphere vs template-BEM table. Runs in a fresh cache folder unless ``NEUROTWIN_CACHE`` is set.
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


HEADS = ("sphere", "template_bem")
#: the montages of the README's head-model table (anode, cathode, mA)
TABLE_MONTAGES = (("T7", "T8", 1.0), ("F3", "F4", 1.0), ("O1", "Fz", 1.0), ("F3", "Fp2", 1.0),
                  ("F1", "O2", 1.0), ("POz", "Fp2", 1.0))


def head_table(fields_by_head):
    """Markdown rows: per montage and head, max / median |E| and |E_n| per mA, strongest regions."""
    print("| montage (1 mA) | head | max abs E | median abs E | max abs E_n | median abs E_n | strongest regions |")
    print("|---|---|---|---|---|---|---|")
    for a, b, cur in TABLE_MONTAGES:
        for head, fields in fields_by_head.items():
            if not {a, b} <= set(fields["electrode"].values):
                continue
            mf = efield.montage_field(Montage.bipolar(a, b, cur), fields)
            mag, en = mf["E_mag"].values, np.abs(mf["E_n"].values)
            top = ", ".join(str(r) for r in mf["region"].values[np.argsort(mag)[::-1][:3]])
            print(f"| {a}–{b} | {head} | {mag.max():.3f} | {np.median(mag):.3f} | {en.max():.3f} | "
                  f"{np.median(en):.3f} | {top} |")


def main():
    from neurotwin_dash.observe import forward, heads
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    for sig in ("eeg", "tes"):
        _, dt = timed(heads.template_bem, heads.CONDUCTIVITIES[("bem", sig)])
        _, dt2 = timed(heads.template_bem, heads.CONDUCTIVITIES[("bem", sig)])
        print(f"template BEM ({sig} conductivities): first build {dt:.1f} s, from the disk cache {dt2:.2f} s")
    for head in HEADS:
        f, dt = timed(forward.forward_model, "tvb76", "standard_1005", head=head, cache=False)
        _, dt2 = timed(forward.forward_model, "tvb76", "standard_1005", head=head)
        _, dt3 = timed(forward.forward_model, "tvb76", "standard_1005", head=head)
        print(f"lead field {head}: {f.sizes['sensor']} electrodes x {f.sizes['region']} regions, computed "
              f"{dt:.2f} s, from the disk cache {dt3:.2f} s; electrodes moved onto the scalp: median "
              f"{float(f['electrode_moved_mm'].median()):.1f} mm, max {float(f['electrode_moved_mm'].max()):.1f} mm")
    for layout in ("standard_1020", "standard_1005"):
        f, dt = timed(efield.electrode_fields, "tvb76", layout, cache=False)
        print(f"field matrix tvb76 x {layout} ({f.sizes['electrode']} electrodes, sphere), computed: {dt:.2f} s")
    _, dt = timed(efield.electrode_fields, "tvb76", "standard_1020")
    fields, dt2 = timed(efield.electrode_fields, "tvb76", "standard_1020")
    print(f"field matrix with caches: first {dt * 1000:.0f} ms (disk), then {dt2 * 1e6:.0f} us (in process)")
    m = Montage({"F3": 1.0, "F4": 0.5, "P3": -0.75, "P4": -0.75})
    _, dt = timed(efield.montage_field, m, fields, repeat=200)
    print(f"montage field (4 electrodes, 76 regions): {dt * 1e6:.0f} us")
    by_head = {"sphere": efield.electrode_fields("tvb76", "standard_1005"),
               "template_bem": efield.electrode_fields("tvb76", "standard_1005", head="template_bem")}
    print("bipolar fields, tES conductivities (sphere 0.33/1.65/0.01/0.43, BEM 0.33/0.01/0.43 S/m), V/m per mA:")
    head_table(by_head)
    eeg = {h: efield.electrode_fields("tvb76", "standard_1005", head=h, conductivity="eeg") for h in HEADS}
    print("same with MNE's EEG conductivities (sphere 0.33/1.0/0.004/0.33, BEM 0.33/0.0042/0.33):")
    head_table(eeg)
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
