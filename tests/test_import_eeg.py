"""EEG in: simulated EEG → BIDS (mne-bids) / EDF / EEGLAB / FIF / NEDF → targets, exactly."""
import json
import warnings

import mne
import numpy as np
import pytest
import xarray as xr

from neurotwin_dash.io import DataImportError, OutputExistsError
from neurotwin_dash.io import eeg_in

SF = 250.0
DUR = 20.0
CH = ["Fp1", "Fp2", "F3", "F4", "Fz", "C3", "C4", "Cz", "P3", "P4", "Pz", "O1", "O2"]


def _simulated_raw(seed=0):
    """Occipital alpha (10 Hz) with a shared slow envelope in O1/O2, 40 Hz gamma at Cz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(DUR * SF)) / SF
    data = rng.normal(size=(len(CH), t.size)) * 2e-6
    envelope = 1.0 + 0.8 * np.sin(2 * np.pi * 0.2 * t + rng.uniform(0, 6))
    alpha = 20e-6 * envelope * np.sin(2 * np.pi * 10.0 * t)
    data[CH.index("O1")] += alpha
    data[CH.index("O2")] += 0.9 * alpha
    data[CH.index("Cz")] += 6e-6 * np.sin(2 * np.pi * 40.0 * t)
    raw = mne.io.RawArray(data, mne.create_info(CH, SF, "eeg"), verbose=False)
    raw.set_montage("colin27_1020")   # MNE's new name of standard_1020
    return raw


@pytest.fixture(scope="module")
def sim_raw():
    return _simulated_raw()


@pytest.fixture(scope="module")
def sim_targets(sim_raw):
    return eeg_in.eeg_targets(sim_raw)


@pytest.fixture(scope="module")
def bids_eeg(tmp_path_factory, sim_raw):
    from mne_bids import BIDSPath, write_raw_bids
    root = tmp_path_factory.mktemp("bids_eeg")
    bp = BIDSPath(subject="01", task="rest", root=root, datatype="eeg")
    raw = sim_raw.copy()
    raw.info["line_freq"] = 50.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_raw_bids(raw, bp, format="BrainVision", allow_preload=True, verbose=False)
    return root


def _assert_same_targets(a, b, rtol):
    for name in ("psd", "band_power", "relative_band_power", "gamma_power"):
        np.testing.assert_allclose(a[name].values, b[name].values, rtol=rtol, err_msg=name)
    np.testing.assert_allclose(a["alpha_peak_hz"].values, b["alpha_peak_hz"].values, atol=1e-3)
    np.testing.assert_allclose(a["fc"].values, b["fc"].values, atol=50 * rtol)
    assert list(a["sensor"].values) == list(b["sensor"].values)


def test_simulated_eeg_targets_have_the_known_answers(sim_raw):
    # as recorded (no re-reference), so the channels stay independent apart from what we put in
    t = eeg_in.eeg_targets(sim_raw, reference=None)
    assert t["alpha_peak_hz"].sel(sensor="O1") == pytest.approx(10.0, abs=0.1)
    assert float(t["alpha_peak_hz_mean"]) == pytest.approx(10.0, abs=0.1)
    alpha = t["band_power"].sel(band="alpha")
    assert alpha.sel(sensor="O1") > 20 * alpha.sel(sensor="Fz")
    gamma = t["gamma_power"]
    assert gamma.sel(sensor="Cz") > 5 * gamma.drop_sel(sensor="Cz").max()
    fc = t["fc"].sel(fc_band="alpha")
    assert fc.sel(sensor="O1", sensor2="O2") > 0.9          # shared alpha envelope
    assert abs(fc.sel(sensor="Fp1", sensor2="F4")) < 0.5      # independent noise
    np.testing.assert_allclose(np.diag(fc.values), 1.0)
    assert t["psd"].sel(frequency=10.0, sensor="O1") > 100 * t["psd"].sel(frequency=20.0, sensor="O1")
    assert t.attrs["reference"] == "None" and t.attrs["sample_rate_hz"] == SF


def test_average_reference_spreads_occipital_alpha_to_every_channel(sim_targets):
    # the default matches simulated EEG (average reference): alpha of O1/O2 now leaks everywhere
    fc = sim_targets["fc"].sel(fc_band="alpha")
    assert fc.sel(sensor="Fp1", sensor2="F4") > 0.8
    assert sim_targets.attrs["reference"] == "average"
    rel = sim_targets["relative_band_power"].sel(band="alpha")
    assert rel.sel(sensor="Fz") > 0.3


def test_bids_dataset_written_with_mne_bids_reads_back_into_identical_targets(bids_eeg, sim_targets, tmp_path):
    from bids_validator import BIDSValidator
    files = [p.relative_to(bids_eeg).as_posix() for p in bids_eeg.rglob("*") if p.is_file()]
    assert all(BIDSValidator().is_bids("/" + f) for f in files if not f.endswith("README")), files
    out = tmp_path / "targets.nc"
    ds = eeg_in.import_eeg(bids_eeg, out=out, subject="01", task="rest")
    _assert_same_targets(ds, sim_targets, rtol=1e-5)   # BrainVision stores float32
    back = xr.load_dataset(out)
    np.testing.assert_array_equal(back["psd"].values, ds["psd"].values)
    # the run's file path works too, and goes through mne-bids (montage from electrodes.tsv)
    vhdr = next(bids_eeg.rglob("*_eeg.vhdr"))
    raw = eeg_in.read_eeg(vhdr)
    assert raw.get_montage() is not None
    _assert_same_targets(eeg_in.eeg_targets(raw), sim_targets, rtol=1e-5)


@pytest.mark.parametrize("fmt,ext,rtol", [("edf", ".edf", 2e-3), ("eeglab", ".set", 1e-5), ("fif", ".fif", 1e-5)])
def test_other_formats_mne_reads_give_the_same_targets(sim_raw, sim_targets, tmp_path, fmt, ext, rtol):
    path = tmp_path / f"rec{ext}" if fmt != "fif" else tmp_path / "rec_raw.fif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "fif":
            sim_raw.save(path, verbose=False)
        else:
            mne.export.export_raw(path, sim_raw, fmt=fmt, verbose=False)
    ds = eeg_in.import_eeg(path)
    _assert_same_targets(ds, sim_targets, rtol=rtol)


# --- NEDF ------------------------------------------------------------------------------------

NEDF_CAL_V = 2.4 / (6.0 * 8388607)   # volts per ADC count (NEDF EEGLAB plugin, as in MNE)


def _write_nedf(path, data_v, names, sfreq, n_acc=3, trigger=None):
    """Write a NEDF 1.4 file: a 10240-byte XML header padded with NULs, then blocks of one
    accelerometer sample (n_acc × big-endian uint16) followed by 5 EEG samples, each
    n_chan × 24-bit big-endian two's-complement counts and a big-endian int32 trigger."""
    n_ch, n = data_v.shape
    montage = "".join(f"<EEGChannel{i + 1}>{c}</EEGChannel{i + 1}>" for i, c in enumerate(names))
    xml = (f"<Step><NEDFversion>1.4</NEDFversion>"
           f"<NumberOfChannelsOfAccelerometer>{n_acc}</NumberOfChannelsOfAccelerometer>"
           f"<AdditionalChannelStatus>OFF</AdditionalChannelStatus>"
           f"<EEGSettings><TotalNumberOfChannels>{n_ch}</TotalNumberOfChannels>"
           f"<EEGSamplingRate>{int(sfreq)}</EEGSamplingRate>"
           f"<NumberOfRecordsOfEEG>{n}</NumberOfRecordsOfEEG>"
           f"<EEGMontage>{montage}</EEGMontage></EEGSettings>"
           f"<StepDetails><DeviceClass>ENOBIO</DeviceClass>"
           f"<StartDate_firstEEGTimestamp>1700000000000</StartDate_firstEEGTimestamp></StepDetails></Step>")
    header = xml.encode().ljust(10240, b"\0")
    counts = np.clip(np.rint(data_v / NEDF_CAL_V), -(2 ** 23) + 1, 2 ** 23 - 1).astype(np.int64)
    u24 = counts & 0xFFFFFF
    eeg_bytes = np.stack([(u24 >> 16) & 0xFF, (u24 >> 8) & 0xFF, u24 & 0xFF], axis=-1).astype(np.uint8)
    trig = np.zeros(n, np.int32) if trigger is None else trigger.astype(np.int32)
    out = bytearray(header)
    for start in range(0, n, 5):
        out += np.full(n_acc, 512, ">u2").tobytes()
        for s in range(start, min(start + 5, n)):
            out += eeg_bytes[:, s, :].tobytes() + np.array(trig[s], ">i4").tobytes()
    path.write_bytes(bytes(out))
    return counts * NEDF_CAL_V


def test_nedf_file_in_the_documented_layout_loads_with_its_channels_and_values(tmp_path, sim_raw):
    names = ["Fp1", "P4", "Cz", "Pz", "P3", "Fp2", "O1", "O2"]   # an Enobio 8-like set
    data = sim_raw.copy().pick(names).get_data()
    n = data.shape[1] - 3   # not a multiple of 5: the last block is a short one
    trig = np.zeros(n)
    trig[[100, 2500]] = [1, 2]
    expected = _write_nedf(tmp_path / "rec.nedf", data[:, :n], names, SF, trigger=trig)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = mne.io.read_raw_nedf(tmp_path / "rec.nedf", preload=True, verbose=False)
    np.testing.assert_array_equal(np.flatnonzero(full.get_data(picks="stim")[0]), [100, 2500])
    raw = eeg_in.read_eeg(tmp_path / "rec.nedf")
    assert raw.ch_names == names and raw.info["sfreq"] == SF and raw.n_times == n
    np.testing.assert_allclose(raw.get_data(), expected, rtol=1e-12, atol=1e-15)
    assert np.abs(expected - data[:, :n]).max() <= NEDF_CAL_V   # 24-bit quantisation only
    t = eeg_in.import_eeg(tmp_path / "rec.nedf", channels=["O1", "O2", "Cz", "Pz"])
    assert t["alpha_peak_hz"].sel(sensor="O1") == pytest.approx(10.0, abs=0.1)
    assert t["fc"].sel(fc_band="alpha", sensor="O1", sensor2="O2") > 0.9


# --- malformed input and no-overwrite -------------------------------------------------------

def test_missing_channels_are_named_with_the_file_and_field(tmp_path, sim_raw):
    path = tmp_path / "rec_raw.fif"
    sim_raw.save(path, verbose=False)
    with pytest.raises(DataImportError, match=r"rec_raw\.fif: missing channel\(s\) \['T7', 'T8'\] \(field 'channels'\)"):
        eeg_in.import_eeg(path, channels=["O1", "T7", "T8"])
    # a montage name asks for all of its channels (Starstim 8 includes e.g. AF7 / P7 …)
    with pytest.raises(DataImportError, match=r"rec_raw\.fif: missing channel\(s\)"):
        eeg_in.import_eeg(path, channels="starstim8")
    # case differences are not "missing": FP1 in the file equals Fp1 asked for
    raw = eeg_in.read_eeg(path)
    raw.rename_channels({"Fp1": "FP1"})
    assert eeg_in.require_channels(raw, ["Fp1", "O1"]).ch_names == ["Fp1", "O1"]
    raw.info["bads"] = ["O1"]
    with pytest.raises(DataImportError, match=r"\['O1'\] are marked bad"):
        eeg_in.require_channels(raw, ["Fp1", "O1"])


def test_empty_unknown_corrupt_short_and_flat_recordings_give_clear_errors(tmp_path, sim_raw):
    (tmp_path / "empty.edf").write_bytes(b"")
    with pytest.raises(DataImportError, match=r"EEG recording file .*empty\.edf is empty"):
        eeg_in.read_eeg(tmp_path / "empty.edf")
    (tmp_path / "rec.xyz").write_text("1 2 3")
    with pytest.raises(DataImportError, match=r"rec\.xyz: file type '\.xyz' not supported; allowed: .*\.edf.*\.nedf"):
        eeg_in.read_eeg(tmp_path / "rec.xyz")
    (tmp_path / "junk.edf").write_bytes(b"0       this is not an EDF header" * 20)
    with pytest.raises(DataImportError, match=r"junk\.edf: EDF reader failed"):
        eeg_in.read_eeg(tmp_path / "junk.edf")
    with pytest.raises(DataImportError, match=r"nope\.vhdr does not exist"):
        eeg_in.read_eeg(tmp_path / "nope.vhdr")
    short = sim_raw.copy().crop(0, 2.0)
    short.save(tmp_path / "short_raw.fif", verbose=False)
    with pytest.raises(DataImportError, match=r"short_raw\.fif: 2\.00 s long; need at least 4 s"):
        eeg_in.read_eeg(tmp_path / "short_raw.fif")
    flat = sim_raw.copy()
    flat._data[CH.index("Pz")] = 0.0
    flat.info["description"] = "flat.edf"
    with pytest.raises(DataImportError, match=r"flat\.edf: flat channel\(s\) \['Pz'\]"):
        eeg_in.eeg_targets(flat, reference=None)
    stim_only = mne.io.RawArray(np.zeros((1, 2000)), mne.create_info(["STI"], SF, "stim"), verbose=False)
    stim_only.save(tmp_path / "stim_raw.fif", verbose=False)
    with pytest.raises(DataImportError, match=r"stim_raw\.fif: no EEG channels .*'ch_types'"):
        eeg_in.read_eeg(tmp_path / "stim_raw.fif")


def test_bids_queries_that_match_nothing_say_what_was_asked(bids_eeg):
    with pytest.raises(DataImportError, match=r"no EEG run for subject='02' task='rest'"):
        eeg_in.read_eeg(bids_eeg, subject="02", task="rest")


def test_existing_targets_are_never_overwritten(tmp_path, sim_raw):
    path = tmp_path / "rec_raw.fif"
    sim_raw.save(path, verbose=False)
    out = tmp_path / "targets.nc"
    first = eeg_in.import_eeg(path, out=out)
    before = out.read_bytes()
    with pytest.raises(OutputExistsError, match=r"targets\.nc exists already"):
        eeg_in.import_eeg(path, out=out, channels=["O1", "O2"])
    assert out.read_bytes() == before
    with pytest.raises(DataImportError, match="missing channel"):
        eeg_in.import_eeg(path, out=out, channels=["T7"], overwrite=True)
    assert out.read_bytes() == before
    second = eeg_in.import_eeg(path, out=out, channels=["O1", "O2", "Cz"], overwrite=True)
    assert list(xr.load_dataset(out)["sensor"].values) == ["O1", "O2", "Cz"] != list(first["sensor"].values)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec_raw.fif", "targets.nc"]
    assert json.loads(second.attrs["channels"]) == ["O1", "O2", "Cz"]


def test_source_targets_put_occipital_alpha_back_in_occipital_regions():
    from neurotwin_dash.observe import forward
    names = ["Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4", "T8",
             "P7", "P3", "Pz", "P4", "P8", "O1", "O2"]
    L = forward.leadfield("tvb76", montage=names)
    regions = list(L["region"].values)
    rng = np.random.default_rng(3)
    t = np.arange(int(12 * SF)) / SF
    q = rng.normal(size=(len(regions), t.size)) * 10e-9   # broadband background in every region
    occipital = ["lV1", "rV1", "lV2", "rV2"]
    for r in occipital:
        q[regions.index(r)] += 40e-9 * np.sin(2 * np.pi * 10 * t)
    x = L.sel(sensor=names).values @ q
    raw = mne.io.RawArray(x, mne.create_info(names, SF, "eeg"), verbose=False)
    src = eeg_in.source_targets(raw, "tvb76")
    alpha = src["band_power"].sel(band="alpha")
    assert set(alpha.sortby(alpha, ascending=False)["region"].values[:4]) == set(occipital)
    frontal = [r for r in regions if "PFC" in r]
    assert alpha.sel(region=occipital).mean() > 10 * alpha.sel(region=frontal).mean()
    rel = src["relative_band_power"].sel(band="alpha")
    assert rel.sel(region=occipital).mean() > 0.8 > 0.4 > rel.sel(region=frontal).mean()
    assert src["alpha_peak_hz"].sel(region="rV1") == pytest.approx(10.0, abs=0.2)
    assert src.attrs["inverse"] == "Tikhonov minimum norm" and src["resolution"].shape == (76, 76)


def test_uploaded_brainvision_triplet_imports_like_the_file_on_disk(tmp_path, sim_raw, sim_targets):
    from neurotwin_dash.io import save_uploads
    src = tmp_path / "src"
    src.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mne.export.export_raw(src / "rec.vhdr", sim_raw, fmt="brainvision", verbose=False)
    uploads = {p.name: p.read_bytes() for p in sorted(src.iterdir())}
    paths = save_uploads(uploads, tmp_path / "up")
    vhdr = next(p for p in paths if p.suffix == ".vhdr")
    _assert_same_targets(eeg_in.import_eeg(vhdr), sim_targets, rtol=1e-5)
    with pytest.raises(OutputExistsError):
        save_uploads({"rec.vhdr": b"other"}, tmp_path / "up")
    assert (tmp_path / "up" / "rec.vhdr").read_bytes() == uploads["rec.vhdr"]
    with pytest.raises(DataImportError, match="uploaded file rec2.eeg is empty"):
        save_uploads({"rec2.eeg": b""}, tmp_path / "up")
    with pytest.raises(DataImportError, match="uploaded file name 'my rec.edf'"):
        save_uploads({"my rec.edf": b"x"})
