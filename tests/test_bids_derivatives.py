"""Out: simulations, metrics, twins and simulated EEG as BIDS-derivatives that validate."""
import json
import warnings

import mne
import numpy as np
import pytest
import xarray as xr

from neurotwin_dash.io import OutputExistsError
from neurotwin_dash.io import derivatives as D


def _simulation():
    """A Dataset shaped like simulate()'s result (SIM_API.md)."""
    rng = np.random.default_rng(0)
    ds = xr.Dataset(
        {"v_pyr": (("batch", "time", "region"), rng.normal(size=(2, 500, 4))),
         "diverged": (("batch",), np.array([False, False]))},
        coords={"batch": [0, 1], "time": np.arange(500) / 1000.0, "region": ["lV1", "rV1", "lM1", "rM1"],
                "coupling": ("batch", [0.0, 5.0])},
        attrs={"model": "jansen_rit", "dt_ms": 0.1, "sample_rate_hz": 1000.0, "seed": 7, "duration_s": 0.5,
               "transient_s": 0.0, "method": "euler", "connectome": "tvb76",
               "connectome_content_hash": "ab12cd", "params": json.dumps({"C": 135.0, "coupling": [0.0, 5.0]}),
               "version": "0.1.0"})
    ds["v_pyr"].attrs["units"] = "mV"
    return ds


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A raw BIDS EEG dataset (mne-bids) with neurotwin derivatives beside it."""
    from mne_bids import BIDSPath, write_raw_bids
    root = tmp_path_factory.mktemp("bids")
    raw = mne.io.RawArray(np.random.default_rng(1).normal(size=(3, 2500)) * 1e-5,
                          mne.create_info(["Fz", "Cz", "Pz"], 250.0, "eeg"), verbose=False)
    raw.info["line_freq"] = 50.0
    bp = BIDSPath(subject="01", task="rest", root=root, datatype="eeg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_raw_bids(raw, bp, format="BrainVision", allow_preload=True, verbose=False)
    raw_file = next(root.rglob("*_eeg.vhdr"))
    deriv = D.init_derivatives(root / "derivatives" / "neurotwin-dash", raw_root=root)
    sim = _simulation()
    paths = {
        "sim": D.write_simulation(deriv, sim, subject="01", sources=[raw_file]),
        "metrics": D.write_metrics(deriv, xr.Dataset({"alpha_peak_hz": ("region", [10.0, 10.5, 9.5, 11.0])},
                                                     coords={"region": sim.region.values}),
                                   subject="01", desc="spectral", parameters={"window_s": 2.0}),
        "twin": D.write_twin(deriv, {"model": "jansen_rit", "params": {"coupling": 2.5}, "score": 0.61},
                             subject="01", desc="fitted", sources=[raw_file]),
        "eeg": D.write_simulated_eeg(deriv, raw, subject="01", desc="twin", parameters={"coupling": 2.5}),
    }
    return root, deriv, sim, raw, paths


def test_written_derivatives_validate_against_the_bids_schema_and_provenance_rules(dataset):
    _, deriv, *_ = dataset
    rep = D.validate_derivatives(deriv)
    assert rep.valid, str(rep)
    assert rep.bids_version.startswith("1.")
    # the simulated EEG files are ones the BIDS schema itself defines for derivatives
    assert {"sub-01/eeg/sub-01_task-rest_desc-twin_eeg.vhdr", "sub-01/eeg/sub-01_task-rest_desc-twin_eeg.json",
            "sub-01/eeg/sub-01_task-rest_desc-twin_channels.tsv"} <= set(rep.checked)
    assert "sub-01/eeg/sub-01_task-rest_desc-jansenrit_timeseries.nc" in rep.ignored
    desc = json.loads((deriv / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == D.PIPELINE
    assert desc["DatasetLinks"] == {"raw": "../.."}
    rows = (deriv / "descriptions.tsv").read_text().splitlines()
    assert rows[0] == "desc_id\tdescription" and {r.split("\t")[0] for r in rows[1:]} == \
        {"jansenrit", "spectral", "fitted", "twin"}


def test_simulation_reads_back_identical_with_parameters_and_provenance(dataset):
    _, deriv, sim, _, paths = dataset
    back = D.read_derivative(paths["sim"])
    xr.testing.assert_identical(back.drop_attrs(), sim.drop_attrs())
    side = json.loads(paths["sim"].with_suffix(".json").read_text())
    assert side["Parameters"]["C"] == 135.0 and side["Parameters"]["seed"] == 7
    assert side["Parameters"]["dt_ms"] == 0.1
    assert side["Provenance"]["connectome"] == "tvb76"
    assert side["Provenance"]["connectome_content_hash"] == "ab12cd"
    assert side["Sources"] == ["bids:raw:sub-01/eeg/sub-01_task-rest_eeg.vhdr"]
    assert side["Variables"]["v_pyr"] == {"dims": ["batch", "time", "region"], "units": "mV"}
    twin = D.read_derivative(paths["twin"])
    assert twin["Twin"]["params"]["coupling"] == 2.5 and twin["GeneratedBy"][0]["Name"] == D.PIPELINE
    raw_back = D.read_derivative(paths["eeg"])
    np.testing.assert_allclose(raw_back.get_data(), dataset[3].get_data(), rtol=1e-6, atol=1e-12)
    eeg_side = json.loads(paths["eeg"].with_suffix(".json").read_text())
    assert eeg_side["SamplingFrequency"] == 250.0 and eeg_side["TaskName"] == "rest"


def test_nothing_written_is_ever_overwritten_by_a_second_write(dataset):
    _, deriv, sim, raw, paths = dataset
    before = {p: p.read_bytes() for p in deriv.rglob("*") if p.is_file()}
    changed = sim.assign(v_pyr=sim["v_pyr"] * 2)
    with pytest.raises(OutputExistsError, match=r"desc-jansenrit_timeseries\.nc exists already"):
        D.write_simulation(deriv, changed, subject="01")
    with pytest.raises(OutputExistsError, match=r"desc-twin_eeg\.vhdr exists already"):
        D.write_simulated_eeg(deriv, raw, subject="01", desc="twin")
    with pytest.raises(OutputExistsError, match=r"desc-fitted_twin\.json exists already"):
        D.write_twin(deriv, {"model": "x"}, subject="01", desc="fitted")
    after = {p: p.read_bytes() for p in deriv.rglob("*") if p.is_file()}
    assert after == before
    # a new desc adds a file next to the old ones; the old ones stay
    table = deriv / "descriptions.tsv"
    new = D.write_simulation(deriv, changed, subject="01", desc="jansenritK2")
    assert new.exists() and all(p.read_bytes() == b for p, b in before.items() if p != table)
    # descriptions.tsv only gains the new desc; its earlier rows are kept as they were
    assert table.read_text().startswith(before[table].decode())
    assert table.read_text().splitlines()[-1].startswith("jansenritK2\t")
    assert D.validate_derivatives(deriv).valid


def test_validator_catches_broken_derivatives(tmp_path):
    deriv = D.init_derivatives(tmp_path / "d")
    D.write_metrics(deriv, xr.Dataset({"x": ("region", [1.0])}, coords={"region": ["a"]}), subject="01", desc="m")
    assert D.validate_derivatives(deriv).valid
    desc = json.loads((deriv / "dataset_description.json").read_text())
    del desc["GeneratedBy"]
    (deriv / "dataset_description.json").write_text(json.dumps(desc))
    (deriv / "sub-01" / "eeg" / "notes_about_run.txt").write_text("hello")
    (deriv / "sub-01" / "eeg" / "sub-02_task-rest_desc-m_twin.json").write_text("{}")
    (deriv / "sub-01" / "eeg" / "sub-01_task-rest_desc-m_metrics.json").unlink()
    (deriv / "sub-01" / "eeg" / "sub-01_task-rest_desc-unknown_eeg.json").write_text(json.dumps({"TaskName": "rest"}))
    rep = D.validate_derivatives(deriv)
    text = "\n".join(rep.errors)
    assert not rep.valid
    assert "required field 'GeneratedBy' missing" in text
    assert "notes_about_run.txt: file name matches no BIDS" in text
    assert "in folder sub-01 but named sub-02" in text
    assert "desc-m_metrics.nc: no JSON sidecar" in text
    assert "desc-unknown is not described in descriptions.tsv" in text
    assert "required EEG sidecar field 'EEGReference' missing" in text
    with pytest.raises(D.DerivativeError, match="error"):
        D.validate_derivatives(deriv, raise_on_error=True)


def test_derivatives_refuse_a_raw_dataset_and_bad_entity_labels(tmp_path, dataset):
    root, deriv, sim, *_ = dataset
    with pytest.raises(D.DerivativeError, match="DatasetType is 'raw'.*refusing"):
        D.write_simulation(root, sim, subject="01")
    with pytest.raises(D.DerivativeError, match=r"entity 'sub' = 'sub_01'.*letters and digits"):
        D.write_simulation(tmp_path / "x", sim, subject="sub_01")
    with pytest.raises(D.DerivativeError, match=r"entity 'desc' = 'my-model'"):
        D.write_simulation(tmp_path / "x", sim, subject="01", desc="my-model")


def test_simulated_twin_eeg_beside_the_subject_imports_like_the_simulation(tmp_path):
    """simulate → observe.eeg → BIDS derivative (BrainVision) → import_eeg: same targets."""
    from neurotwin_dash.io import eeg_in
    from neurotwin_dash.observe.eeg import simulated_eeg
    from neurotwin_dash.simulate import simulate
    res = simulate("jansen_rit", "tvb76", duration_s=6.0, params={"coupling": 1.0}, seed=3,
                   sample_rate_hz=250.0, transient_s=1.0)
    raw = simulated_eeg(res, montage="standard_1020")
    deriv = tmp_path / "derivatives" / "neurotwin-dash"
    sim_path = D.write_simulation(deriv, res, subject="01")
    eeg_path = D.write_simulated_eeg(deriv, raw, subject="01", desc="jansenrit",
                                     parameters={"coupling": 1.0}, sources=[sim_path])
    assert D.validate_derivatives(deriv).valid
    direct = eeg_in.eeg_targets(raw, fc_bands=("alpha",))
    via_bids = eeg_in.import_eeg(eeg_path, fc_bands=("alpha",))
    np.testing.assert_allclose(via_bids["band_power"].values, direct["band_power"].values, rtol=1e-4)
    np.testing.assert_allclose(via_bids["alpha_peak_hz"].values, direct["alpha_peak_hz"].values, atol=1e-3)
    assert 8.0 < float(via_bids["alpha_peak_hz_mean"]) < 13.0   # Jansen–Rit alpha (docs/science.md §1)
    side = json.loads(sim_path.with_suffix(".json").read_text())
    assert side["Provenance"]["connectome_hash"] == res.attrs["connectome_hash"]
    assert side["Parameters"]["coupling"] == 1.0 and side["Parameters"]["seed"] == 3
