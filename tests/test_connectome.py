"""Connectome loading, operations and validation."""
import numpy as np
import pytest

from neurotwin_dash import catalog
from neurotwin_dash.connectome import Connectome, ConnectomeError


@pytest.fixture(scope="module")
def tvb76():
    return catalog.load("tvb76")


def test_tvb76_has_76_regions_with_real_weights_and_lengths_in_mm(tvb76):
    assert tvb76.n_regions == 76
    assert np.count_nonzero(tvb76.weights) == 1560  # docs/science.md §4
    lengths = tvb76.tract_lengths[tvb76.weights > 0]
    assert 10 < np.median(lengths) < 150  # millimetres, not metres
    assert tvb76.ds["tract_lengths"].attrs["units"] == "mm"
    assert tvb76.orientations is not None
    np.testing.assert_allclose(np.linalg.norm(tvb76.orientations, axis=1), 1.0, atol=1e-9)


@pytest.mark.parametrize("name", ["tvb66", "tvb68", "tvb76", "tvb96", "tvb192", "hcp80"])
def test_every_catalog_connectome_puts_right_hemisphere_labels_at_positive_x(name):
    conn = catalog.load(name)
    hemi = conn.ds["hemisphere"].values
    x = conn.centres[:, 0]
    assert (hemi == "R").sum() > conn.n_regions // 3
    assert x[hemi == "R"].mean() > 10 and x[hemi == "L"].mean() < -10


def test_tvb76_centres_are_converted_from_anterior_left_superior_to_ras(tvb76):
    # rV1 sits at stored x ≈ −70 (posterior), y ≈ −13 (right): in RAS it is right and posterior.
    x, y, _ = tvb76.centres[tvb76.index("rV1")]
    assert x > 5 and y < -60
    # the frontal pole is the most anterior region
    assert tvb76.labels[int(np.argmax(tvb76.centres[:, 1]))] == "rPFCPOL"
    assert tvb76.centres[tvb76.index("rPFCPOL"), 1] > 60


def test_delays_in_steps_equal_rounded_length_over_speed_over_dt(tvb76):
    steps = tvb76.delays_steps(speed_m_s=4.0, dt_ms=0.1)
    expected = np.rint(tvb76.tract_lengths / 4.0 / 0.1).astype(int)
    np.testing.assert_array_equal(steps, expected)
    i, j = np.unravel_index(np.argmax(tvb76.tract_lengths), tvb76.tract_lengths.shape)
    assert steps[i, j] == round(tvb76.tract_lengths[i, j] / 0.4)


@pytest.mark.parametrize("speed,dt,field", [(0.0, 0.1, "speed_m_s"), (-3, 0.1, "speed_m_s"),
                                            (4.0, 0.0, "dt_ms")])
def test_non_positive_speed_or_dt_is_refused(tvb76, speed, dt, field):
    with pytest.raises(ConnectomeError, match=field):
        tvb76.delays_steps(speed, dt)


def test_normalisations(tvb76):
    assert tvb76.normalise("max").weights.max() == pytest.approx(1.0)
    rows = tvb76.normalise("rowsum").weights.sum(axis=1)
    np.testing.assert_allclose(rows[rows > 0], 1.0)
    rho = np.max(np.abs(np.linalg.eigvals(tvb76.normalise("spectral").weights)))
    assert rho == pytest.approx(1.0, rel=1e-9)
    logw = tvb76.normalise("log").weights
    assert logw.max() == pytest.approx(1.0)
    assert np.all((logw > 0) == (tvb76.weights > 0))
    # log compresses the dynamic range of the non-zero weights
    nz = tvb76.weights > 0
    assert logw[nz].max() / logw[nz].min() < tvb76.weights[nz].max() / tvb76.weights[nz].min()
    with pytest.raises(ConnectomeError, match="normalisation 'bogus' unknown; allowed: none, max"):
        tvb76.normalise("bogus")


def test_scaling_lesions_and_edge_edits_return_new_connectomes(tvb76):
    w0 = tvb76.weights.copy()
    scaled = tvb76.scale(2.5)
    np.testing.assert_allclose(scaled.weights, 2.5 * w0)
    les = tvb76.lesion_region("rV1")
    i = tvb76.index("rV1")
    assert les.weights[i].sum() == 0 and les.weights[:, i].sum() == 0
    assert np.count_nonzero(les.weights) < np.count_nonzero(w0)
    edge = tvb76.set_edge("rA1", "lA1", 0.75)
    a, b = tvb76.index("rA1"), tvb76.index("lA1")
    assert edge.weights[a, b] == 0.75 and edge.weights[b, a] == 0.75
    one_way = tvb76.set_edge("rA1", "lA1", 0.75, symmetric=False)
    assert one_way.weights[b, a] == w0[b, a]
    cut = tvb76.lesion_edge("rA1", "lA1")
    assert cut.weights[a, b] == 0 and cut.weights[b, a] == 0
    np.testing.assert_array_equal(tvb76.weights, w0)  # original untouched
    assert "lesion_region(rV1)" in les.ds.attrs["history"]
    with pytest.raises(ConnectomeError, match="scale factor"):
        tvb76.scale(-1)
    with pytest.raises(ConnectomeError, match="unknown region 'nowhere'"):
        tvb76.lesion_region("nowhere")


def test_select_keeps_labels_and_submatrices(tvb76):
    labels = ["rV1", "lV1", "rA1"]
    sub = tvb76.select(labels)
    assert sub.labels == labels
    idx = [tvb76.index(s) for s in labels]
    np.testing.assert_array_equal(sub.weights, tvb76.weights[np.ix_(idx, idx)])
    np.testing.assert_array_equal(sub.centres, tvb76.centres[idx])


def test_content_hash_changes_with_an_edit(tvb76):
    assert tvb76.content_hash() == catalog.load("tvb76").content_hash()
    assert tvb76.content_hash() != tvb76.scale(2).content_hash()


def test_netcdf_round_trip(tvb76, tmp_path):
    path = tmp_path / "c.nc"
    tvb76.to_netcdf(path)
    back = Connectome.open(path)
    np.testing.assert_array_equal(back.weights, tvb76.weights)
    assert back.labels == tvb76.labels
    assert back.content_hash() == tvb76.content_hash()


# --- user files ------------------------------------------------------------------------------

def _write_user_files(tmp_path, n=4, sep=","):
    rng = np.random.default_rng(0)
    w = rng.random((n, n))
    np.fill_diagonal(w, 0)
    L = 10 + 100 * rng.random((n, n))
    np.savetxt(tmp_path / "w.csv", w, delimiter=sep)
    np.savetxt(tmp_path / "L.csv", L, delimiter=sep)
    (tmp_path / "labels.txt").write_text("\n".join(f"lR{i}" if i % 2 else f"rR{i}" for i in range(n)))
    return w, L


def test_user_csv_and_npy_matrices_load(tmp_path):
    w, L = _write_user_files(tmp_path)
    conn = Connectome.from_files(tmp_path / "w.csv", tmp_path / "L.csv", labels=tmp_path / "labels.txt")
    np.testing.assert_allclose(conn.weights, w)
    np.testing.assert_allclose(conn.tract_lengths, L)
    assert conn.labels[1] == "lR1"
    np.save(tmp_path / "w.npy", w)
    np.save(tmp_path / "L.npy", L)
    conn2 = Connectome.from_files(tmp_path / "w.npy", tmp_path / "L.npy")
    np.testing.assert_allclose(conn2.weights, w)


def test_tvb_style_zip_loads(tmp_path):
    import zipfile
    w, L = _write_user_files(tmp_path)
    centres = "\n".join(f"rR{i} {i} {i + 1} {i + 2}" for i in range(4))
    with zipfile.ZipFile(tmp_path / "conn.zip", "w") as zf:
        zf.writestr("weights.txt", "\n".join(" ".join(map(str, r)) for r in w))
        zf.writestr("tract_lengths.txt", "\n".join(" ".join(map(str, r)) for r in L))
        zf.writestr("centres.txt", centres)
    conn = Connectome.from_files(tmp_path / "conn.zip")
    np.testing.assert_allclose(conn.weights, w)
    assert conn.labels == [f"rR{i}" for i in range(4)]
    np.testing.assert_allclose(conn.centres[2], [2, 3, 4])


@pytest.mark.parametrize("weights,lengths,labels,match", [
    (np.ones((3, 4)), np.ones((3, 4)), None, r"weights must be a square matrix \(n × n\), got shape \(3, 4\)"),
    (np.ones((3, 3)), np.ones((4, 4)), None, "tract_lengths has shape .4, 4. but weights has shape .3, 3."),
    (np.array([[0, np.nan], [1, 0]]), np.ones((2, 2)), None, "weights contains NaN or Inf .first at row 0, column 1"),
    (np.ones((2, 2)), np.array([[0, np.inf], [1, 0]]), None, "tract_lengths contains NaN or Inf"),
    (np.array([[0, -1.0], [1, 0]]), np.ones((2, 2)), None, "weights contains negative values"),
    (np.ones((2, 2)), np.ones((2, 2)), ["a", "b", "c"], "labels: got 3 labels for 2 regions"),
    (np.ones((2, 2)), np.ones((2, 2)), ["a", "a"], "labels must be unique"),
])
def test_bad_matrices_get_a_clear_error_naming_the_field(weights, lengths, labels, match):
    with pytest.raises(ConnectomeError, match=match):
        Connectome.from_arrays(weights, lengths, labels=labels)


def test_missing_and_empty_user_files_are_named(tmp_path):
    with pytest.raises(ConnectomeError, match="weights file .*does not exist"):
        Connectome.from_files(tmp_path / "nope.csv", tmp_path / "L.csv")
    (tmp_path / "empty.csv").write_text("")
    np.savetxt(tmp_path / "L.csv", np.ones((2, 2)))
    with pytest.raises(ConnectomeError, match="weights file .*empty.csv is empty"):
        Connectome.from_files(tmp_path / "empty.csv", tmp_path / "L.csv")
    with pytest.raises(ConnectomeError, match="tract_lengths file is required"):
        Connectome.from_files(tmp_path / "L.csv")
