import numpy as np
import pytest

from neurotwin_dash import catalog
from neurotwin_dash.stimulation.simnibs_io import (MeshError, read_mesh, sample_field, sample_regions,
                                                   write_mesh)

E0 = np.array([0.2, -0.1, 0.3])                 # V/m
GRAD = np.array([[0.002, 0.0, 0.0], [0.0, -0.001, 0.0], [0.0, 0.0, 0.0015]])   # V/m per mm


def _cube_mesh(half=80.0, step=10.0):
    """Structured tetrahedral cube (6 tets per voxel), SimNIBS-like tissue tags by radius."""
    g = np.arange(-half, half + 1e-9, step)
    n = len(g)
    X, Y, Z = np.meshgrid(g, g, g, indexing="ij")
    nodes = np.column_stack([X.ravel(), Y.ravel(), Z.ravel()])
    idx = np.arange(n ** 3).reshape(n, n, n)
    c = [idx[:-1, :-1, :-1], idx[1:, :-1, :-1], idx[1:, 1:, :-1], idx[:-1, 1:, :-1],
         idx[:-1, :-1, 1:], idx[1:, :-1, 1:], idx[1:, 1:, 1:], idx[:-1, 1:, 1:]]
    c = [a.ravel() for a in c]
    split = [(0, 1, 2, 6), (0, 2, 3, 6), (0, 3, 7, 6), (0, 7, 4, 6), (0, 4, 5, 6), (0, 5, 1, 6)]
    tets = np.concatenate([np.column_stack([c[i] for i in s]) for s in split])
    r = np.linalg.norm(nodes[tets].mean(axis=1), axis=1)
    tags = np.where(r < 30, 1, np.where(r < 85, 2, 3))
    return nodes, tets, tags


def _linear_E(points):
    return E0 + points @ GRAD.T


@pytest.fixture(scope="module")
def msh(tmp_path_factory):
    nodes, tets, tags = _cube_mesh()
    E = _linear_E(nodes[tets].mean(axis=1))
    v = -(nodes @ E0)
    tri = tets[:50, :3]
    path = tmp_path_factory.mktemp("simnibs") / "ernie_TDCS_1_scalar.msh"
    write_mesh(path, nodes, tets, tags, element_data={"E": E, "magnE": np.linalg.norm(E, axis=1)},
               node_data={"v": v}, triangle=tri, triangle_tag=np.full(len(tri), 1002))
    return path, nodes, tets, tags, E


def test_mesh_round_trip_keeps_nodes_elements_tags_and_fields(msh):
    path, nodes, tets, tags, E = msh
    m = read_mesh(path, backend="meshio")
    np.testing.assert_allclose(m.nodes_mm, nodes)
    np.testing.assert_array_equal(m.tetra, tets)
    np.testing.assert_array_equal(m.tetra_tag, tags)
    assert len(m.triangle) == 50 and set(m.triangle_tag) == {1002}
    np.testing.assert_allclose(m.element_data["E"]["tetra"], E)
    np.testing.assert_allclose(m.element_data["magnE"]["tetra"], np.linalg.norm(E, axis=1))
    np.testing.assert_allclose(m.node_data["v"], -(nodes @ E0))
    assert m.tissues() == [1, 2, 3]


def test_linear_sampling_recovers_a_linear_field_inside_grey_matter(msh):
    path = msh[0]
    m = read_mesh(path)
    rng = np.random.default_rng(0)
    d = rng.normal(size=(40, 3))
    pts = d / np.linalg.norm(d, axis=1, keepdims=True) * rng.uniform(45, 70, (40, 1))
    lin, dist = sample_field(m, pts, "E", tissues=(2,), method="linear")
    assert np.all(dist == 0)
    # vertex averaging of a linear field is exact away from the tissue boundary
    np.testing.assert_allclose(lin, _linear_E(pts), atol=2e-3)
    near, _ = sample_field(m, pts, "E", tissues=(2,), method="nearest")
    err_near = np.abs(near - _linear_E(pts)).max()
    assert err_near < 0.02 and err_near > np.abs(lin - _linear_E(pts)).max()
    # node data (the potential) is interpolated exactly (it is linear)
    v, _ = sample_field(m, pts, "v", tissues=(2,), method="linear")
    np.testing.assert_allclose(v, -(pts @ E0), atol=1e-9)
    mean, _ = sample_field(m, pts, "magnE", tissues=(2,), method="mean", radius_mm=12.0)
    np.testing.assert_allclose(mean, np.linalg.norm(_linear_E(pts), axis=1), atol=0.03)


def test_region_sampling_gives_inward_normal_component(msh, tmp_path):
    path = msh[0]
    nodes, tets, tags = _cube_mesh()
    uniform = np.tile(E0, (len(tets), 1))
    p = write_mesh(tmp_path / "uniform.msh", nodes, tets, tags, element_data={"E": uniform})
    ds = sample_regions(p, "tvb76", field="E", method="linear", scale=0.5)
    con = catalog.load("tvb76")
    np.testing.assert_allclose(ds["E"].values, np.tile(0.5 * E0, (76, 1)), atol=1e-12)
    np.testing.assert_allclose(ds["E_n"].values, -(con.orientations @ (0.5 * E0)), atol=1e-12)
    assert ds.attrs["orientation_source"] == "connectome"
    # an affine shift moves the sampling points: the linear field then changes accordingly
    A = np.eye(4)
    A[:3, 3] = [5.0, 0.0, 0.0]
    shifted = sample_regions(path, "tvb76", field="E", method="nearest", affine=A)
    assert shifted["E"].shape == (76, 3)


def test_bad_mesh_inputs_raise_clear_errors(msh, tmp_path):
    path = msh[0]
    m = read_mesh(path)
    with pytest.raises(MeshError, match=r"field 'J' not in .*fields: \['E', 'magnE', 'v'\]"):
        sample_field(m, np.zeros((1, 3)), "J")
    with pytest.raises(MeshError, match=r"no tetrahedra with tissue tags \[7\].*tags present: \[1, 2, 3\]"):
        sample_field(m, np.zeros((1, 3)), "E", tissues=(7,))
    with pytest.raises(MeshError, match="backend='simnibs' but simnibs is not importable"):
        read_mesh(path, backend="simnibs")
    bad = tmp_path / "bad.msh"
    bad.write_text("not a mesh")
    with pytest.raises(MeshError, match="meshio could not read it"):
        read_mesh(bad)
