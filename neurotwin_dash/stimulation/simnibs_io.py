"""Import SimNIBS field results (gmsh ``.msh``) and sample them at connectome regions.

SimNIBS (Thielscher et al. 2015; Saturnino et al. 2019) is not on PyPI. When a user has run it,
its ``<subject>_TDCS_1_scalar.msh`` holds tetrahedra (volume tissues, physical tags 1 WM,
2 GM, 3 CSF, 4 bone, 5 scalp, …) and triangles (surfaces, tags 1001+) with element data such
as ``E`` (V/m, 3 components), ``magnE``, ``J``, and node data ``v`` (V). This module reads such a
file — through ``simnibs.read_msh`` when ``simnibs`` is importable, else with ``meshio`` — and
samples a field at region centres, so that an individual FEM field can replace the built-in
sphere field (:mod:`neurotwin_dash.stimulation.efield`) in the neural-mass coupling.

Sampling methods:

* ``"linear"`` – element values are averaged onto nodes (volume-weighted, within the chosen
  tissues) and interpolated barycentrically inside the tetrahedron holding the point (as
  SimNIBS' ``interpolate_scattered``); points outside the tissue fall back to ``"nearest"``.
* ``"nearest"`` – value of the tissue element whose centroid is closest.
* ``"mean"`` – mean over the tissue elements with centroids within ``radius_mm`` (volume-
  weighted); nearest when none is that close. Suits regions, which are volumes.

The mesh is in the subject's space (mm). Connectome centres are MNI-like mm; give ``affine``
(4×4, MNI→subject mm) or, with ``simnibs`` installed, ``m2m_dir`` to map them
(``simnibs.mni2subject_coords``). ``E_n`` uses the inward normal of
:mod:`neurotwin_dash.stimulation.efield` (positive depolarises the soma): ``n = −orientation``.

meshio note: meshio 5.3's gmsh-2.2 reader splits element data wrongly when a file holds more
than one element type (meshio issue #1257), which every SimNIBS result does; :func:`read_mesh`
reads such files with the split corrected.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr
from scipy.spatial import cKDTree

from .. import catalog
from ..connectome import Connectome

__all__ = ["MeshError", "FieldMesh", "read_mesh", "write_mesh", "sample_field", "sample_regions",
           "SIMNIBS_TISSUES"]

#: SimNIBS volume tissue tags (surfaces carry the same tag + 1000)
SIMNIBS_TISSUES = {1: "WM", 2: "GM", 3: "CSF", 4: "bone", 5: "scalp", 6: "eye_balls",
                   7: "compact_bone", 8: "spongy_bone", 9: "blood", 10: "muscle"}


class MeshError(ValueError):
    """A mesh file or its contents cannot be used; the message says what is missing."""


@dataclass
class FieldMesh:
    """A tetrahedral/triangular mesh with element and node data (SimNIBS-style).

    Attributes
    ----------
    nodes_mm : (n_node, 3) node coordinates (mm)
    tetra, triangle : (n, 4) / (n, 3) zero-based node indices
    tetra_tag, triangle_tag : (n,) physical (tissue) tags
    element_data : name -> {"tetra": array, "triangle": array}, one row per element
    node_data : name -> (n_node, ...) array
    """

    nodes_mm: np.ndarray
    tetra: np.ndarray
    tetra_tag: np.ndarray
    triangle: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), int))
    triangle_tag: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    element_data: dict = field(default_factory=dict)
    node_data: dict = field(default_factory=dict)
    source: str = ""

    @property
    def fields(self) -> list[str]:
        return list(self.element_data) + list(self.node_data)

    def tissues(self) -> list[int]:
        return sorted(int(t) for t in np.unique(self.tetra_tag))


# --- reading / writing ----------------------------------------------------------------------

_MESHIO_LOCK = threading.Lock()


def _read_meshio(path: Path):
    import meshio  # heavy: meshio (~0.8 s), only for SimNIBS meshes
    from meshio.gmsh import _gmsh22

    def split_by_block(cells, raw):
        # meshio #1257: the gmsh-2.2 reader keeps (type, array) tuples, whose len() is 2
        sizes = [len(c[1]) if isinstance(c, tuple) else len(c) for c in cells]
        cuts = np.cumsum(sizes)[:-1]
        return {name: np.split(d, cuts) for name, d in raw.items()}

    with _MESHIO_LOCK:
        original = _gmsh22.cell_data_from_raw
        _gmsh22.cell_data_from_raw = split_by_block
        try:
            # name the format: meshio's format guessing ends in sys.exit() on unreadable files
            return meshio.read(path, file_format="gmsh" if path.suffix == ".msh" else None)
        finally:
            _gmsh22.cell_data_from_raw = original


def _from_meshio(m, source: str) -> FieldMesh:
    blocks = {"tetra": [], "triangle": []}
    tags = {"tetra": [], "triangle": []}
    data: dict = {}
    phys = m.cell_data.get("gmsh:physical")
    for i, block in enumerate(m.cells):
        if block.type not in blocks:
            continue
        blocks[block.type].append(np.asarray(block.data))
        tags[block.type].append(np.asarray(phys[i]) if phys is not None else np.zeros(len(block.data), int))
        for name, arrays in m.cell_data.items():
            if name.startswith("gmsh:"):
                continue
            data.setdefault(name, {"tetra": [], "triangle": []})[block.type].append(np.asarray(arrays[i]))

    def cat(parts, width):
        return np.concatenate(parts) if parts else np.zeros((0, width) if width else 0)

    element_data = {name: {k: cat(v, None) for k, v in d.items() if v} for name, d in data.items()}
    return FieldMesh(
        nodes_mm=np.asarray(m.points, float), tetra=cat(blocks["tetra"], 4).astype(int),
        tetra_tag=cat(tags["tetra"], None).astype(int), triangle=cat(blocks["triangle"], 3).astype(int),
        triangle_tag=cat(tags["triangle"], None).astype(int), element_data=element_data,
        node_data={k: np.asarray(v) for k, v in m.point_data.items() if not k.startswith("gmsh:")},
        source=source,
    )


def _from_simnibs(msh, source: str) -> FieldMesh:  # pragma: no cover - needs simnibs installed
    elm = msh.elements
    nodes = np.asarray(msh.nodes.node_coord, float)
    etype = np.asarray(elm.elm_type)
    nnl = np.asarray(elm.node_number_list) - 1
    tet, tri = etype == 4, etype == 2
    element_data, node_data = {}, {}
    for name, fdata in msh.field.items():
        value = np.asarray(fdata.value)
        if type(fdata).__name__ == "ElementData":
            element_data[name] = {"tetra": value[tet], "triangle": value[tri]}
        else:
            node_data[name] = value
    return FieldMesh(nodes, nnl[tet, :4], np.asarray(elm.tag1)[tet], nnl[tri, :3], np.asarray(elm.tag1)[tri],
                     element_data, node_data, source)


def read_mesh(path, backend: str = "auto") -> FieldMesh:
    """Read a SimNIBS/gmsh ``.msh`` field file.

    Parameters
    ----------
    path : str | Path
    backend : ``"auto"`` | ``"simnibs"`` | ``"meshio"``
        ``auto`` uses ``simnibs.read_msh`` when simnibs is importable, else meshio.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"mesh file {path} does not exist")
    if backend not in ("auto", "simnibs", "meshio"):
        raise MeshError(f"backend {backend!r} unknown; allowed: 'auto', 'simnibs', 'meshio'")
    if backend in ("auto", "simnibs"):
        try:
            import simnibs  # noqa: F401
        except ImportError:
            if backend == "simnibs":
                raise MeshError("backend='simnibs' but simnibs is not importable (it is not on PyPI; "
                                "install it from simnibs.org) — use backend='meshio'") from None
        else:  # pragma: no cover - needs simnibs installed
            return _from_simnibs(simnibs.read_msh(str(path)), str(path))
    try:
        m = _read_meshio(path)
    except (Exception, SystemExit) as exc:  # meshio raises many types for bad files
        raise MeshError(f"mesh file {path}: meshio could not read it ({type(exc).__name__}: {exc})") from None
    return _from_meshio(m, str(path))


def write_mesh(path, nodes_mm, tetra, tetra_tag, element_data=None, node_data=None, triangle=None,
               triangle_tag=None) -> Path:
    """Write a gmsh-2.2 binary ``.msh`` like SimNIBS does (for exports and tests).

    ``element_data`` maps names to arrays over tetrahedra (triangles get zeros, or give a
    ``{"tetra": ..., "triangle": ...}`` dict); ``node_data`` maps names to per-node arrays.
    """
    import meshio  # heavy: meshio (~0.8 s), only for SimNIBS meshes
    nodes = np.asarray(nodes_mm, float)
    tetra = np.asarray(tetra, int)
    cells, phys = [], []
    tri = None if triangle is None else np.asarray(triangle, int)
    if tri is not None and len(tri):
        cells.append(("triangle", tri))
        phys.append(np.asarray(triangle_tag if triangle_tag is not None else np.full(len(tri), 1002), int))
    cells.append(("tetra", tetra))
    phys.append(np.asarray(tetra_tag, int))
    cell_data = {"gmsh:physical": phys, "gmsh:geometrical": [p.copy() for p in phys]}
    for name, value in (element_data or {}).items():
        if isinstance(value, dict):
            parts = [np.asarray(value[t]) for t, _ in cells]
        else:
            value = np.asarray(value, float)
            parts = []
            for t, c in cells:
                parts.append(value if t == "tetra" else np.zeros((len(c),) + value.shape[1:]))
        cell_data[name] = parts
    m = meshio.Mesh(nodes, cells, cell_data=cell_data,
                    point_data={k: np.asarray(v, float) for k, v in (node_data or {}).items()})
    path = Path(path)
    # binary: meshio's ASCII gmsh writer prints numpy-2 scalars as 'np.float64(...)'
    meshio.write(path, m, file_format="gmsh22", binary=True)
    return path


# --- sampling -------------------------------------------------------------------------------

def _tissue_selection(mesh: FieldMesh, tissues):
    if tissues is None:
        return np.ones(len(mesh.tetra), bool)
    sel = np.isin(mesh.tetra_tag, list(tissues))
    if not sel.any():
        raise MeshError(f"no tetrahedra with tissue tags {list(tissues)} in {mesh.source or 'the mesh'}; "
                        f"tags present: {mesh.tissues()} (SimNIBS: 1 WM, 2 GM, 3 CSF, 4 bone, 5 scalp)")
    return sel


def _tet_volumes(nodes, tets):
    p = nodes[tets]
    return np.abs(np.einsum("ij,ij->i", np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), p[:, 3] - p[:, 0])) / 6


def _barycentric(nodes, tets, points):
    """Barycentric coordinates (n_points, 4) of each point in its paired tetrahedron."""
    p = nodes[tets]                                        # (n, 4, 3)
    T = np.stack([p[:, 0] - p[:, 3], p[:, 1] - p[:, 3], p[:, 2] - p[:, 3]], axis=-1)   # (n, 3, 3)
    lam = np.linalg.solve(T, (points - p[:, 3])[..., None])[..., 0]
    return np.concatenate([lam, 1 - lam.sum(axis=1, keepdims=True)], axis=1)


def sample_field(mesh: FieldMesh, points_mm, field: str = "E", tissues=(2,), method: str = "linear",
                 radius_mm: float = 5.0, k_candidates: int = 24):
    """Sample a mesh field at points.

    Parameters
    ----------
    mesh : FieldMesh
    points_mm : (n, 3) array in the mesh's frame (mm)
    field : str
        Element-data (e.g. ``"E"``, ``"magnE"``) or node-data (e.g. ``"v"``) name.
    tissues : iterable of int or None
        Tetrahedron tags to sample from (SimNIBS GM = 2); ``None`` = all.
    method : ``"linear"`` | ``"nearest"`` | ``"mean"``
    radius_mm : float
        Radius of the ``"mean"`` method.

    Returns
    -------
    values : (n, ...) array
    distance_mm : (n,) distance to the nearest tissue element centroid (0 inside for linear)
    """

    if method not in ("linear", "nearest", "mean"):
        raise MeshError(f"method {method!r} unknown; allowed: 'linear', 'nearest', 'mean'")
    pts = np.atleast_2d(np.asarray(points_mm, float))
    if pts.shape[1] != 3 or not np.all(np.isfinite(pts)):
        raise MeshError(f"points_mm must be a finite (n, 3) array; got shape {pts.shape}")
    if len(mesh.tetra) == 0:
        raise MeshError(f"{mesh.source or 'the mesh'} has no tetrahedra to sample from")
    sel = _tissue_selection(mesh, tissues)
    tets = mesh.tetra[sel]
    nodes = mesh.nodes_mm
    centroids = nodes[tets].mean(axis=1)
    tree = cKDTree(centroids)
    dist, nearest = tree.query(pts)

    if field in mesh.element_data:
        elem = np.asarray(mesh.element_data[field]["tetra"])[sel]
        node_vals = None
    elif field in mesh.node_data:
        node_vals = np.asarray(mesh.node_data[field])
        elem = node_vals[tets].mean(axis=1)
    else:
        raise MeshError(f"field {field!r} not in {mesh.source or 'the mesh'}; fields: {mesh.fields}")

    out = elem[nearest].astype(float)
    if method == "mean":
        vol = _tet_volumes(nodes, tets)
        for i, idx in enumerate(tree.query_ball_point(pts, r=radius_mm)):
            if idx:
                w = vol[idx]
                out[i] = np.tensordot(w, elem[idx], axes=(0, 0)) / w.sum()
        return out, dist
    if method == "nearest":
        return out, dist

    # linear: node values (given, or element values volume-averaged onto the tissue's nodes)
    if node_vals is None:
        vol = _tet_volumes(nodes, tets)
        flat = tets.ravel()
        w = np.repeat(vol, 4)
        vals2 = elem.reshape(len(elem), -1)
        node_sum = np.zeros((len(nodes), vals2.shape[1]))
        for j in range(vals2.shape[1]):
            node_sum[:, j] = np.bincount(flat, w * np.repeat(vals2[:, j], 4), minlength=len(nodes))
        wsum = np.bincount(flat, w, minlength=len(nodes))
        node_vals = (node_sum / np.maximum(wsum, 1e-300)[:, None]).reshape((len(nodes),) + elem.shape[1:])
    k = min(k_candidates, len(tets))
    _, cand = tree.query(pts, k=k)
    cand = cand.reshape(len(pts), k)
    inside = np.zeros(len(pts), bool)
    for j in range(k):
        todo = ~inside
        if not todo.any():
            break
        lam = _barycentric(nodes, tets[cand[todo, j]], pts[todo])
        ok = np.all(lam >= -1e-9, axis=1)
        rows = np.flatnonzero(todo)[ok]
        if rows.size:
            tv = node_vals[tets[cand[rows, j]]]                      # (m, 4, ...)
            out[rows] = np.einsum("mi,mi...->m...", lam[ok], tv)
            inside[rows] = True
    dist = np.where(inside, 0.0, dist)
    return out, dist


def sample_regions(mesh, connectome="tvb76", field: str = "E", tissues=(2,), method: str = "linear",
                   radius_mm: float = 5.0, affine=None, m2m_dir=None, scale: float = 1.0) -> xr.Dataset:
    """Sample a SimNIBS field at a connectome's region centres, with its inward normal component.

    Parameters
    ----------
    mesh : FieldMesh | str | Path
        A mesh or a ``.msh`` path (read with :func:`read_mesh`).
    connectome : Connectome | str
    field : str
        Vector field (``"E"``) for ``E``/``E_n``/``E_mag``; a scalar field (``"magnE"``) gives ``value``.
    affine : (4, 4) array, optional
        Maps connectome (MNI-like RAS mm) coordinates to the mesh's subject mm; vectors use its
        linear part (re-normalised). Identity when omitted (mesh already in MNI space).
    m2m_dir : path, optional
        SimNIBS head-model folder; with ``simnibs`` importable, centres are mapped with
        ``simnibs.mni2subject_coords`` (orientations are then used unrotated).
    scale : float
        Multiplies the field, e.g. ``1 / current_mA`` for a per-mA field.

    Returns
    -------
    xarray.Dataset over ``region``: ``E`` (region, axis), ``E_n`` (inward; > 0 depolarises) and
    ``E_mag`` for vector fields, else ``value``; ``distance_mm`` to the nearest tissue element.
    """

    if not isinstance(mesh, FieldMesh):
        mesh = read_mesh(mesh)
    con = connectome if isinstance(connectome, Connectome) else catalog.load(connectome)
    centres = con.centres.astype(float)
    orient = con.orientations
    if m2m_dir is not None:
        try:
            import simnibs  # optional: SimNIBS is not a dependency (pip cannot install it)
        except ImportError:
            raise MeshError("m2m_dir needs simnibs (simnibs.mni2subject_coords); it is not importable — "
                            "give an affine (MNI -> subject mm) instead") from None
        centres = np.asarray(simnibs.mni2subject_coords(centres, str(m2m_dir)))  # pragma: no cover
    elif affine is not None:
        A = np.asarray(affine, float)
        if A.shape != (4, 4) or not np.all(np.isfinite(A)):
            raise MeshError(f"affine must be a finite 4x4 matrix, got shape {A.shape}")
        centres = centres @ A[:3, :3].T + A[:3, 3]
        if orient is not None:
            orient = orient @ A[:3, :3].T
    values, dist = sample_field(mesh, centres, field, tissues, method, radius_mm)
    values = values * float(scale)
    coords = {"region": con.labels, "axis": ["x", "y", "z"]}
    attrs = {"source": mesh.source, "field": field, "method": method, "tissues": str(list(tissues or [])),
             "frame": "mesh (subject) mm axes", "units": "V/m" if field.startswith(("E", "magnE")) else "",
             "normal_convention": "n = -orientation (inward); E_n > 0 depolarises the soma"}
    data = {"distance_mm": (("region",), dist, {"units": "mm"})}
    if values.ndim == 2 and values.shape[1] == 3:
        data["E"] = (("region", "axis"), values, {"units": "V/m"})
        data["E_mag"] = (("region",), np.linalg.norm(values, axis=1), {"units": "V/m"})
        if orient is None or not np.all(np.linalg.norm(orient, axis=1) > 0.5):
            # no orientations: radial from the tissue's centre, pointing outward
            orient = centres - mesh.nodes_mm[np.unique(mesh.tetra[_tissue_selection(mesh, tissues)])].mean(axis=0)
            attrs["orientation_source"] = "radial from the tissue centroid"
        else:
            attrs["orientation_source"] = "connectome"
        n = -orient / np.maximum(np.linalg.norm(orient, axis=1, keepdims=True), 1e-12)
        data["E_n"] = (("region",), np.einsum("rk,rk->r", values, n),
                       {"units": "V/m", "long_name": "inward normal field (> 0 depolarises)"})
    else:
        data["value"] = (("region",), values.reshape(len(values), -1)[:, 0])
    return xr.Dataset(data, coords=coords, attrs=attrs)
