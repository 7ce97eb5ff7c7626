import json

import numpy as np
import pytest

from neurotwin_dash.stimulation.montage import Limits, Montage, MontageError, layout_positions


def test_return_electrode_takes_minus_the_sum_of_the_others():
    m = Montage({"F3": 1.5, "c3": 0.5}, return_electrode="FP2")
    assert m.currents_mA == {"F3": 1.5, "C3": 0.5, "Fp2": -2.0}
    assert m.total_injected_mA == pytest.approx(2.0)
    assert m.active_electrodes == ["F3", "C3", "Fp2"]


def test_currents_must_sum_to_zero_without_return_electrode():
    with pytest.raises(MontageError, match=r"sum to \+0.5 mA.*zero"):
        Montage({"F3": 1.0, "F4": -0.5})


def test_per_electrode_limit_names_electrode_and_limit():
    with pytest.raises(MontageError, match=r"electrode 'F3'.*2.5 mA.*max_current_mA = 2 mA"):
        Montage({"F3": 2.5, "F4": -2.5})
    # the return electrode is named as such when it breaks the limit
    with pytest.raises(MontageError, match=r"'Cz' \(return electrode\).*3 mA.*max_current_mA"):
        Montage({"F3": 1.5, "F4": 1.5}, return_electrode="Cz")


def test_total_injected_limit_names_anodes_and_limit():
    currents = {"F3": 1.5, "F4": 1.5, "P3": 1.5, "P4": -1.5, "O1": -1.5, "O2": -1.5}
    with pytest.raises(MontageError, match=r"total injected current 4.5 mA.*F3=1.5.*max_total_mA = 4 mA"):
        Montage(currents)
    # a larger configurable limit accepts it
    assert Montage(currents, limits=Limits(max_total_mA=5.0)).total_injected_mA == pytest.approx(4.5)


def test_max_electrode_count_is_enforced_and_configurable():
    names = ["F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "Fz"]
    currents = {n: 0.2 for n in names[:-1]}
    with pytest.raises(MontageError, match=r"9 active electrodes.*max_electrodes = 8"):
        Montage(currents, return_electrode="Fz")
    m = Montage(currents, return_electrode="Fz", limits=Limits(max_electrodes=9))
    assert len(m.active_electrodes) == 9
    with pytest.raises(MontageError, match="max_electrodes = 4"):
        m.with_limits(max_electrodes=4)


def test_zero_current_electrodes_do_not_count_as_active():
    m = Montage({"F3": 1.0, "F4": -1.0, "Cz": 0.0, "Pz": 0.0})
    assert m.active_electrodes == ["F3", "F4"]


def test_unknown_electrode_and_single_active_electrode_are_rejected():
    with pytest.raises(MontageError, match=r"electrode 'XX9' is not in layout 'standard_1005'"):
        Montage({"XX9": 1.0}, return_electrode="Cz")
    # all-zero (sham) montages are allowed: nothing is active
    assert Montage({"F3": 0.0, "Cz": 0.0}).active_electrodes == []
    with pytest.raises(MontageError, match="must be a positive"):
        Limits(max_current_mA=-1)


def test_json_round_trip_keeps_currents_layout_and_limits(tmp_path):
    m = Montage({"AF3": 1.25, "PO8": -0.75, "Cz": -0.5}, limits=Limits(max_current_mA=1.5, max_electrodes=6))
    path = m.save(tmp_path / "m.json", metrics={"target_En_V_m": 0.2})
    assert json.loads(path.read_text())["metrics"]["target_En_V_m"] == 0.2
    back = Montage.load(path)
    assert back.currents_mA == m.currents_mA
    assert back.limits == m.limits and back.layout == "standard_1005"
    path.write_text(json.dumps({"currents_mA": {"F3": 1}, "return_electrode": "F4", "colour": 1}))
    with pytest.raises(MontageError, match="unknown fields.*colour"):
        Montage.load(path)


def test_reversed_flips_every_current_and_positions_are_on_the_scalp():
    m = Montage.bipolar("T7", "T8", 1.5)
    r = m.reversed()
    assert r.currents_mA == {"T7": -1.5, "T8": 1.5}
    pos = m.positions()
    assert pos.dims == ("electrode", "axis")
    # T7 on the left, T8 on the right, both ~8-9 cm from the origin
    assert pos.sel(electrode="T7", axis="x") < -0.07 and pos.sel(electrode="T8", axis="x") > 0.07
    assert len(layout_positions("standard_1005")) == 339  # T3-T6 aliases dropped
    cur = m.currents(["Cz", "T7", "T8"])
    np.testing.assert_allclose(cur.values, [0.0, 1.5, -1.5])
