"""Connectomes in: MRtrix3 tck2connectome outputs with a lookup table."""
import numpy as np
import pytest

from neurotwin_dash.connectome import Connectome, ConnectomeError

LUT = """# MRtrix3 fs_default.txt-style lookup table
# index  short  long                          R   G   B   A
0    Unknown  Unknown                          0   0   0   0
1    L.LOF    ctx-lh-lateralorbitofrontal     35  75  50   255
2    L.PCG    ctx-lh-precentral               60  20  220  255
3    R.LOF    ctx-rh-lateralorbitofrontal     35  75  50   255
4    R.PCG    ctx-rh-precentral               60  20  220  255
"""


def _upper(rng, n=4):
    m = np.triu(rng.uniform(1, 100, size=(n, n)), 1)
    return m


def test_mrtrix_space_delimited_upper_triangular_csv_with_lut_loads_symmetric(tmp_path):
    rng = np.random.default_rng(0)
    w, lengths = _upper(rng), _upper(rng)
    # tck2connectome writes space-delimited ".csv" files without a header
    np.savetxt(tmp_path / "connectome.csv", w, delimiter=" ", fmt="%.6f")
    np.savetxt(tmp_path / "meanlength.csv", lengths, delimiter=" ", fmt="%.6f")
    (tmp_path / "fs_default.txt").write_text(LUT)
    conn = Connectome.from_files(tmp_path / "connectome.csv", tmp_path / "meanlength.csv",
                                 labels=tmp_path / "fs_default.txt")
    assert conn.labels == ["L.LOF", "L.PCG", "R.LOF", "R.PCG"]
    np.testing.assert_allclose(conn.weights, np.round(w + w.T, 6))
    np.testing.assert_allclose(conn.tract_lengths, np.round(lengths + lengths.T, 6))
    assert "symmetrised upper-triangular" in conn.ds.attrs["history"]
    assert conn.weights[2, 0] == conn.weights[0, 2] > 0
    # the comma-separated variant of the same file gives the same connectome
    np.savetxt(tmp_path / "w_comma.csv", w, delimiter=",", fmt="%.6f")
    np.savetxt(tmp_path / "L_comma.csv", lengths, delimiter=",", fmt="%.6f")
    again = Connectome.from_files(tmp_path / "w_comma.csv", tmp_path / "L_comma.csv",
                                  labels=tmp_path / "fs_default.txt")
    assert again.content_hash() == conn.content_hash()


def test_full_symmetric_matrices_are_not_mirrored(tmp_path):
    rng = np.random.default_rng(1)
    w = _upper(rng)
    w = w + w.T
    np.savetxt(tmp_path / "w.csv", w)
    np.savetxt(tmp_path / "L.csv", w * 0 + 10 - 10 * np.eye(4))
    conn = Connectome.from_files(tmp_path / "w.csv", tmp_path / "L.csv")
    np.testing.assert_allclose(conn.weights, w)
    assert conn.ds.attrs["history"] == ""


def test_lut_that_does_not_fit_the_matrix_names_the_file_and_counts(tmp_path):
    rng = np.random.default_rng(2)
    np.savetxt(tmp_path / "w.csv", _upper(rng, 3))
    np.savetxt(tmp_path / "L.csv", _upper(rng, 3))
    (tmp_path / "fs_default.txt").write_text(LUT)
    with pytest.raises(ConnectomeError, match=r"fs_default\.txt: the lookup table has 4 entries but the matrix has 3"):
        Connectome.from_files(tmp_path / "w.csv", tmp_path / "L.csv", labels=tmp_path / "fs_default.txt")
    (tmp_path / "gappy.txt").write_text("1 A 0 0 0 255\n2 B 0 0 0 255\n5 C 0 0 0 255\n")
    with pytest.raises(ConnectomeError, match=r"gappy\.txt: lookup-table indices must be 1\.\.3"):
        Connectome.from_files(tmp_path / "w.csv", tmp_path / "L.csv", labels=tmp_path / "gappy.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ConnectomeError, match=r"empty\.txt is empty \(field 'labels'\)"):
        Connectome.from_files(tmp_path / "w.csv", tmp_path / "L.csv", labels=tmp_path / "empty.txt")
