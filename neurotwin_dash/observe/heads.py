"""Head models: conductivities, electrodes on the scalp, the offline template BEM and its cortex.

Science in docs/science.md §10. Two heads are built in:

* ``"sphere"``: four concentric shells (brain, CSF, skull, scalp) fitted to the montage
  (:func:`neurotwin_dash.observe.forward.forward_model` does the fit);
* ``"template_bem"``: a three-layer boundary-element head from the fsaverage surfaces that MNE
  ships in its wheel (scalp and inner skull; the outer skull derived half-way between them),
  solved once with :func:`mne.make_bem_solution` and cached on disk.

A path to a ``*-bem-sol.fif`` (fsaverage MRI frame) is accepted as a head too.

Electrodes are always moved onto the outer surface of the head that is used (radially onto the
scalp sphere; to the nearest point of the BEM scalp mesh); an electrode farther than
:data:`MAX_ELECTRODE_DISTANCE_MM` from the head is an error naming it.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from functools import lru_cache
from pathlib import Path

import mne
import numpy as np

__all__ = [
    "ForwardError", "HeadError", "HEADS", "SPHERE_RELATIVE_RADII", "CONDUCTIVITIES", "MAX_ELECTRODE_DISTANCE_MM",
    "TEMPLATE_N_TRIANGLES", "CORTEX_MARGIN_MM", "conductivities", "head_kind", "project_to_sphere",
    "closest_point_on_mesh", "check_electrode_distances", "place_on_cortex", "keep_inside", "template_surfaces", "template_bem", "template_cortex", "mri_to_head",
    "head_to_mri", "bem_cache_dir",
]

#: head names accepted everywhere a head is chosen (API, CLI ``--head``, dashboards); a path to a
#: ``*-bem-sol.fif`` is accepted too.
HEADS = ("sphere", "template_bem")
#: brain / CSF / skull / scalp radii relative to the scalp (MNE's four-shell defaults)
SPHERE_RELATIVE_RADII = (0.90, 0.92, 0.97, 1.0)
#: conductivities (S/m), innermost layer first; "eeg" is MNE's default set (the EEG observer),
#: "tes" the tES set of docs/science.md §7 (the default for stimulation fields). Three-layer
#: heads have no CSF layer.
CONDUCTIVITIES = {
    ("sphere", "eeg"): (0.33, 1.0, 0.004, 0.33),
    ("sphere", "tes"): (0.33, 1.65, 0.01, 0.43),
    ("bem", "eeg"): (0.33, 0.0042, 0.33),
    ("bem", "tes"): (0.33, 0.01, 0.43),
}
#: an electrode farther than this from the head's outer surface is refused (another head or units)
MAX_ELECTRODE_DISTANCE_MM = 30.0
#: triangles per surface of the template BEM (2,562 vertices would take minutes on 2 cores)
TEMPLATE_N_TRIANGLES = 2560
#: template-cortex dipoles are kept at least this far inside the inner skull
CORTEX_MARGIN_MM = 5.0
#: the derived outer skull lies at this fraction of the way from inner skull to scalp
OUTER_SKULL_FRACTION = 0.5
#: and at most this far outside the inner skull (adult skull: 5-10 mm; caps the skull where the
#: template scalp runs down the neck, far from the inner skull)
MAX_SKULL_THICKNESS_MM = 10.0
#: and at least this far from either neighbour surface
MIN_LAYER_GAP_MM = 2.0
_BEM_VERSION = "1"      # bump when the construction changes (invalidates cached solutions)


class ForwardError(ValueError):
    """Invalid forward-model or head input; the message names the option or electrode and what is allowed."""


#: the name used in this module's messages and docs; one class, so callers catch either
HeadError = ForwardError


def head_kind(head) -> str:
    """``"sphere"``, ``"bem"`` (template or a file) for a head argument; raises on an unknown one."""
    if isinstance(head, mne.bem.ConductorModel):
        return "sphere" if head["is_sphere"] else "bem"
    if isinstance(head, Path) or (isinstance(head, str) and head not in HEADS):
        p = Path(head)
        if not str(p).endswith(".fif"):
            raise HeadError(f"head {str(head)!r} unknown; allowed: {', '.join(HEADS)} or a path to a "
                            f"*-bem-sol.fif file")
        if not p.exists():
            raise HeadError(f"head: BEM solution file {str(p)!r} does not exist")
        return "bem"
    if head == "sphere":
        return "sphere"
    if head == "template_bem":
        return "bem"
    raise HeadError(f"head {head!r} unknown; allowed: {', '.join(HEADS)} or a path to a *-bem-sol.fif file")


def conductivities(kind: str, conductivity="eeg") -> tuple:
    """Conductivities (S/m, innermost first) for a head kind and ``"eeg"``, ``"tes"`` or a tuple."""
    n = 4 if kind == "sphere" else 3
    if isinstance(conductivity, str):
        if (kind, conductivity) not in CONDUCTIVITIES:
            raise HeadError(f"conductivity {conductivity!r} unknown; allowed: 'eeg', 'tes' or {n} values in S/m")
        return CONDUCTIVITIES[(kind, conductivity)]
    sig = tuple(float(s) for s in conductivity)
    if len(sig) != n or not all(np.isfinite(sig)) or min(sig) <= 0:
        raise HeadError(f"conductivity for a {kind} head must be {n} positive values in S/m "
                        f"(innermost first); got {conductivity!r}")
    return sig


def check_electrode_distances(names, dist_mm, surface: str):
    far = [(n, d) for n, d in zip(names, dist_mm) if d > MAX_ELECTRODE_DISTANCE_MM]
    if far:
        listed = ", ".join(f"{n} ({d:.0f} mm)" for n, d in far)
        raise HeadError(f"electrodes {listed} lie more than {MAX_ELECTRODE_DISTANCE_MM:g} mm from the "
                        f"{surface}: they belong to another head or are not in metres")


def project_to_sphere(rr, r0, radius, names=None):
    """Move points radially (from ``r0``) onto the sphere of ``radius`` (metres).

    Returns
    -------
    projected : ndarray (n, 3)
    moved_mm : ndarray (n,)
        How far each point moved.
    """
    rr = np.atleast_2d(np.asarray(rr, float))
    d = rr - np.asarray(r0, float)
    dist = np.linalg.norm(d, axis=1)
    if np.any(dist < 1e-9):
        raise HeadError("an electrode lies at the sphere centre; it cannot be projected")
    moved = np.abs(dist - radius) * 1000.0
    check_electrode_distances(names if names is not None else range(len(rr)), moved, "scalp sphere")
    return np.asarray(r0, float) + d * (radius / dist)[:, None], moved


def closest_point_on_mesh(points, rr, tris):
    """Closest point of a triangle mesh to each point (Ericson 2005, *Real-Time Collision Detection* §5.1.5).

    Returns
    -------
    closest : ndarray (n, 3)
    distance : ndarray (n,)
    """
    points = np.atleast_2d(np.asarray(points, float))
    a, b, c = rr[tris[:, 0]], rr[tris[:, 1]], rr[tris[:, 2]]
    out = np.empty_like(points)
    dist = np.empty(len(points))
    ab, ac = b - a, c - a
    for i, p in enumerate(points):
        ap, bp, cp = p - a, p - b, p - c
        d1, d2 = np.einsum("ij,ij->i", ab, ap), np.einsum("ij,ij->i", ac, ap)
        d3, d4 = np.einsum("ij,ij->i", ab, bp), np.einsum("ij,ij->i", ac, bp)
        d5, d6 = np.einsum("ij,ij->i", ab, cp), np.einsum("ij,ij->i", ac, cp)
        va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
        denom = va + vb + vc
        denom = np.where(np.abs(denom) < 1e-30, 1e-30, denom)
        v, w = vb / denom, vc / denom                                   # interior by default
        q = a + ab * v[:, None] + ac * w[:, None]
        # the Voronoi regions of vertices and edges, in the order of the reference algorithm
        cases = [
            (vc <= 0) & (d1 >= 0) & (d3 <= 0), (vb <= 0) & (d2 >= 0) & (d6 <= 0),
            (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0),
        ]
        with np.errstate(divide="ignore", invalid="ignore"):
            e_ab = a + ab * np.clip(d1 / (d1 - d3), 0, 1)[:, None]
            e_ac = a + ac * np.clip(d2 / (d2 - d6), 0, 1)[:, None]
            e_bc = b + (c - b) * np.clip((d4 - d3) / ((d4 - d3) + (d5 - d6)), 0, 1)[:, None]
        q = np.where(cases[2][:, None], e_bc, q)
        q = np.where(cases[1][:, None], e_ac, q)
        q = np.where(cases[0][:, None], e_ab, q)
        q = np.where(((d1 <= 0) & (d2 <= 0))[:, None], a, q)
        q = np.where(((d3 >= 0) & (d4 <= d3))[:, None], b, q)
        q = np.where(((d6 >= 0) & (d5 <= d6))[:, None], c, q)
        q = np.nan_to_num(q, nan=np.inf)
        dd = np.linalg.norm(q - p, axis=1)
        k = int(np.argmin(dd))
        out[i], dist[i] = q[k], dd[k]
    return out, dist


# --- frames ------------------------------------------------------------------------------

def _mne_fsaverage_dir() -> Path:
    return Path(mne.__file__).parent / "data" / "fsaverage"


@lru_cache(maxsize=1)
def _head_mri_t() -> np.ndarray:
    return np.asarray(mne.read_trans(_mne_fsaverage_dir() / "fsaverage-trans.fif")["trans"], float)


def head_to_mri(rr_m) -> np.ndarray:
    """MNE head frame (m) → fsaverage MRI surface RAS (m), by the transform MNE ships."""
    t = _head_mri_t()
    return np.atleast_2d(rr_m) @ t[:3, :3].T + t[:3, 3]


def mri_to_head(rr_m, vectors: bool = False) -> np.ndarray:
    """fsaverage MRI surface RAS (m) → MNE head frame (m); ``vectors=True`` rotates only."""
    t = np.linalg.inv(_head_mri_t())
    p = np.atleast_2d(rr_m) @ t[:3, :3].T
    return p if vectors else p + t[:3, 3]


# --- the template BEM --------------------------------------------------------------------

def _file_digest(*paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]


@lru_cache(maxsize=2)
def template_surfaces(n_triangles: int = TEMPLATE_N_TRIANGLES) -> dict:
    """Scalp, outer skull and inner skull of the template head (fsaverage MRI frame, metres).

    The scalp (``fsaverage-head.fif``) and inner skull (``fsaverage-inner_skull-bem.fif``) come
    from MNE's wheel and are decimated to ``n_triangles`` each; the outer skull is the inner skull
    moved outward along rays from its centroid to :data:`OUTER_SKULL_FRACTION` of the way to the
    scalp, at most :data:`MAX_SKULL_THICKNESS_MM` thick (kept :data:`MIN_LAYER_GAP_MM` from both). Returns ``{name: (rr, tris)}`` for
    ``outer_skin``, ``outer_skull``, ``inner_skull`` plus ``gap_mm`` (inner skull → scalp).
    """
    d = _mne_fsaverage_dir()
    head = mne.read_bem_surfaces(d / "fsaverage-head.fif", verbose=False)[0]
    inner = mne.read_bem_surfaces(d / "fsaverage-inner_skull-bem.fif", verbose=False)[0]
    scalp_rr, scalp_tri = mne.decimate_surface(head["rr"], head["tris"], n_triangles, verbose=False)
    in_rr, in_tri = mne.decimate_surface(inner["rr"], inner["tris"], n_triangles, verbose=False)
    centre = in_rr.mean(axis=0)
    # distance from the centroid to the scalp along each inner-skull vertex's ray: the scalp
    # point nearest to that ray (the scalp is star-shaped about the centroid)
    u = (in_rr - centre) / np.linalg.norm(in_rr - centre, axis=1, keepdims=True)
    s = scalp_rr - centre
    s_len = np.linalg.norm(s, axis=1)
    cosang = (u @ s.T) / s_len[None, :]
    best = np.argmax(cosang, axis=1)
    r_scalp = s_len[best] * cosang[np.arange(len(u)), best]
    r_in = np.linalg.norm(in_rr - centre, axis=1)
    gap = r_scalp - r_in
    margin = MIN_LAYER_GAP_MM / 1000.0
    thick = np.minimum(OUTER_SKULL_FRACTION * gap, MAX_SKULL_THICKNESS_MM / 1000.0)
    r_out = np.clip(r_in + thick, r_in + margin, np.maximum(r_scalp - margin, r_in + margin))
    out_rr = centre + u * r_out[:, None]
    return {"outer_skin": (scalp_rr, scalp_tri), "outer_skull": (out_rr, in_tri.copy()),
            "inner_skull": (in_rr, in_tri), "gap_mm": gap * 1000.0,
            "source": _file_digest(d / "fsaverage-head.fif", d / "fsaverage-inner_skull-bem.fif")}


def bem_cache_dir() -> Path:
    """Disk cache of BEM solutions: ``$NEUROTWIN_CACHE/bem`` (or ``~/.cache/neurotwin_dash/bem``)."""
    root = os.environ.get("NEUROTWIN_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "neurotwin_dash") / "bem"


def template_bem(sigmas=CONDUCTIVITIES[("bem", "eeg")], cache: bool = True, verbose=False):
    """The template three-layer BEM solution (``mne.bem.ConductorModel``), built once and cached.

    Parameters
    ----------
    sigmas : 3 floats
        Brain, skull, scalp conductivities (S/m).
    cache : bool
        Read and write the solution under :func:`bem_cache_dir` (atomic write: a temporary file
        in the same folder renamed into place). The key holds the MNE files' digest, the
        decimation, the outer-skull rule, the conductivities, this module's and MNE's versions.

    Returns
    -------
    mne.bem.ConductorModel
    """
    sigmas = tuple(float(s) for s in sigmas)
    key = hashlib.sha256(repr((_BEM_VERSION, mne.__version__, TEMPLATE_N_TRIANGLES, OUTER_SKULL_FRACTION, MAX_SKULL_THICKNESS_MM,
                               MIN_LAYER_GAP_MM, sigmas,
                               _file_digest(_mne_fsaverage_dir() / "fsaverage-head.fif",
                                            _mne_fsaverage_dir() / "fsaverage-inner_skull-bem.fif")))
                         .encode()).hexdigest()[:24]
    path = bem_cache_dir() / f"template_bem_{key}-sol.fif"
    if cache and path.exists():
        try:
            return mne.read_bem_solution(path, verbose=False)
        except (OSError, ValueError, RuntimeError):
            pass                                           # a damaged file is rebuilt and replaced
    surf = template_surfaces(TEMPLATE_N_TRIANGLES)
    with tempfile.TemporaryDirectory() as subjects_dir:
        bem_dir = Path(subjects_dir) / "fsaverage" / "bem"
        bem_dir.mkdir(parents=True)
        for name in ("inner_skull", "outer_skull", "outer_skin"):
            rr, tris = surf[name]
            mne.write_surface(str(bem_dir / f"{name}.surf"), rr * 1000.0, tris, overwrite=True)
        model = mne.make_bem_model("fsaverage", ico=None, conductivity=sigmas, subjects_dir=subjects_dir,
                                   verbose=verbose)
    sol = mne.make_bem_solution(model, verbose=verbose)
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix="-sol.fif")
            os.close(fd)
        except OSError:
            return sol                                      # a read-only cache: use the solution unsaved
        try:
            mne.write_bem_solution(tmp, sol, overwrite=True, verbose=False)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):                         # our temporary file, left by a failed write
                os.unlink(tmp)
    return sol


# --- the template cortex -----------------------------------------------------------------

@lru_cache(maxsize=1)
def template_cortex() -> dict:
    """fsaverage5 pial surface (nilearn, offline): vertices (MRI m), outward unit normals, hemisphere.

    Returns
    -------
    dict
        ``rr`` (n, 3) metres, ``nn`` (n, 3) outward unit normals (area-weighted from the
        triangles), ``hemi`` (n,) ``"L"``/``"R"``.
    """
    import nibabel as nib  # heavy: nibabel + nilearn.datasets (~2 s), only for the template cortex
    from nilearn import datasets
    fs = datasets.fetch_surf_fsaverage("fsaverage5")
    rrs, nns, hemis = [], [], []
    for hemi, key in (("L", "pial_left"), ("R", "pial_right")):
        rr, tris = (np.asarray(a) for a in nib.load(fs[key]).agg_data())
        rr = rr.astype(float) / 1000.0
        tri_n = np.cross(rr[tris[:, 1]] - rr[tris[:, 0]], rr[tris[:, 2]] - rr[tris[:, 0]])
        nn = np.zeros_like(rr)
        for k in range(3):
            np.add.at(nn, tris[:, k], tri_n)
        nn /= np.maximum(np.linalg.norm(nn, axis=1, keepdims=True), 1e-30)
        rrs.append(rr), nns.append(nn), hemis.append(np.full(len(rr), hemi))
    return {"rr": np.vstack(rrs), "nn": np.vstack(nns), "hemi": np.concatenate(hemis)}


#: pial vertices within this radius of a region's point give its (mean) normal
NORMAL_RADIUS_MM = 10.0


def _solid_angle_sum(points, rr, tris):
    """Total solid angle (/4π) of a closed mesh seen from each point: 1 inside, 0 outside
    (van Oosterom & Strackee 1983)."""
    out = np.empty(len(points))
    for i, p in enumerate(points):
        a, b, c = rr[tris[:, 0]] - p, rr[tris[:, 1]] - p, rr[tris[:, 2]] - p
        la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
        num = np.einsum("ij,ij->i", a, np.cross(b, c))
        den = (la * lb * lc + np.einsum("ij,ij->i", a, b) * lc + np.einsum("ij,ij->i", a, c) * lb
               + np.einsum("ij,ij->i", b, c) * la)
        out[i] = 2.0 * np.arctan2(num, den).sum() / (4 * np.pi)
    return out


@lru_cache(maxsize=1)
def _inner_skull_full():
    s = mne.read_bem_surfaces(_mne_fsaverage_dir() / "fsaverage-inner_skull-bem.fif", verbose=False)[0]
    return s["rr"], s["tris"]


def _signed_depth(rr_m, surf_rr, surf_tris):
    """Distance (m) of points to a closed surface's vertices, positive inside, negative outside."""
    d = np.sqrt(((rr_m[:, None, :] - surf_rr[None, :, :]) ** 2).sum(axis=2)).min(axis=1)
    inside = np.abs(_solid_angle_sum(rr_m, surf_rr, surf_tris)) > 0.5
    return np.where(inside, d, -d)


def keep_inside(rr_m, margin_mm, surface=None):
    """Move points in 0.5-mm steps toward a closed surface's centroid until they are at least
    ``margin_mm`` inside it (default surface: MNE's full-resolution fsaverage inner skull).

    Returns
    -------
    rr : ndarray (n, 3)
    moved_mm : ndarray (n,)
    """
    surf_rr, surf_tris = surface if surface is not None else _inner_skull_full()
    rr = np.array(rr_m, float)
    centroid = surf_rr.mean(axis=0)
    moved = np.zeros(len(rr))
    todo = np.arange(len(rr))
    for _ in range(400):
        todo = todo[_signed_depth(rr[todo], surf_rr, surf_tris) < margin_mm / 1000.0]
        if not len(todo):
            return rr, moved
        step = centroid - rr[todo]
        rr[todo] += 0.0005 * step / np.linalg.norm(step, axis=1, keepdims=True)
        moved[todo] += 0.5
    raise HeadError(f"could not place {len(todo)} source(s) {margin_mm:g} mm inside the inner skull")


def place_on_cortex(centres_mm, hemisphere=None, surface_mm=None, inner=None):
    """Put region centres on the template cortex (fsaverage5 pial) with the surface's normals.

    Parameters
    ----------
    centres_mm : array (n, 3)
        Region centres, RAS millimetres of the connectome's frame.
    hemisphere : array of "L"/"R", optional
        Restricts each region to its own hemisphere's surface.
    surface_mm : array (m, 3), optional
        The connectome's own cortex vertices (same frame as the centres). When given, the centres
        are first aligned to the template by matching the two surfaces' bounding boxes (a per-axis
        scale and shift; tvb-data's centres are not MNI coordinates); otherwise they are taken as
        MNI/fsaverage millimetres.
    inner : (rr, tris), optional
        The inner skull (MRI metres) the dipoles must lie inside; MNE's fsaverage one by default.

    Returns
    -------
    dict
        ``rr`` (n, 3) MRI metres of the dipoles (at least :data:`CORTEX_MARGIN_MM` inside the
        inner skull), ``nn`` (n, 3) outward unit normals (mean pial normal within
        :data:`NORMAL_RADIUS_MM`), ``snap_mm`` (n,) distance from the aligned centre to the
        cortex, ``moved_mm`` (n,) how far a point was then pulled inside the inner skull, and
        ``alignment`` (text).
    """
    c = np.asarray(centres_mm, float) / 1000.0
    cortex = template_cortex()
    if surface_mm is not None:
        s = np.asarray(surface_mm, float) / 1000.0
        lo, hi = s.min(axis=0), s.max(axis=0)
        tlo, thi = cortex["rr"].min(axis=0), cortex["rr"].max(axis=0)
        scale = (thi - tlo) / (hi - lo)
        c = tlo + (c - lo) * scale
        alignment = ("bounding box of the connectome's cortex -> fsaverage5 pial, per-axis scale "
                     + ", ".join(f"{x:.3f}" for x in scale))
    else:
        alignment = "centres taken as MNI/fsaverage mm"
    rr = np.empty_like(c)
    nn = np.empty_like(c)
    snap = np.empty(len(c))
    for i, p in enumerate(c):
        mask = np.ones(len(cortex["rr"]), bool)
        if hemisphere is not None and str(hemisphere[i]).upper()[:1] in ("L", "R"):
            mask = cortex["hemi"] == str(hemisphere[i]).upper()[:1]
        idx = np.flatnonzero(mask)
        d = np.linalg.norm(cortex["rr"][idx] - p, axis=1)
        k = idx[int(d.argmin())]
        rr[i], snap[i] = cortex["rr"][k], float(d.min()) * 1000.0
        near = idx[np.linalg.norm(cortex["rr"][idx] - rr[i], axis=1) < NORMAL_RADIUS_MM / 1000.0]
        n = cortex["nn"][near].sum(axis=0)
        nn[i] = n / max(np.linalg.norm(n), 1e-12)
    rr, moved = keep_inside(rr, CORTEX_MARGIN_MM, inner)
    return {"rr": rr, "nn": nn, "snap_mm": snap, "moved_mm": moved, "alignment": alignment}
