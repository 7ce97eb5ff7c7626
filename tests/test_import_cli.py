"""`neurotwin import-eeg`, `import-fmri` and `validate-derivatives` from the command line."""
import json

import mne
import nibabel as nib
import numpy as np
import xarray as xr

from neurotwin_dash.cli import main


def _fif(tmp_path):
    t = np.arange(2500) / 250.0
    rng = np.random.default_rng(0)
    data = rng.normal(size=(4, t.size)) * 1e-6
    data[2:] += 10e-6 * np.sin(2 * np.pi * 9.5 * t)
    raw = mne.io.RawArray(data, mne.create_info(["Fz", "Cz", "O1", "O2"], 250.0, "eeg"), verbose=False)
    path = tmp_path / "rec_raw.fif"
    raw.save(path, verbose=False)
    return path


def test_import_eeg_writes_targets_and_refuses_to_overwrite(tmp_path, capsys):
    rec = _fif(tmp_path)
    out = tmp_path / "targets.nc"
    assert main(["import-eeg", str(rec), "--out", str(out), "--fc-bands", "alpha"]) == 0
    assert "alpha peak 9.50 Hz" in capsys.readouterr().out
    ds = xr.load_dataset(out)
    assert abs(float(ds["alpha_peak_hz"].sel(sensor="O1")) - 9.5) < 0.1
    before = out.read_bytes()
    assert main(["import-eeg", str(rec), "--out", str(out), "--channels", "O1,O2"]) == 2
    err = capsys.readouterr().err
    assert "neurotwin import-eeg: error: output file" in err and "--overwrite" in err
    assert out.read_bytes() == before
    assert main(["import-eeg", str(rec), "--out", str(tmp_path / "t2.nc"), "--channels", "O1,T7"]) == 2
    assert "missing channel(s) ['T7'] (field 'channels')" in capsys.readouterr().err
    assert main(["import-eeg", str(rec), "--out", str(out), "--channels", "O1,O2", "--overwrite"]) == 0
    assert list(xr.load_dataset(out)["sensor"].values) == ["O1", "O2"]


def test_import_fmri_writes_region_series_and_fc(tmp_path, capsys):
    lab = np.zeros((10, 10, 10), np.int16)
    lab[1:4, 1:4, 1:4], lab[6:9, 6:9, 6:9] = 1, 2
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    sig = np.random.default_rng(2).normal(size=(30, 2))
    data = np.zeros(lab.shape + (30,))
    data[lab == 1], data[lab == 2] = sig[:, 0], sig[:, 1]
    img = nib.Nifti1Image(data, aff)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = 1.5
    nib.save(img, tmp_path / "bold.nii.gz")
    nib.save(nib.Nifti1Image(lab, aff), tmp_path / "atlas.nii.gz")
    (tmp_path / "names.txt").write_text("left\nright\n")
    out = tmp_path / "fc.nc"
    argv = ["import-fmri", str(tmp_path / "bold.nii.gz"), "--atlas", str(tmp_path / "atlas.nii.gz"),
            "--atlas-labels", str(tmp_path / "names.txt"), "--out", str(out)]
    assert main(argv) == 0
    assert "2 regions x 30 volumes (TR 1.5 s)" in capsys.readouterr().out
    ds = xr.load_dataset(out)
    np.testing.assert_allclose(ds["fc"].sel(region="left", region2="right"), np.corrcoef(sig.T)[0, 1])
    assert main(argv + ["--tr", "2.0", "--overwrite"]) == 2
    assert "wrong TR" in capsys.readouterr().err
    np.testing.assert_allclose(xr.load_dataset(out)["bold"].values, ds["bold"].values)


def test_validate_derivatives_exit_code_follows_the_report(tmp_path, capsys):
    from neurotwin_dash.io import derivatives as D
    deriv = D.init_derivatives(tmp_path / "d")
    D.write_twin(deriv, {"model": "jansen_rit"}, subject="01", desc="fit")
    assert main(["validate-derivatives", str(deriv)]) == 0
    assert "valid" in capsys.readouterr().out
    meta = json.loads((deriv / "dataset_description.json").read_text())
    meta["DatasetType"] = "raw"
    (deriv / "dataset_description.json").write_text(json.dumps(meta))
    assert main(["validate-derivatives", str(deriv)]) == 1
    assert "needs 'derivative'" in capsys.readouterr().out


def test_export_bids_puts_a_simulation_file_into_valid_derivatives(tmp_path, capsys):
    sim = xr.Dataset({"v_pyr": (("batch", "time", "region"), np.zeros((1, 10, 2)) + 1.5)},
                     coords={"batch": [0], "time": np.arange(10) / 1000, "region": ["a", "b"]},
                     attrs={"model": "wendling", "seed": 4, "params": json.dumps({"G": 20.0})})
    sim.to_netcdf(tmp_path / "run.nc")
    root = tmp_path / "derivatives" / "neurotwin-dash"
    argv = ["export-bids", str(tmp_path / "run.nc"), "--root", str(root), "--subject", "07"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "sub-07_task-rest_desc-wendling_timeseries.nc" in out and "valid" in out
    side = json.loads((root / "sub-07" / "eeg" / "sub-07_task-rest_desc-wendling_timeseries.json").read_text())
    assert side["Parameters"]["G"] == 20.0 and side["Parameters"]["seed"] == 4
    assert main(argv) == 2 and "exists already" in capsys.readouterr().err
