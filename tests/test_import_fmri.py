"""fMRI in: a BIDS BOLD series + an atlas the test makes → region series and FC, exactly."""
import json

import nibabel as nib
import numpy as np
import pytest

from neurotwin_dash.connectome import Connectome
from neurotwin_dash.io import DataImportError, OutputExistsError
from neurotwin_dash.io import fmri_in

NAMES = ["lV1", "rV1", "lM1", "rM1", "lPFC", "rPFC"]
TR = 0.72
N_VOL = 60


def _affine(voxel_mm=4.0, origin=(-40.0, -60.0, -20.0)):
    aff = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    aff[:3, 3] = origin
    return aff


def _atlas_data():
    """Six boxes on a 20×30×16 grid: left/right (x) × occipital/central/frontal (y)."""
    lab = np.zeros((20, 30, 16), np.int16)
    values = [10, 11, 20, 21, 30, 31]   # non-contiguous label values on purpose
    k = 0
    for y0 in (2, 12, 22):
        for x0 in (2, 12):
            lab[x0:x0 + 6, y0:y0 + 6, 4:10] = values[k]
            k += 1
    return lab, values


@pytest.fixture(scope="module")
def bids_fmri(tmp_path_factory):
    """A BIDS dataset with one subject's BOLD whose regions carry known signals."""
    root = tmp_path_factory.mktemp("bids_fmri")
    (root / "dataset_description.json").write_text(json.dumps({"Name": "synthetic", "BIDSVersion": "1.11.0"}))
    (root / "task-rest_bold.json").write_text(json.dumps({"RepetitionTime": TR, "TaskName": "rest"}))
    func = root / "sub-01" / "func"
    func.mkdir(parents=True)
    lab, values = _atlas_data()
    rng = np.random.default_rng(1)
    t = np.arange(N_VOL) * TR
    shared = np.sin(2 * np.pi * 0.05 * t)
    signals = rng.normal(size=(N_VOL, 6)) + np.outer(shared, [2, 2, 1, 1, 0, 0])  # graded coupling
    data = np.zeros(lab.shape + (N_VOL,), np.float64)
    for k, v in enumerate(values):
        data[lab == v] = signals[:, k] + 100.0
    img = nib.Nifti1Image(data, _affine())
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = TR
    nib.save(img, func / "sub-01_task-rest_bold.nii.gz")
    atlas = root / "atlas"
    atlas.mkdir()
    nib.save(nib.Nifti1Image(lab, _affine()), atlas / "six_dseg.nii.gz")
    (atlas / "six_dseg.tsv").write_text("index\tname\n" + "".join(f"{v}\t{n}\n" for v, n in zip(values, NAMES)))
    return root, signals + 100.0, lab, values


def _connectome(order, centres, names=None):
    n = len(order)
    w = np.ones((n, n)) - np.eye(n)
    return Connectome.from_arrays(w, 30 * w, centres=centres, labels=names or order, name="six")


def test_bids_bold_with_atlas_reads_back_the_signals_and_fc_that_went_in(bids_fmri, tmp_path):
    root, signals, _, _ = bids_fmri
    bold = fmri_in.find_bids_bold(root, subject="01", task="rest")
    ds = fmri_in.import_fmri(bold, root / "atlas" / "six_dseg.nii.gz", out=tmp_path / "fc.nc")
    assert list(ds["region"].values) == NAMES
    assert ds.attrs["tr_s"] == pytest.approx(TR)
    np.testing.assert_allclose(ds["time"].values, np.arange(N_VOL) * TR)
    np.testing.assert_allclose(ds["bold"].values, signals, rtol=1e-12)
    np.testing.assert_allclose(ds["fc"].values, np.corrcoef(signals.T), atol=1e-12)
    assert ds["fc"].sel(region="lV1", region2="rV1") > 0.5 > abs(float(ds["fc"].sel(region="lPFC", region2="rPFC")))
    assert (ds["n_voxels"].values == 6 * 6 * 6).all()
    # centres are world millimetres (RAS) of each box's centre
    lab, values = _atlas_data()[0], _atlas_data()[1]
    vox = np.argwhere(lab == values[0]).mean(axis=0)
    np.testing.assert_allclose(ds["centres"].sel(region="lV1").values, _affine()[:3, :3] @ vox + _affine()[:3, 3])
    import xarray as xr
    back = xr.load_dataset(tmp_path / "fc.nc")
    np.testing.assert_array_equal(back["fc"].values, ds["fc"].values)


def test_regions_map_to_a_connectome_by_label_and_by_nearest_centroid(bids_fmri):
    root, signals, _, _ = bids_fmri
    bold = fmri_in.find_bids_bold(root, subject="01", task="rest")
    atlas = fmri_in.load_atlas(root / "atlas" / "six_dseg.nii.gz")
    order = ["rPFC", "lV1", "rM1", "lM1", "rV1", "lPFC"]
    centres = np.array([atlas.centres_mm[NAMES.index(s)] for s in order]) + 2.0  # 3.5 mm off
    by_label = fmri_in.import_fmri(bold, atlas, connectome=_connectome(order, centres), by="label")
    assert list(by_label["region"].values) == order
    np.testing.assert_allclose(by_label["bold"].values, signals[:, [NAMES.index(s) for s in order]], rtol=1e-12)
    # a connectome with other names still pairs up through its centres
    other = _connectome(order, centres, names=[f"node{i}" for i in range(6)])
    by_xyz = fmri_in.import_fmri(bold, atlas, connectome=other, by="centroid", max_distance_mm=5.0)
    assert list(by_xyz["atlas_region"].values) == order
    np.testing.assert_allclose(by_xyz["distance_mm"].values, np.sqrt(3) * 2.0)
    np.testing.assert_allclose(by_xyz["fc"].values, by_label["fc"].values)


def test_atlas_connectome_label_mismatch_names_the_missing_regions(bids_fmri):
    root, *_ = bids_fmri
    atlas = fmri_in.load_atlas(root / "atlas" / "six_dseg.nii.gz")
    conn = _connectome(["lV1", "rV1", "lM1", "rM1", "lPFC", "rACC"], atlas.centres_mm)
    with pytest.raises(DataImportError, match=r"label mismatch.*'rACC'.*'rPFC'"):
        fmri_in.map_to_connectome(atlas.labels, atlas.centres_mm, conn, by="label")
    far = _connectome(NAMES, atlas.centres_mm + [0, 0, 40.0], names=[f"n{i}" for i in range(6)])
    with pytest.raises(DataImportError, match=r"40\.0 mm.*max_distance_mm"):
        fmri_in.map_to_connectome(atlas.labels, atlas.centres_mm, far, by="centroid")


def test_wrong_tr_is_refused_naming_file_and_both_sources(bids_fmri, tmp_path):
    root, *_ = bids_fmri
    bold = root / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz"
    with pytest.raises(DataImportError, match=r"sub-01_task-rest_bold\.nii\.gz.*wrong TR.*0\.72 s.*tr_s argument = 2 s"):
        fmri_in.read_bold(bold, tr_s=2.0)
    # a header that disagrees with its sidecar
    img = nib.load(bold)
    hdr = img.header.copy()
    hdr["pixdim"][4] = 2.0
    bad = tmp_path / "sub-02_task-rest_bold.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, hdr), bad)
    bad.with_name("sub-02_task-rest_bold.json").write_text(json.dumps({"RepetitionTime": TR}))
    with pytest.raises(DataImportError, match=r"wrong TR: sidecar .*RepetitionTime = 0\.72 s but header pixdim\[4\] = 2 s"):
        fmri_in.read_bold(bad)
    bad.with_name("sub-02_task-rest_bold.json").write_text(json.dumps({"RepetitionTime": 720}))
    with pytest.raises(DataImportError, match="RepetitionTime = 720 s .*milliseconds"):
        fmri_in.read_bold(bad)


def test_empty_unreadable_and_3d_inputs_give_clear_errors(tmp_path, bids_fmri):
    root, *_ = bids_fmri
    empty = tmp_path / "empty_bold.nii.gz"
    empty.write_bytes(b"")
    with pytest.raises(DataImportError, match=r"BOLD image file .*empty_bold\.nii\.gz is empty"):
        fmri_in.read_bold(empty)
    junk = tmp_path / "junk_bold.nii"
    junk.write_bytes(b"not a nifti" * 40)
    with pytest.raises(DataImportError, match=r"junk_bold\.nii: not a readable NIfTI"):
        fmri_in.read_bold(junk)
    three_d = tmp_path / "anat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4)), np.eye(4)), three_d)
    with pytest.raises(DataImportError, match=r"anat\.nii\.gz: shape \(4, 4, 4\) is not 4D.*'dim'"):
        fmri_in.read_bold(three_d, tr_s=2.0)
    with pytest.raises(DataImportError, match="atlas image file .*missing.nii.gz does not exist"):
        fmri_in.load_atlas(tmp_path / "missing.nii.gz")
    short = tmp_path / "labels.tsv"
    short.write_text("index\tname\n10\tlV1\n")
    with pytest.raises(DataImportError, match=r"labels\.tsv: no name for label value\(s\) \[11, 20"):
        fmri_in.load_atlas(root / "atlas" / "six_dseg.nii.gz", labels=short)


def test_existing_output_is_never_overwritten_or_lost(bids_fmri, tmp_path):
    root, *_ = bids_fmri
    bold = root / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz"
    atlas = root / "atlas" / "six_dseg.nii.gz"
    out = tmp_path / "fc.nc"
    out.write_bytes(b"earlier import")
    with pytest.raises(OutputExistsError, match=r"fc\.nc exists already"):
        fmri_in.import_fmri(bold, atlas, out=out)
    assert out.read_bytes() == b"earlier import"
    # a failing import with overwrite=True also leaves the earlier file untouched
    with pytest.raises(DataImportError, match="wrong TR"):
        fmri_in.import_fmri(bold, atlas, out=out, tr_s=1.0, overwrite=True)
    assert out.read_bytes() == b"earlier import"
    fmri_in.import_fmri(bold, atlas, out=out, overwrite=True)
    assert out.read_bytes()[:4] == b"\x89HDF"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fc.nc"]  # no partial files left


def test_packaged_coordinate_atlas_spheres_read_world_coordinates():
    # a BOLD whose every voxel holds its own world x coordinate (+ a time ramp): each sphere's
    # mean must equal its centre's x — the sphere atlas and the image share the MNI/RAS frame.
    atlas = fmri_in.load_atlas("dosenbach_2010", radius_mm=5.0)
    assert atlas.n_regions == 160 and len(set(atlas.labels)) == 160
    aff = _affine(3.0, origin=(-75.0, -111.0, -51.0))
    ijk = np.indices((51, 63, 51)).reshape(3, -1).T
    x_world = (ijk @ aff[:3, :3].T + aff[:3, 3])[:, 0].reshape(51, 63, 51)
    data = x_world[..., None] + np.arange(12)[None, None, None, :] * 0.01
    ds = fmri_in.parcellate(nib.Nifti1Image(data.astype(np.float32), aff), atlas, tr_s=2.0)
    np.testing.assert_allclose(ds["bold"].isel(time=0).values, atlas.centres_mm[:, 0], atol=1.0)
    np.testing.assert_allclose(ds["bold"].isel(time=11) - ds["bold"].isel(time=0), 0.11, atol=1e-4)
