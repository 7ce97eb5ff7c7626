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


def test_simulate_cli_applies_a_montage_and_waveform(tmp_path):
    import xarray as xr
    mpath = tmp_path / "m.json"
    Montage.bipolar("T7", "T8", 2.0).save(mpath)
    out_stim, out_sham = tmp_path / "stim.nc", tmp_path / "sham.nc"
    common = ["simulate", "--duration", "1.5", "--transient", "0.5", "--set", "coupling=2", "--seed", "3",
              "--no-progress"]
    assert main(common + ["--montage", str(mpath), "--waveform", "tacs:40Hz", "--stim-lambda", "0.3",
                          "--out", str(out_stim)]) == 0
    assert main(common + ["--out", str(out_sham)]) == 0
    stim, sham = xr.open_dataset(out_stim), xr.open_dataset(out_sham)
    assert json.loads(stim.attrs["stim_montage"])["currents_mA"] == {"T7": 2.0, "T8": -2.0}
    assert stim.attrs["stim_waveform"].startswith("tacs:40Hz") and stim.attrs["stim_lambda_mV_per_V_m"] == 0.3
    # same seed: the difference is the stimulation's effect — a 40 Hz response (plus a slow drift of
    # the alpha rhythm's phase, which a perturbed limit cycle accumulates)
    d = (stim["v_pyr"] - sham["v_pyr"]).isel(batch=0).values
    spec = np.abs(np.fft.rfft(d, axis=0)).mean(axis=1)
    freqs = np.fft.rfftfreq(d.shape[0], 1e-3)
    band = (freqs >= 20) & (freqs <= 100)
    assert freqs[band][np.argmax(spec[band])] == 40.0


def test_simulate_cli_rejects_a_waveform_without_montage(tmp_path, capsys):
    assert main(["simulate", "--duration", "0.5", "--waveform", "tacs:40Hz", "--out", str(tmp_path / "x.nc"),
                 "--no-progress"]) == 2
    assert "--waveform needs --montage" in capsys.readouterr().err
