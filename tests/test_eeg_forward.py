"""Forward model and simulated EEG: the lead field is real MNE physics, and the Raw is usable."""
import mne
import numpy as np
import pytest
import xarray as xr

from neurotwin_dash import catalog
from neurotwin_dash.observe import eeg, forward


@pytest.fixture(scope="module")
def fwd76():
    return forward.forward_model("tvb76", "standard_1020")


def _radial_dipoles_under(names, info, sphere, depth_m=0.025):
    r0 = np.asarray(sphere["r0"])
    scalp = sphere["layers"][-1]["rad"]
    rr, nn = [], []
    for ch in names:
        e = info["chs"][info.ch_names.index(ch)]["loc"][:3]
        u = (e - r0) / np.linalg.norm(e - r0)
        rr.append(r0 + u * (scalp * 0.9 - depth_m))
        nn.append(u)
    return np.array(rr), np.array(nn)


def test_radial_dipole_under_an_electrode_is_seen_largest_at_that_electrode():
    info = forward.montage_info("standard_1020")
    sphere = mne.make_sphere_model("auto", "auto", info, verbose=False)
    names = ["Fz", "Cz", "Pz", "C3", "C4", "O1", "O2", "Fp1", "T7", "T8", "P4", "F7"]
    rr, nn = _radial_dipoles_under(names, info, sphere)
    G = forward.gain_at_positions(rr, "standard_1020", sphere=sphere)
    assert G.dims == ("sensor", "source", "axis")
    g = np.einsum("srk,rk->sr", G.values, nn)
    for i, ch in enumerate(names):
        assert str(G.sensor.values[np.argmax(g[:, i])]) == ch
        # positive outward dipole → positive potential above it; far side of the head sees little
        assert g[:, i].max() > 4 * np.median(np.abs(g[:, i]))
        assert g[:, i].max() > 50.0     # V/(A·m): 10 nA·m 2 cm deep gives > 0.5 µV
    # tangential dipole under Cz: ~zero right above, dipolar pattern either side
    t = np.cross(nn[1], [1.0, 0, 0])
    gt = G.values[:, 1, :] @ (t / np.linalg.norm(t))
    cz = list(G.sensor.values).index("Cz")
    assert abs(gt[cz]) < 0.15 * np.abs(gt).max()
    assert gt.max() > 0 > gt.min()


def test_connectome_centres_land_in_the_right_hemisphere_of_the_head_frame(fwd76):
    pos = fwd76["position"]
    hemi = fwd76["hemisphere"].values
    assert np.all(pos.sel(axis="x").values[hemi == "R"] > 0)
    assert np.all(pos.sel(axis="x").values[hemi == "L"] < 0)
    # occipital V1 posterior to prefrontal cortex, both hemispheres
    for h in "lr":
        assert float(pos.sel(region=f"{h}V1", axis="y")) < float(pos.sel(region=f"{h}PFCPOL", axis="y")) - 0.08
    # every dipole inside the brain sphere, and the moved ones are reported
    r0 = np.asarray(fwd76.attrs["sphere_r0_m"])
    inner = min(fwd76.attrs["sphere_radii_m"])
    d = np.linalg.norm(pos.values - r0, axis=1)
    assert d.max() <= inner - forward.INNER_MARGIN_MM / 1000 + 1e-9
    assert fwd76.attrs["orientation_source"] == "connectome"
    # "fit": outermost centre at 90 % of the inner-skull radius, nothing had to be moved
    assert d.max() == pytest.approx(forward.FIT_FRACTION * inner, rel=1e-9)
    assert fwd76.attrs["n_moved"] == 0 and fwd76.attrs["placement"] == "fit"
    # "mni": centres taken as MNI mm; tvb76's anterior-shifted prefrontal centres poke out and are pulled in
    mni = forward.forward_model("tvb76", "standard_1020", placement="mni")
    assert mni.attrs["n_moved"] == int((mni["moved_mm"] > 0).sum())
    assert 0 < mni.attrs["n_moved"] < 20
    assert all(lab[1:4] == "PFC" for lab in mni.attrs["moved_regions"].split(","))
    dm = np.linalg.norm(mni["position"].values - r0, axis=1)
    assert dm.max() <= inner - forward.INNER_MARGIN_MM / 1000 + 1e-9


def test_fixed_gain_is_the_vector_gain_projected_on_the_orientation(fwd76):
    proj = (fwd76["gain_vector"] * fwd76["orientation"]).sum("axis")
    np.testing.assert_allclose(proj.values, fwd76["gain"].values, rtol=1e-10, atol=1e-9)
    assert fwd76["gain"].dims == ("sensor", "region")
    assert fwd76.sizes["sensor"] == 90 and fwd76.sizes["region"] == 76


def test_v1_dipoles_are_seen_most_over_occipital_electrodes():
    L = forward.leadfield("tvb76", "standard_1020", orientation="radial")
    assert L.attrs["orientation_source"] == "radial"
    Lref = L - L.mean("sensor")
    for h, side in (("l", "O1"), ("r", "O2")):
        col = np.abs(Lref.sel(region=f"{h}V1"))
        top = list(col.sortby(col, ascending=False).sensor.values[:6])
        assert any(s.startswith(("O", "PO", "Iz", "I")) for s in top), top


def test_starstim_subset_uses_the_template_sphere_and_matches_the_full_cap_columns():
    full = forward.leadfield("tvb76", "standard_1005")
    sub = forward.leadfield("tvb76", "starstim8")
    assert sub.attrs["sphere_fitted_to"] == "standard_1005"
    assert list(sub.sensor.values) == catalog.describe("starstim8")["channels"]
    # same head and positions as the 10-05 cap → identical columns for shared electrodes
    np.testing.assert_allclose(sub.values, full.sel(sensor=sub.sensor.values).values, rtol=1e-6)


def test_leadfield_cache_returns_identical_gain_without_recomputing(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROTWIN_CACHE", str(tmp_path))
    a = forward.leadfield_vector("tvb76", ["Cz", "Pz", "Oz", "Fz"])
    files = list((tmp_path / "leadfields").glob("gain_*.npy"))
    assert len(files) == 1
    calls = []
    monkeypatch.setattr(forward, "_free_gain", lambda *a, **k: calls.append(1))
    b = forward.leadfield_vector("tvb76", ["Cz", "Pz", "Oz", "Fz"])
    assert not calls
    xr.testing.assert_identical(a, b)
    assert a.dims == ("sensor", "region", "axis")


def test_forward_inputs_are_validated_with_named_fields():
    with pytest.raises(forward.ForwardError, match="montage"):
        forward.leadfield("tvb76", "no_such_cap")
    with pytest.raises(forward.ForwardError, match="10-05 names"):
        forward.leadfield("tvb76", ["Cz", "XYZ9"])
    with pytest.raises(forward.ForwardError, match="orientation"):
        forward.leadfield("tvb76", "starstim8", orientation="sideways")
    with pytest.raises(forward.ForwardError, match="head"):
        forward.leadfield("tvb76", "starstim8", head="cube")
    with pytest.raises(forward.ForwardError, match="metres"):
        forward.gain_at_positions([[10.0, 20.0, 60.0]], "starstim8")


# --- sensor signals and Raw -------------------------------------------------------------

def test_average_reference_rows_and_referenced_leadfield_columns_sum_to_zero():
    M = eeg.average_reference_matrix(64)
    np.testing.assert_allclose(M.sum(axis=1), 0, atol=1e-12)
    L = eeg.cached_leadfield("tvb76", "biosemi64", reference="average")
    np.testing.assert_allclose(L.sum("sensor").values, 0, atol=1e-9 * float(np.abs(L).max()))
    L0 = eeg.cached_leadfield("tvb76", "biosemi64", reference="none")
    np.testing.assert_allclose(M @ L0.values, L.values, rtol=1e-10, atol=1e-12)


def _region_signal(n_batch=2, seconds=4.0, fs=250.0, labels=None):
    labels = labels or catalog.load("tvb76").labels
    t = np.arange(int(seconds * fs)) / fs
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n_batch, t.size, len(labels))) + 5.0  # DC offset 5 mV
    x[:, :, labels.index("lV1")] += 3 * np.sin(2 * np.pi * 10 * t)
    return xr.DataArray(x, dims=("batch", "time", "region"),
                        coords={"batch": np.arange(n_batch), "time": t, "region": labels},
                        attrs={"units": "mV"})


def test_region_to_sensor_is_linear_average_referenced_and_scaled_in_volts():
    sig = _region_signal()
    x = eeg.region_to_sensor(sig, "tvb76", "biosemi64")
    assert x.dims == ("batch", "time", "sensor") and x.sizes["sensor"] == 64
    np.testing.assert_allclose(x.sum("sensor").values, 0, atol=1e-18 + 1e-12 * float(np.abs(x).max()))
    L = eeg.cached_leadfield("tvb76", "biosemi64", reference="average")
    v = sig.values - sig.values.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(x.values, v @ (L.values.T * 10e-9), rtol=1e-9)
    # tens of nA·m → microvolts, not volts or picovolts
    assert 1e-7 < float(x.std()) < 1e-4
    x2 = eeg.region_to_sensor(sig, "tvb76", "biosemi64", moment_nAm_per_mV=20.0)
    np.testing.assert_allclose(x2.values, 2 * x.values, rtol=1e-10)
    n = eeg.region_to_sensor(sig * 0, "tvb76", "biosemi64", noise_uV=2.0, seed=3)
    assert abs(float(n.std()) - 2e-6 * np.sqrt(63 / 64)) < 0.05e-6


def test_simulated_raw_has_the_montage_channel_names_and_average_reference():
    sig = _region_signal(n_batch=1, seconds=2.0)
    raw = eeg.simulated_eeg(xr.Dataset({"v_pyr": sig}, attrs={"connectome": "tvb76"}), montage="starstim20")
    assert isinstance(raw, mne.io.RawArray)
    assert raw.ch_names == catalog.describe("starstim20")["channels"]
    assert raw.info["sfreq"] == pytest.approx(250.0)
    assert raw.info["custom_ref_applied"]
    mont = raw.get_montage()
    assert mont is not None and mont.ch_names == raw.ch_names
    want = forward.montage_info("starstim20")
    got = np.array([c["loc"][:3] for c in raw.info["chs"]])
    np.testing.assert_allclose(got, [c["loc"][:3] for c in want["chs"]], atol=1e-9)
    np.testing.assert_allclose(raw.get_data().sum(axis=0), 0, atol=1e-15)
    psd = raw.compute_psd(fmin=2, fmax=40, n_fft=500, verbose=False)
    f_peak = psd.freqs[np.argmax(psd.get_data().mean(axis=0))]
    assert f_peak == pytest.approx(10.0, abs=0.5)


def test_eeg_rejects_mismatched_regions_and_bad_noise():
    sig = _region_signal(n_batch=1, seconds=1.0).assign_coords(region=[f"X{i}" for i in range(76)])
    with pytest.raises(forward.ForwardError, match="regions"):
        eeg.region_to_sensor(sig, "tvb76", "starstim8")
    with pytest.raises(ValueError, match="noise_uV"):
        eeg.region_to_sensor(_region_signal(1, 1.0), "tvb76", "starstim8", noise_uV=-1)


@pytest.mark.parametrize("montage", ["GSN-HydroCel-128", "standard_1005", "starstim32", "easycap-M1"])
def test_any_standard_layout_gives_a_raw_with_its_channel_names(montage):
    sig = _region_signal(n_batch=1, seconds=1.0)
    raw = eeg.simulated_eeg(xr.Dataset({"v_pyr": sig}, attrs={"connectome": "tvb76"}), montage=montage)
    names = forward.resolve_montage(montage)[0].ch_names
    assert raw.ch_names == list(names)
    assert np.all(np.isfinite(raw.get_data())) and raw.get_data().std() > 0
