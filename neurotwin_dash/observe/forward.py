"""EEG forward model: one current dipole per connectome region, seen by a montage.

The lead field ``L`` (sensors × regions, V per A·m) maps region dipole moments to scalp
potentials, ``x = L @ q`` (Sarvas 1987; Mosher, Leahy & Lewis 1999 for the multi-shell
sphere). It is computed with MNE-Python's ``make_forward_solution``:

* **Head model** – ``head=`` (docs/science.md §10; :mod:`neurotwin_dash.observe.heads`):

  - ``"sphere"`` (default): four concentric shells (brain/CSF/skull/scalp, relative radii
    0.90/0.92/0.97/1.00) fitted to the montage's electrodes with
    ``mne.make_sphere_model(r0="auto", head_radius="auto")``. Montages with fewer than 32
    electrodes (e.g. Starstim 8) cannot constrain a sphere fit, so the sphere is fitted to the
    10-05 template (``standard_1005``) instead; every layout that shares the template head then
    sees the same head.
  - ``"template_bem"``: the three-layer template BEM built offline from the fsaverage scalp and
    inner skull that MNE ships (:func:`~neurotwin_dash.observe.heads.template_bem`, cached).
  - a path to a ``*-bem-sol.fif`` in fsaverage's MRI frame.

  ``conductivity="eeg"`` (default; MNE's 0.33/1.0/0.004/0.33 S/m for the sphere,
  0.33/0.0042/0.33 for BEMs) or ``"tes"`` (the tES set, used by stimulation fields) or explicit
  values.
* **Electrodes on the scalp** – template montage positions do not lie on the model head's
  surface (with the fitted sphere, T7 sits inside the brain shell). Every electrode is moved onto
  the outer surface: radially onto the scalp sphere, or to the nearest point of the BEM scalp mesh;
  ``electrode_moved_mm`` says how far. An electrode more than 30 mm from the head is an error.
* **Coordinates** – connectome centres are RAS millimetres (see
  :mod:`neurotwin_dash.connectome`), but their origin and extent differ between datasets
  (tvb76's CoCoMac-derived centres sit ~20 mm anterior of MNI and are compressed: its V1
  centroid lies at y ≈ −65 mm; hcp80 and tvb66/68 are recentred voxel frames). Two
  placements, chosen with ``placement=``:

  - ``"fit"`` (default, sphere heads): centre-and-scale into the sphere — the centres'
    bounding-box centre goes to the sphere centre and the cloud is scaled isotropically so
    that the outermost centre lies at 90 % of the inner-skull radius (:data:`FIT_FRACTION`);
    axes are rotated like the fsaverage MRI → head transform (a ~3° tilt).
  - ``"mni"``: the centres are taken as MNI/fsaverage millimetres and mapped to MNE's head
    frame (RAS metres, origin between the pre-auricular points) by the fsaverage fiducials
    shipped with MNE (``mne/data/fsaverage/fsaverage-fiducials.fif``;
    ``get_ras_to_neuromag_trans``). Use it for centres truly in MNI space; BEM heads
    always use it.

  MNE's standard montages are stored in the same fsaverage frame, so electrodes and sources
  share one head. Centres outside the inner skull (less a 7 mm margin for the sphere, 5 mm for
  BEMs) are pulled inside; ``moved_mm`` reports how far each one moved (none with ``"fit"``).
* **Orientation** – ``orientation="auto"`` uses the template cortex normals with
  ``placement="cortex"`` (``orientation_source = "template_cortex"``), else the connectome's mean
  dipole orientations when it has them (``"connectome"``), else the radial direction from the
  sphere centre or the inner skull's centroid (``"radial"``). ``"radial"`` forces radial; an array (n_region, 3) in
  RAS gives them explicitly. Sign follows the data: a positive moment points along the
  orientation vector.
* **Reference** – the gain is reference-free (potential against infinity). Re-reference
  (average, or to a return electrode for tES reciprocity) downstream.

Both the fixed-orientation gain (``leadfield``: sensor × region) and the free-orientation
gain (``leadfield_vector``: sensor × region × axis, head-frame x/y/z) are returned; the
fixed one is the vector gain projected on the orientation. Results are cached on disk
(``$NEUROTWIN_CACHE`` or ``~/.cache/neurotwin_dash``) keyed by a hash of every input.
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import mne
import numpy as np
import xarray as xr

from .. import catalog
from ..catalog import cortex_surface
from ..connectome import Connectome
from . import heads
from .heads import HEADS, ForwardError

__all__ = [
    "ForwardError", "HEADS", "MIN_SPHERE_FIT_CHANNELS", "INNER_MARGIN_MM",
    "resolve_montage", "montage_info", "mni_to_head", "forward_model", "leadfield",
    "leadfield_vector", "gain_at_positions", "cache_dir", "PLACEMENTS", "FIT_FRACTION",
]

PLACEMENTS = ("fit", "mni", "cortex")
#: with placement="fit", the outermost centre lies at this fraction of the inner-skull radius.
FIT_FRACTION = 0.9

#: below this many electrodes the sphere is fitted to the 10-05 template instead.
MIN_SPHERE_FIT_CHANNELS = 32
#: sources are kept at least this far inside the inner-skull sphere.
INNER_MARGIN_MM = 7.0
_TEMPLATE_MONTAGE = "standard_1005"
_NAME_MONTAGE = "colin27_1005"    # where bare channel names are looked up
_VERSION = "4"                    # bump when the computation changes (invalidates the cache)


# --- montage and coordinates --------------------------------------------------------------

def resolve_montage(montage):
    """Return ``(DigMontage, name)`` for a catalog name, MNE name, DigMontage or channel list.

    Parameters
    ----------
    montage : str | mne.channels.DigMontage | sequence of str | mne.Info
        A data-catalog montage name (``"standard_1020"``, ``"biosemi64"``, ``"starstim8"``,
        ...), any MNE built-in montage name, a ``DigMontage``, an ``Info`` with a montage, or a
        list of 10-05 channel names (positions taken from ``colin27_1005``).
    """

    if isinstance(montage, mne.channels.DigMontage):
        return montage, "custom"
    if isinstance(montage, mne.Info):
        m = montage.get_montage()
        if m is None:
            raise ForwardError("montage: the given Info has no montage set (use info.set_montage)")
        return m, "info"
    if isinstance(montage, str):
        try:
            entry = catalog.describe(montage)
        except LookupError:
            entry = None
        if entry is not None:
            if entry["kind"] != "montage":
                raise ForwardError(f"montage {montage!r} is a {entry['kind']} in the catalog, not a montage")
            return catalog.load(montage), montage
        builtin = mne.channels.get_builtin_montages()
        if montage in builtin:
            return mne.channels.make_standard_montage(montage), montage
        raise ForwardError(
            f"montage {montage!r} unknown; allowed: catalog montages {catalog.names('montage')} "
            f"or MNE built-ins {builtin}"
        )
    if isinstance(montage, Sequence) and len(montage) and all(isinstance(c, str) for c in montage):
        m, _ = _subset_montage(list(montage), _NAME_MONTAGE)
        return m, "channels:" + ",".join(montage)
    raise ForwardError(f"montage must be a name, DigMontage, Info or list of channel names; got "
                       f"{type(montage).__name__}")


def montage_info(montage, sfreq: float = 1000.0):
    """An ``mne.Info`` with one EEG channel per montage electrode and the montage set.

    Channels are in the montage's order; positions are in MNE's head frame.
    """
    m, _ = resolve_montage(montage)
    info = mne.create_info(list(m.ch_names), float(sfreq), "eeg")
    info.set_montage(m, on_missing="raise", verbose=False)
    return info


def _subset_montage(channels, base_name):
    base = mne.channels.make_standard_montage(base_name)
    pos = base.get_positions()
    lookup = {c.lower(): c for c in pos["ch_pos"]}
    missing = [c for c in channels if c.lower() not in lookup]
    if missing:
        raise ForwardError(f"montage channels {missing} are not 10-05 names (known e.g. "
                           f"{list(pos['ch_pos'])[:10]})")
    if len(set(c.lower() for c in channels)) != len(channels):
        raise ForwardError("montage channel list contains duplicates")
    ch_pos = {c: pos["ch_pos"][lookup[c.lower()]] for c in channels}
    m = mne.channels.make_dig_montage(ch_pos=ch_pos, nasion=pos["nasion"], lpa=pos["lpa"],
                                      rpa=pos["rpa"], coord_frame=pos["coord_frame"])
    return m, base_name


@lru_cache(maxsize=1)
def _fsaverage_mri_head_t() -> np.ndarray:
    path = Path(mne.__file__).parent / "data" / "fsaverage" / "fsaverage-fiducials.fif"
    pts, _ = mne.io.read_fiducials(path, verbose=False)
    r = {int(p["ident"]): np.asarray(p["r"], float) for p in pts}
    # FIFF idents: 1 LPA, 2 nasion, 3 RPA
    return mne.transforms.get_ras_to_neuromag_trans(r[2], r[1], r[3])


def mni_to_head(points_mm, vectors: bool = False) -> np.ndarray:
    """Map RAS millimetres of an MNI-like frame to MNE head coordinates in metres.

    Uses the transform defined by the fsaverage fiducials shipped with MNE (head frame:
    x through the right pre-auricular point, y through the nasion, z up). With
    ``vectors=True`` only the rotation is applied and the unit length is kept.
    """
    t = _fsaverage_mri_head_t()
    p = np.atleast_2d(np.asarray(points_mm, float))
    if vectors:
        return p @ t[:3, :3].T
    return (p / 1000.0) @ t[:3, :3].T + t[:3, 3]


def _sphere_for(info, n_channels: int, sigmas=heads.CONDUCTIVITIES[("sphere", "eeg")]):
    if n_channels >= MIN_SPHERE_FIT_CHANNELS:
        fit_info, fitted_to = info, "montage"
    else:
        fit_info, fitted_to = montage_info(_TEMPLATE_MONTAGE), _TEMPLATE_MONTAGE
    sphere = mne.make_sphere_model(r0="auto", head_radius="auto", info=fit_info,
                                   relative_radii=heads.SPHERE_RELATIVE_RADII, sigmas=tuple(sigmas),
                                   verbose=False)
    return sphere, fitted_to


def _inner_radius(sphere) -> float:
    return float(min(layer["rad"] for layer in sphere["layers"]))


def cache_dir() -> Path:
    """Disk cache of lead fields: ``$NEUROTWIN_CACHE`` or ``~/.cache/neurotwin_dash``."""
    root = os.environ.get("NEUROTWIN_CACHE")
    path = Path(root) if root else Path.home() / ".cache" / "neurotwin_dash"
    return path / "leadfields"


def read_cached(path: Path, shape: tuple, cache: bool = True):
    """The array cached at ``path`` if ``cache`` is on, it loads and has ``shape``; else ``None``."""
    if not (cache and path.exists()):
        return None
    try:
        arr = np.load(path)
    except (OSError, ValueError):
        return None
    return arr if arr.shape == tuple(shape) else None


def write_cached(path: Path, arr: np.ndarray) -> None:
    """Store ``arr`` at ``path`` atomically (a temporary file renamed); a read-only cache is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, arr)
        os.replace(tmp, path)
    except OSError:
        pass


# --- the forward computation ------------------------------------------------------------

def gain_at_positions(rr_m, montage="standard_1020", head="sphere", sphere=None,
                      verbose=False, conductivity="eeg") -> xr.DataArray:
    """Free-orientation gain of arbitrary dipole positions (head frame, metres).

    Parameters
    ----------
    rr_m : array (n, 3)
        Dipole positions in MNE's head frame (metres), inside the head's inner skull.
    montage : see :func:`resolve_montage`
    head : ``"sphere"`` | ``"template_bem"`` | path | ConductorModel
    sphere : ConductorModel, optional
        A ready sphere model (skips the fit).
    conductivity : ``"eeg"`` | ``"tes"`` | values
        See :func:`neurotwin_dash.observe.heads.conductivities`.

    Returns
    -------
    xarray.DataArray (sensor, source, axis)
        V per A·m, reference-free; ``axis`` is head-frame x, y, z. Electrodes are on the scalp
        (``attrs["electrode_moved_mm"]``: how far each was moved there).
    """
    rr = np.atleast_2d(np.asarray(rr_m, float))
    if rr.ndim != 2 or rr.shape[1] != 3 or not np.all(np.isfinite(rr)):
        raise ForwardError(f"rr_m must be a finite (n, 3) array in metres; got shape {rr.shape}")
    if np.abs(rr).max() > 0.5:
        raise ForwardError("rr_m looks like millimetres (|coordinate| > 0.5); give metres in the head frame")
    m, _ = resolve_montage(montage)
    h = _setup_head(head if sphere is None else sphere, montage_info(m), len(m.ch_names), conductivity)
    src = rr if h["trans"] is None else heads.head_to_mri(rr)
    G = _free_gain(h["info"], h["bem"], h["trans"], src, verbose)
    return xr.DataArray(G, dims=("sensor", "source", "axis"),
                        coords={"sensor": list(h["info"].ch_names), "axis": ["x", "y", "z"]},
                        attrs={"units": "V/(A*m)", "reference": "none (infinity)",
                               "electrode_moved_mm": h["moved"].tolist()})


def _setup_head(head, info, n_channels, conductivity="eeg"):
    """The conductor, the MRI transform and an ``Info`` whose electrodes sit on its scalp.

    Returns a dict: ``kind`` ("sphere"/"bem"), ``bem``, ``trans`` (None for spheres, whose
    sources are head-frame; ``"fsaverage"`` for BEMs, whose sources are MRI-frame), ``info``
    (electrodes projected), ``moved`` (mm per electrode), ``sphere`` (or None), ``fitted_to``,
    ``sigmas``, ``key`` (what identifies the conductor in cache keys), ``centre`` (head-frame m:
    sphere centre or inner-skull centroid), ``inner`` ((rr, tris) of a BEM's inner skull, MRI m).
    """
    kind = heads.head_kind(head)
    info = info.copy()
    names = list(info.ch_names)
    ch_rr = np.array([ch["loc"][:3] for ch in info["chs"]])
    out = {"kind": kind, "sphere": None, "fitted_to": "", "inner": None}
    if kind == "sphere":
        if isinstance(head, mne.bem.ConductorModel):
            sphere, fitted_to = head, "given"
            sig = tuple(float(layer["sigma"]) for layer in sphere["layers"])
        else:
            sig = heads.conductivities("sphere", conductivity)
            sphere, fitted_to = _sphere_for(info, n_channels, sig)
        r0 = np.asarray(sphere["r0"], float)
        scalp = max(float(layer["rad"]) for layer in sphere["layers"])
        proj, moved = heads.project_to_sphere(ch_rr, r0, scalp, names)
        out.update(bem=sphere, trans=None, sphere=sphere, fitted_to=fitted_to, sigmas=sig, centre=r0,
                   key=["sphere", list(map(float, r0)), [float(la["rad"]) for la in sphere["layers"]], list(sig)])
    else:
        if isinstance(head, mne.bem.ConductorModel):
            bem, key = head, ["bem", "given", _hash(*[np.asarray(s_["rr"]) for s_ in head["surfs"]])]
        elif isinstance(head, str) and head == "template_bem":
            sig = heads.conductivities("bem", conductivity)
            bem, key = heads.template_bem(sig), ["template_bem", list(sig), heads.TEMPLATE_N_TRIANGLES]
        else:
            bem = mne.read_bem_solution(head, verbose=False)
            key = ["bem-file", str(Path(head).resolve()), Path(head).stat().st_mtime_ns, Path(head).stat().st_size]
        if bem["is_sphere"] or len(bem["surfs"]) != 3:
            raise ForwardError(f"head: EEG needs a three-layer BEM solution; {head!s} has "
                               f"{len(bem.get('surfs', []))} surface(s)")
        sig = tuple(float(s_["sigma"]) for s_ in bem["surfs"])[::-1]   # MNE stores outermost first
        surfs = {s_["id"]: s_ for s_ in bem["surfs"]}
        skin, inner = surfs[mne.io.constants.FIFF.FIFFV_BEM_SURF_ID_HEAD], surfs[mne.io.constants.FIFF.FIFFV_BEM_SURF_ID_BRAIN]
        close, dist = heads.closest_point_on_mesh(heads.head_to_mri(ch_rr), skin["rr"], skin["tris"])
        heads.check_electrode_distances(names, dist * 1000.0, "BEM scalp surface")
        proj, moved = heads.mri_to_head(close), dist * 1000.0
        out.update(bem=bem, trans="fsaverage", sigmas=sig, key=key,
                   centre=heads.mri_to_head(inner["rr"].mean(axis=0))[0], inner=(inner["rr"], inner["tris"]))
    for ch, p in zip(info["chs"], proj):
        ch["loc"][:3] = p
    out.update(info=info, moved=np.asarray(moved, float))
    return out


def _free_gain(info, bem, trans, rr_src, verbose) -> np.ndarray:
    """Gain (n_sensor, n_source, 3) of dipoles at rr_src (frame given by ``trans``)."""
    n = rr_src.shape[0]
    nn = np.tile([0.0, 0.0, 1.0], (n, 1))
    src = mne.setup_volume_source_space(pos=dict(rr=rr_src, nn=nn), mindist=0.0, exclude=0.0,
                                        add_interpolator=False, verbose=verbose)
    if src[0]["nuse"] != n:
        raise ForwardError(f"MNE kept {src[0]['nuse']} of {n} source positions")
    fwd = mne.make_forward_solution(info, trans=trans, src=src, bem=bem, meg=False, eeg=True,
                                    mindist=0.0, verbose=verbose)
    # head-frame free orientation (x, y, z per source); keep MNE's source order
    fwd = mne.convert_forward_solution(fwd, surf_ori=False, force_fixed=False, verbose=verbose)
    G = fwd["sol"]["data"].reshape(len(info.ch_names), n, 3)
    if fwd["src"][0]["nuse"] != n:
        raise ForwardError("forward solution dropped sources (outside the inner skull?)")
    return G


def _resolve_connectome(connectome):
    if isinstance(connectome, Connectome):
        return connectome
    if isinstance(connectome, str):
        obj = catalog.load(connectome)
        if not isinstance(obj, Connectome):
            raise ForwardError(f"connectome {connectome!r} is not a connectome in the catalog")
        return obj
    raise ForwardError(f"connectome must be a Connectome or catalog name; got {type(connectome).__name__}")


def _hash(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(np.ascontiguousarray(p, dtype=np.float64).tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"|")
    return h.hexdigest()[:24]


def _cortex_surface_mm(con):
    """The connectome's own cortex vertices (RAS mm) when tvb-data has them, else None."""
    try:
        return cortex_surface(con.name).vertices.values if con.name else None
    except (LookupError, OSError):
        return None


def forward_model(connectome="tvb76", montage="standard_1020", head="sphere", orientation="auto",
                  cache: bool = True, verbose=False, placement: str | None = None,
                  conductivity="eeg") -> xr.Dataset:
    """Forward model of a connectome's region dipoles for a montage (everything in one Dataset).

    Parameters
    ----------
    connectome : Connectome | str
        Region centres (RAS mm) and optional orientations. Catalog name allowed.
    montage : str | DigMontage | list of str | Info
        See :func:`resolve_montage`.
    head : ``"sphere"`` (default) | ``"template_bem"`` | path to ``*-bem-sol.fif`` | ConductorModel
    orientation : ``"auto"`` | ``"radial"`` | ``"connectome"`` | array (n_region, 3)
        ``auto``: template cortex normals with ``placement="cortex"``, else the connectome's
        orientations when present, else radial.
    cache : bool
        Read/write the disk cache (:func:`cache_dir`).
    placement : ``"fit"`` | ``"mni"`` | ``"cortex"``, optional
        How centres enter the head (module docstring); default ``"fit"`` for spheres and
        ``"cortex"`` for BEMs.
    conductivity : ``"eeg"`` (default) | ``"tes"`` | values (S/m, innermost first)

    Returns
    -------
    xarray.Dataset
        ``gain`` (sensor, region) and ``gain_vector`` (sensor, region, axis) in V/(A·m),
        reference-free; ``position`` (region, axis) head-frame metres of the dipoles used;
        ``orientation`` (region, axis) head-frame unit vectors; ``moved_mm`` (region): how far
        a centre was pulled inside the inner skull; ``sensor_position`` (sensor, axis) on the
        scalp; ``electrode_moved_mm`` (sensor): how far each electrode moved onto the scalp.
        attrs: head, conductivities, sphere r0/radii, orientation_source, n_moved, montage,
        connectome hash.
    """
    con = _resolve_connectome(connectome)
    m, mname = resolve_montage(montage)
    info0 = montage_info(m)
    n = con.n_regions
    centres = con.centres
    if not np.any(centres):
        raise ForwardError(f"connectome {con.name!r} has no centres (all zero); the forward model needs them")
    if placement is not None and placement not in PLACEMENTS:
        raise ForwardError(f"placement {placement!r} unknown; allowed: {', '.join(PLACEMENTS)}")
    if isinstance(orientation, str) and orientation not in ("auto", "radial", "connectome"):
        raise ForwardError(f"orientation {orientation!r} unknown; allowed: 'auto', 'radial', "
                           f"'connectome' or an array (n_region, 3)")
    h = _setup_head(head, info0, len(m.ch_names), conductivity)       # validates head + electrodes
    info, is_sphere = h["info"], h["kind"] == "sphere"
    sphere = h["sphere"]
    if placement is None:
        placement = "fit" if is_sphere else "cortex"
    if is_sphere and placement == "cortex":
        raise ForwardError("placement 'cortex' needs a BEM head (head='template_bem' or a file); "
                           "allowed for the sphere: 'fit', 'mni'")
    if not is_sphere and placement == "fit":
        raise ForwardError("placement 'fit' is for sphere heads; allowed for BEM heads: 'cortex', 'mni'")

    scale, cortex_nn, alignment = 1.0, None, ""
    r0 = np.asarray(h["centre"], float)
    moved = np.zeros(n)
    if is_sphere:
        if placement == "fit":
            box_centre = 0.5 * (centres.min(axis=0) + centres.max(axis=0))
            rel = mni_to_head(centres - box_centre, vectors=True)            # mm, head axes
            far = np.linalg.norm(rel, axis=1).max()
            if far <= 0:
                raise ForwardError(f"connectome {con.name!r}: all centres coincide; cannot place them")
            scale = FIT_FRACTION * _inner_radius(sphere) * 1000.0 / far      # mm per mm
            rr = r0 + rel * scale / 1000.0
        else:
            rr = mni_to_head(centres)
        limit = _inner_radius(sphere) - INNER_MARGIN_MM / 1000.0
        d = rr - r0
        dist = np.linalg.norm(d, axis=1)
        out = dist > limit
        rr[out] = r0 + d[out] * (limit / dist[out])[:, None]
        moved[out] = (dist[out] - limit) * 1000.0
        radial = d / np.maximum(dist, 1e-12)[:, None]
        rr_src = rr
    else:
        if placement == "cortex":
            placed = heads.place_on_cortex(centres, con.ds["hemisphere"].values, _cortex_surface_mm(con),
                                           inner=h["inner"])
            rr_src, moved, alignment = placed["rr"], placed["moved_mm"], placed["alignment"]
            cortex_nn = heads.mri_to_head(placed["nn"], vectors=True)
        else:
            rr_src, moved = heads.keep_inside(centres / 1000.0, heads.CORTEX_MARGIN_MM, h["inner"])
            alignment = "centres taken as MNI/fsaverage mm"
        rr = heads.mri_to_head(rr_src)
        radial = rr - r0
        radial /= np.maximum(np.linalg.norm(radial, axis=1, keepdims=True), 1e-12)

    if isinstance(orientation, str):
        ori_c = con.orientations
        has = ori_c is not None and np.all(np.linalg.norm(ori_c, axis=1) > 0.5)
        if orientation == "connectome" and not has:
            raise ForwardError(f"orientation='connectome' but {con.name!r} has no (complete) orientations")
        if orientation == "auto" and cortex_nn is not None:
            nn, ori_src = cortex_nn, "template_cortex"
        elif orientation in ("auto", "connectome") and has:
            nn, ori_src = mni_to_head(ori_c, vectors=True), "connectome"
        else:
            nn, ori_src = radial, "radial"
    else:
        o = np.asarray(orientation, float)
        if o.shape != (n, 3) or not np.all(np.isfinite(o)) or np.any(np.linalg.norm(o, axis=1) == 0):
            raise ForwardError(f"orientation array must be finite, non-zero, shape ({n}, 3); got {o.shape}")
        nn, ori_src = mni_to_head(o, vectors=True), "given"
    nn = nn / np.linalg.norm(nn, axis=1, keepdims=True)

    pos = m.get_positions()
    ch_rr = np.array([info["chs"][i]["loc"][:3] for i in range(len(info.ch_names))])
    key = _hash(_VERSION, mne.__version__, con.content_hash(), rr_src, ch_rr, list(info.ch_names),
                h["key"], str(pos["coord_frame"]), placement)
    path = cache_dir() / f"gain_{key}.npy"
    G = read_cached(path, (len(info.ch_names), n, 3), cache)
    if G is None:
        G = _free_gain(info, h["bem"], h["trans"], rr_src, verbose)
        if cache:
            write_cached(path, G)
    # MNE returns free-orientation gains along head-frame x, y, z for both head kinds
    gain = np.einsum("srk,rk->sr", G, nn)

    labels = con.labels
    sensors = list(info.ch_names)
    head_name = ("sphere" if is_sphere else
                 head if isinstance(head, str) and head == "template_bem" else
                 "bem:given" if isinstance(head, mne.bem.ConductorModel) else f"bem:{head}")
    ds = xr.Dataset(
        {
            "gain": (("sensor", "region"), gain, {"units": "V/(A*m)", "long_name": "fixed-orientation gain"}),
            "gain_vector": (("sensor", "region", "axis"), G,
                            {"units": "V/(A*m)", "long_name": "free-orientation gain (head-frame x, y, z)"}),
            "position": (("region", "axis"), rr, {"units": "m", "frame": "MNE head (RAS)"}),
            "orientation": (("region", "axis"), nn, {"units": "1", "frame": "MNE head (RAS)"}),
            "moved_mm": (("region",), moved, {"units": "mm",
                                              "long_name": "distance pulled inside the inner skull"}),
            "sensor_position": (("sensor", "axis"), ch_rr, {"units": "m", "frame": "MNE head (RAS)",
                                                            "long_name": "electrode on the scalp"}),
            "electrode_moved_mm": (("sensor",), h["moved"], {"units": "mm",
                                                            "long_name": "distance moved onto the scalp"}),
        },
        coords={"sensor": sensors, "region": labels, "axis": ["x", "y", "z"],
                "hemisphere": ("region", con.ds["hemisphere"].values)},
        attrs={
            "head": head_name,
            "head_kind": h["kind"],
            "conductivity_S_m": list(h["sigmas"]),
            "conductivity_set": conductivity if isinstance(conductivity, str) else "given",
            "sphere_fitted_to": h["fitted_to"],
            "sphere_r0_m": list(map(float, r0)),
            "sphere_radii_m": [float(layer["rad"]) for layer in sphere["layers"]] if is_sphere else [],
            "sphere_sigmas_S_m": [float(layer["sigma"]) for layer in sphere["layers"]] if is_sphere else [],
            "electrode_projection": ("radially onto the scalp sphere" if is_sphere
                                     else "nearest point of the BEM scalp mesh"),
            "electrode_moved_max_mm": float(h["moved"].max()),
            "orientation_source": ori_src,
            "n_moved": int((moved > 0).sum()),
            "moved_regions": ",".join(np.array(labels)[moved > 0]),
            "montage": mname,
            "connectome": con.name,
            "connectome_hash": con.content_hash(),
            "placement": placement,
            "placement_scale": float(scale),
            "coordinate_transform": (
                f"bounding-box centre -> sphere centre, isotropic scale {scale:.3f}, fsaverage fiducial rotation"
                if placement == "fit" else
                "MNI RAS mm -> MNE head m via fsaverage fiducials" if is_sphere else
                f"{alignment}; fsaverage MRI -> head by fsaverage-trans.fif"),
            "reference": "none (infinity)",
            "cache_key": key,
        },
    )
    return ds


def leadfield(connectome="tvb76", montage="standard_1020", head="sphere", orientation="auto",
              cache: bool = True, verbose=False, placement: str | None = None,
              conductivity="eeg") -> xr.DataArray:
    """Fixed-orientation lead field (sensor, region) in V per A·m (reference-free).

    See :func:`forward_model` for the head model, coordinate mapping and orientation rules;
    attrs carry ``orientation_source`` ("connectome" or "radial") and the regions moved inside.
    """
    ds = forward_model(connectome, montage, head, orientation, cache, verbose, placement, conductivity)
    da = ds["gain"].copy()
    da.attrs.update(ds.attrs)
    return da


def leadfield_vector(connectome="tvb76", montage="standard_1020", head="sphere", orientation="auto",
                     cache: bool = True, verbose=False, placement: str | None = None,
                     conductivity="eeg") -> xr.DataArray:
    """Free-orientation lead field (sensor, region, axis) in V per A·m, head-frame x/y/z.

    By reciprocity (Helmholtz) the field a unit current injected at electrode k and removed at
    electrode j produces at region r is ``-(G[k, r] - G[j, r])`` in V/m per A. Non-dimension
    coords ``position`` and ``orientation`` are not attached; get them from :func:`forward_model`.
    """
    ds = forward_model(connectome, montage, head, orientation, cache, verbose, placement, conductivity)
    da = ds["gain_vector"].copy()
    da.attrs.update(ds.attrs)
    return da
