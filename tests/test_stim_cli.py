import json

import numpy as np

from neurotwin_dash.cli import main
from neurotwin_dash.stimulation.montage import Montage


def test_optimize_montage_cli_writes_a_valid_montage(tmp_path, capsys):
    out = tmp_path / "montage.json"
    rc = main(["optimize-montage", "--target", "lPFCDL", "--max-electrodes", "8", "--out", str(out)])
    assert rc == 0
    m = Montage.load(out)
    cur = np.array(list(m.currents_mA.values()))
    assert len(m.active_electrodes) <= 8 and abs(cur.sum()) < 1e-9 and np.abs(cur).max() <= 2.0
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["target_En"] > metrics["bipolar_reference"]["target_En"]
    assert metrics["offtarget_Emag"] < metrics["bipolar_reference"]["offtarget_Emag"]
    assert "target E_n" in capsys.readouterr().out


def test_optimize_montage_cli_reports_bad_target(tmp_path, capsys):
    rc = main(["optimize-montage", "--target", "nowhere", "--out", str(tmp_path / "m.json")])
    assert rc == 2
    assert "target regions ['nowhere']" in capsys.readouterr().err
