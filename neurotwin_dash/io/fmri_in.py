"""fMRI in: a 4D BOLD NIfTI + an atlas → region time series and empirical FC (xarray).

The steps, each a plain function the CLI and the dashboard call:

1. :func:`read_bold` loads the image with nibabel and settles the repetition time from the
   BIDS sidecar (``RepetitionTime``), the NIfTI header (``pixdim[4]`` with its time unit)
   and the caller, refusing when they disagree.
2. :func:`load_atlas` gives an :class:`Atlas`: a 3D label image (any NIfTI, with names from
   a BIDS ``dseg.tsv``, a colour lookup table or a plain list), or one of the coordinate
   atlases nilearn ships offline (``power_2011``, ``dosenbach_2010``, ``seitzman_2018``;
   spheres around MNI coordinates). Region centres are world (RAS) millimetres, the frame of
   :attr:`neurotwin_dash.connectome.Connectome.centres`.
3. :func:`parcellate` averages the voxels of each region with nilearn's
   ``NiftiLabelsMasker`` (or ``NiftiSpheresMasker``) into ``bold`` (time × region).
4. :func:`map_to_connectome` pairs atlas regions with a connectome's regions by label or by
   nearest centroid; :func:`import_fmri` chains everything, adds the empirical FC (Pearson
   correlation of the region time series, the usual target of whole-brain fits; Honey et
   al. 2009, Deco et al. 2011) and writes a netCDF file without overwriting anything.
"""
from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from .. import catalog
from ..analysis.connectivity import fc_pearson
from ..connectome import Connectome
from .files import DataImportError, check_input, one_bids_match, write_new

__all__ = ["COORD_ATLASES", "TR_RANGE_S", "Atlas", "read_bold", "load_atlas", "parcellate",
           "pearson_fc", "map_to_connectome", "import_fmri", "find_bids_bold"]

#: coordinate atlases nilearn ships inside its package (no download).
COORD_ATLASES = ("power_2011", "dosenbach_2010", "seitzman_2018")
#: allowed repetition times (s). Larger values are nearly always milliseconds by mistake.
TR_RANGE_S = (0.05, 20.0)
#: relative disagreement tolerated between TR sources.
_TR_RTOL = 0.01
_TIME_UNIT_S = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}


# --- BOLD -----------------------------------------------------------------------------------

def _sidecar_tr(path: Path):
    """RepetitionTime from the BIDS sidecar(s) of ``path`` (inheritance: nearest wins)."""
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            stem = name[: -len(ext)]
            break
    else:
        return None, None
    candidates = [path.with_name(stem + ".json")]
    # BIDS inheritance: task-level sidecars higher up (e.g. /task-rest_bold.json at the root)
    ents = dict(re.findall(r"(task|acq|run|ce|dir|rec|echo)-([a-zA-Z0-9]+)", stem))
    if "task" in ents:
        for parent in list(path.parents)[:4]:
            candidates += sorted(parent.glob(f"task-{ents['task']}*_bold.json"))
            if (parent / "dataset_description.json").exists():
                break
    for cand in candidates:
        if cand.exists():
            try:
                meta = json.loads(cand.read_text())
            except json.JSONDecodeError as exc:
                raise DataImportError(f"BOLD sidecar {cand}: not valid JSON ({exc})") from None
            if "RepetitionTime" in meta:
                return float(meta["RepetitionTime"]), cand
    return None, None


def _check_tr(tr: float, where: str) -> float:
    lo, hi = TR_RANGE_S
    if not np.isfinite(tr) or not lo <= tr <= hi:
        hint = " (looks like milliseconds; RepetitionTime is in seconds)" if tr > hi else ""
        raise DataImportError(f"{where}: RepetitionTime = {tr:g} s is outside the allowed range "
                              f"[{lo:g}, {hi:g}] s{hint}")
    return float(tr)


def read_bold(path, tr_s: float | None = None, min_volumes: int = 10):
    """Load a 4D BOLD image and its repetition time.

    Parameters
    ----------
    path : str | Path
        ``.nii`` or ``.nii.gz`` file, four-dimensional (x, y, z, time).
    tr_s : float, optional
        Repetition time the caller expects (s). Must agree (within 1 %) with the sidecar
        and the header when those state one.
    min_volumes : int
        Fewer volumes than this cannot give a meaningful FC.

    Returns
    -------
    img : nibabel.Nifti1Image
    tr_s : float
        Repetition time in seconds. Sources, in order of authority: the BIDS sidecar
        ``RepetitionTime``, the header's ``pixdim[4]`` (converted from its time unit), ``tr_s``.

    Raises
    ------
    DataImportError
        Missing/empty/unreadable file, not 4D, too few volumes, no TR anywhere, a TR outside
        :data:`TR_RANGE_S`, or sources that disagree (the message names both).
    """
    import nibabel as nib  # nibabel (~0.1 s): only when an image is read

    p = check_input(path, "BOLD image")
    try:
        img = nib.load(str(p))
        shape = img.shape
    except Exception as exc:  # nibabel raises several types for corrupt files
        raise DataImportError(f"BOLD image {p}: not a readable NIfTI file ({exc})") from None
    if len(shape) != 4:
        raise DataImportError(f"BOLD image {p}: shape {shape} is not 4D (x, y, z, time); field 'dim'")
    if shape[3] < min_volumes:
        raise DataImportError(f"BOLD image {p}: {shape[3]} volumes; need at least {min_volumes} "
                              "(field 'dim[4]')")
    sources = {}
    side, side_path = _sidecar_tr(p)
    if side is not None:
        sources[f"sidecar {side_path.name} RepetitionTime"] = _check_tr(side, f"BOLD sidecar {side_path}")
    unit = img.header.get_xyzt_units()[1]
    zoom = float(img.header.get_zooms()[3])
    if unit in _TIME_UNIT_S and zoom > 0:
        sources["header pixdim[4]"] = _check_tr(zoom * _TIME_UNIT_S[unit], f"BOLD image {p} header pixdim[4]")
    if tr_s is not None:
        sources["tr_s argument"] = _check_tr(float(tr_s), "tr_s argument")
    if not sources:
        raise DataImportError(f"BOLD image {p}: no repetition time in the header (pixdim[4] unit unknown) "
                              "or a sidecar JSON; pass tr_s (--tr)")
    names, values = list(sources), list(sources.values())
    for name, value in zip(names[1:], values[1:]):
        if abs(value - values[0]) > _TR_RTOL * values[0]:
            raise DataImportError(f"BOLD image {p}: wrong TR: {names[0]} = {values[0]:g} s but "
                                  f"{name} = {value:g} s; fix the file or the TR given")
    return img, values[0]


def find_bids_bold(root, subject: str, task: str, session=None, run=None, space=None) -> Path:
    """Locate ``sub-<subject>[_ses-]_task-<task>[_run-]_bold.nii[.gz]`` in a BIDS dataset.

    Uses :class:`mne_bids.BIDSPath` so the entity rules are BIDS's own.
    """
    from mne_bids import BIDSPath  # mne-bids (~0.2 s): only for BIDS inputs

    root = check_input(root, "BIDS root")
    bp = BIDSPath(root=root, subject=subject, session=session, task=task, run=run, space=space,
                  datatype="func", suffix="bold", check=False)  # mne-bids knows no 'func'
    hits = [m for m in bp.match() if str(m.fpath).endswith((".nii", ".nii.gz"))]
    hit = one_bids_match(hits, root, "BOLD image", dict(subject=subject, task=task, session=session, run=run),
                         narrow="session/run")
    return Path(hit.fpath)


# --- atlases --------------------------------------------------------------------------------

@dataclass
class Atlas:
    """A parcellation: a label image or a list of spheres, with names and RAS-mm centres."""

    name: str
    labels: list
    centres_mm: np.ndarray
    image: object = None           # nibabel image of integer labels (kind "labels")
    indices: list = field(default_factory=list)   # label value of each region in ``image``
    radius_mm: float | None = None  # sphere radius (kind "spheres")

    @property
    def kind(self) -> str:
        return "labels" if self.image is not None else "spheres"

    @property
    def n_regions(self) -> int:
        return len(self.labels)


def _read_label_names(path: Path, indices: list) -> dict:
    """index → name from a BIDS dseg.tsv (index/name columns), a LUT or a plain list."""
    p = check_input(path, "atlas labels")
    rows = [r for r in p.read_text(errors="replace").splitlines() if r.strip() and not r.startswith("#")]
    if not rows:
        raise DataImportError(f"atlas labels file {p} is empty")
    head = rows[0].split("\t")
    if "index" in head and "name" in head:  # BIDS dseg.tsv / nilearn LUT table
        i_idx, i_name = head.index("index"), head.index("name")
        out = {}
        for n, r in enumerate(rows[1:], start=2):
            cols = r.split("\t")
            try:
                out[int(cols[i_idx])] = cols[i_name].strip()
            except (ValueError, IndexError):
                raise DataImportError(f"atlas labels file {p}, line {n}: expected an integer 'index' "
                                      "and a 'name' column") from None
        return out
    split = [r.split() for r in rows]
    if all(len(t) >= 2 and t[0].isdigit() for t in split):  # colour lookup table
        return {int(t[0]): t[1] for t in split}
    if len(rows) != len(indices):
        raise DataImportError(f"atlas labels file {p}: {len(rows)} names for {len(indices)} regions in "
                              "the image; a plain list needs one name per region (ascending label value)")
    return dict(zip(indices, [r.strip() for r in rows]))


def _centroids_mm(data: np.ndarray, affine: np.ndarray, indices: list) -> np.ndarray:
    out = np.zeros((len(indices), 3))
    for k, idx in enumerate(indices):
        vox = np.argwhere(data == idx)
        out[k] = affine[:3, :3] @ vox.mean(axis=0) + affine[:3, 3]
    return out


def load_atlas(atlas, labels=None, radius_mm: float = 5.0) -> Atlas:
    """Load a parcellation.

    Parameters
    ----------
    atlas : str | Path | Atlas
        One of :data:`COORD_ATLASES` (spheres of ``radius_mm`` around nilearn's packaged MNI
        coordinates), or a 3D NIfTI of integer labels (0 = background).
    labels : str | Path, optional
        Region names for a label image: BIDS ``*_dseg.tsv`` (``index``/``name`` columns), a
        lookup table (``index name R G B [A]``) or one name per line in ascending label value.
        When absent, a ``.tsv`` beside the image with the same stem is used, else ``label_<k>``.
    radius_mm : float
        Sphere radius for coordinate atlases.
    """
    if isinstance(atlas, Atlas):
        return atlas
    key = str(atlas)
    if key in COORD_ATLASES:
        import nilearn.datasets as nds  # heavy: nilearn.datasets (~2 s), only for coordinate atlases
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bunch = getattr(nds, f"fetch_coords_{key}")()  # packaged CSV/TXT, no download
        xyz = np.asarray(bunch.rois[["x", "y", "z"]], dtype=float)
        if key == "dosenbach_2010":
            names = [str(s) for s in bunch.labels]
        elif key == "power_2011":
            names = [f"power_{int(r)}" for r in bunch.rois["roi"]]
        else:
            names = [f"{r}_{net}_{i}" for i, (r, net) in enumerate(zip(bunch.regions, bunch.networks))]
        names = _unique(names)
        return Atlas(name=key, labels=names, centres_mm=xyz, radius_mm=float(radius_mm))
    import nibabel as nib  # nibabel (~0.1 s): only when an image is read

    p = check_input(atlas, "atlas image")
    try:
        img = nib.load(str(p))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise DataImportError(f"atlas image {p}: not a readable NIfTI file ({exc})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
        img = nib.Nifti1Image(data, img.affine, img.header)
    if data.ndim != 3:
        raise DataImportError(f"atlas image {p}: shape {data.shape}; need a 3D label image "
                              "(probabilistic 4D atlases are not supported)")
    if not np.all(np.isfinite(data)) or np.any(data != np.round(data)) or np.any(data < 0):
        raise DataImportError(f"atlas image {p}: values must be non-negative integers (region labels)")
    data = data.astype(np.int64)
    indices = [int(v) for v in np.unique(data) if v != 0]
    if not indices:
        raise DataImportError(f"atlas image {p}: contains only background (0); no regions")
    if labels is None:
        stem = p.name.split(".")[0]
        beside = p.with_name(stem + ".tsv")
        labels = beside if beside.exists() else None
    if labels is not None:
        names_by_idx = _read_label_names(Path(labels), indices)
        missing = [i for i in indices if i not in names_by_idx]
        if missing:
            raise DataImportError(f"atlas labels file {labels}: no name for label value(s) {missing[:8]} "
                                  f"present in atlas image {p}")
        names = [names_by_idx[i] for i in indices]
    else:
        names = [f"label_{i}" for i in indices]
    if len(set(names)) != len(names):
        dup = sorted({s for s in names if names.count(s) > 1})
        raise DataImportError(f"atlas labels for {p}: names must be unique; duplicated {dup[:5]}")
    img = nib.Nifti1Image(data.astype(np.int32), img.affine)
    return Atlas(name=p.name, labels=names, centres_mm=_centroids_mm(data, img.affine, indices),
                 image=img, indices=indices)


def _unique(names):
    seen, out = {}, []
    for s in names:
        seen[s] = seen.get(s, 0) + 1
        out.append(s if seen[s] == 1 else f"{s}_{seen[s]}")
    return out


# --- parcellation and FC ----------------------------------------------------------------------

def parcellate(bold, atlas, labels=None, tr_s: float | None = None, standardize: bool = False,
               detrend: bool = False, high_pass_hz: float | None = None,
               low_pass_hz: float | None = None) -> xr.Dataset:
    """Average a BOLD series within each atlas region.

    Parameters
    ----------
    bold : str | Path | nibabel image
        4D BOLD. A path goes through :func:`read_bold` (TR checks); an image needs ``tr_s``.
    atlas, labels
        See :func:`load_atlas`. The label image is resampled to the BOLD grid (nearest
        neighbour) when their grids differ.
    standardize, detrend, high_pass_hz, low_pass_hz
        Passed to nilearn's signal cleaning (off by default: the values come out as given).

    Returns
    -------
    xarray.Dataset
        ``bold`` (time, region) in the image's units, ``centres`` (region, axis) in RAS mm,
        ``n_voxels`` (region); ``time`` in s; attrs ``tr_s``, ``source``, ``atlas``,
        ``dropped_regions`` (regions with no voxel inside the image, JSON list).
    """
    from nilearn.maskers import NiftiLabelsMasker, NiftiSpheresMasker  # heavy: nilearn (~1 s), only when parcellating

    if isinstance(bold, (str, Path)):
        img, tr = read_bold(bold, tr_s)
        source = str(bold)
    else:
        img, source = bold, "image"
        if tr_s is None:
            raise DataImportError("parcellate: tr_s is required when bold is an image object")
        tr = _check_tr(float(tr_s), "tr_s argument")
    atl = load_atlas(atlas, labels)
    kw = dict(standardize=standardize, detrend=detrend, high_pass=high_pass_hz, low_pass=low_pass_hz,
              t_r=tr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if atl.kind == "labels":
            masker = NiftiLabelsMasker(atl.image, background_label=0, strategy="mean",
                                       resampling_target="data", **kw)
            ts = masker.fit_transform(img)
            # region_ids_: column index → label value (plus a "background" entry)
            kept = [int(masker.region_ids_[k]) for k in range(ts.shape[1])]
        else:
            masker = NiftiSpheresMasker([tuple(c) for c in atl.centres_mm], radius=atl.radius_mm,
                                        allow_overlap=True, **kw)
            ts = masker.fit_transform(img)
            kept = None
    if atl.kind == "labels":
        pos = {v: k for k, v in enumerate(atl.indices)}
        keep = [pos[v] for v in kept if v in pos]
        resampled = np.asanyarray(masker.labels_img_.dataobj) if hasattr(masker, "labels_img_") else None
    else:
        keep = list(range(atl.n_regions))
        resampled = None
    dropped = [atl.labels[k] for k in range(atl.n_regions) if k not in set(keep)]
    if dropped:
        warnings.warn(f"{len(dropped)} atlas region(s) have no voxel inside {source}: {dropped[:6]}",
                      stacklevel=2)
    if ts.shape[1] != len(keep):
        raise DataImportError(f"parcellating {source}: got {ts.shape[1]} region series for "
                              f"{len(keep)} regions of atlas {atl.name}")
    if resampled is not None:
        nvox = np.array([int(np.sum(resampled == atl.indices[k])) for k in keep])
    else:
        nvox = np.full(len(keep), -1)
    labels_kept = [atl.labels[k] for k in keep]
    ds = xr.Dataset(
        {"bold": (("time", "region"), np.asarray(ts, dtype=float),
                  {"long_name": "regional mean BOLD", "units": "image units"}),
         "centres": (("region", "axis"), atl.centres_mm[keep],
                     {"units": "mm", "frame": "RAS (NIfTI world / MNI)"}),
         "n_voxels": (("region",), nvox, {"long_name": "voxels averaged (-1: sphere)"})},
        coords={"time": np.arange(ts.shape[0]) * tr, "region": labels_kept, "axis": ["x", "y", "z"]},
        attrs={"tr_s": tr, "source": source, "atlas": atl.name,
               "dropped_regions": json.dumps(dropped), "standardize": int(bool(standardize)),
               "detrend": int(bool(detrend))},
    )
    ds["time"].attrs["units"] = "s"
    return ds


def pearson_fc(ts: xr.DataArray, where: str = "") -> xr.DataArray:
    """Pearson correlation between region time series (``time`` × ``region``) → (region, region2).

    Regions with zero variance have no defined correlation: they raise, naming them.
    """
    x = ts.transpose("time", "region").values
    sd = x.std(axis=0)
    flat = [str(r) for r, s in zip(ts["region"].values, sd) if not s > 0]
    if flat:
        raise DataImportError(f"{where or 'FC'}: region(s) {flat[:6]} have a constant time series; "
                              "their correlation is undefined (field 'bold')")
    fc = fc_pearson(ts.transpose("time", "region"))
    fc.attrs.update(long_name="functional connectivity (Pearson r)", units="1")
    return fc


# --- atlas ↔ connectome ---------------------------------------------------------------------

def _norm_label(s: str) -> str:
    return re.sub(r"[\s_\-\.]+", "", str(s)).lower()


def map_to_connectome(atlas_labels, atlas_centres_mm, connectome, by: str = "label",
                      max_distance_mm: float = 15.0, where: str = "atlas") -> xr.Dataset:
    """Pair every connectome region with one atlas region.

    Parameters
    ----------
    atlas_labels : sequence of str
    atlas_centres_mm : array (n_atlas, 3)
        RAS millimetres.
    connectome : Connectome | str
        A :class:`~neurotwin_dash.connectome.Connectome` or a catalog name.
    by : {"label", "centroid"}
        ``label``: names must match (case, spaces, ``_-.`` ignored); every connectome region
        needs a partner. ``centroid``: a one-to-one assignment minimising the summed centre
        distance (Hungarian algorithm; Kuhn 1955) when the atlas has at least as many regions,
        else the nearest atlas region; pairs further apart than ``max_distance_mm`` raise.
    where : str
        Name of the atlas source, used in messages.

    Returns
    -------
    xarray.Dataset
        Over the connectome's ``region``: ``atlas_region`` (label), ``atlas_index`` (int) and
        ``distance_mm``.
    """

    if not isinstance(connectome, Connectome):
        connectome = catalog.load(connectome)
    a_lab = [str(s) for s in atlas_labels]
    a_xyz = np.asarray(atlas_centres_mm, dtype=float)
    c_lab = connectome.labels
    c_xyz = connectome.centres
    if by == "label":
        index = {_norm_label(s): k for k, s in enumerate(a_lab)}
        missing = [s for s in c_lab if _norm_label(s) not in index]
        if missing:
            extra = [s for s in a_lab if _norm_label(s) not in {_norm_label(c) for c in c_lab}]
            raise DataImportError(
                f"{where}: atlas/connectome label mismatch: {len(missing)} of {len(c_lab)} regions of "
                f"connectome {connectome.name!r} have no atlas label (field 'region'), e.g. "
                f"{missing[:6]}; atlas labels without a partner: {extra[:6]}. "
                "Rename the labels or map by='centroid'")
        idx = np.array([index[_norm_label(s)] for s in c_lab])
    elif by == "centroid":

        if not np.any(c_xyz):
            raise DataImportError(f"connectome {connectome.name!r} has no centres (all zero); "
                                  "map by='label' instead")
        d = cdist(c_xyz, a_xyz)
        if len(a_lab) >= len(c_lab):
            rows, cols = linear_sum_assignment(d)
            idx = np.empty(len(c_lab), dtype=int)
            idx[rows] = cols
        else:
            idx = d.argmin(axis=1)
    else:
        raise DataImportError(f"by={by!r}: allowed 'label' or 'centroid'")
    dist = np.linalg.norm(c_xyz - a_xyz[idx], axis=1)
    if by == "centroid" and np.any(dist > max_distance_mm):
        k = int(np.argmax(dist))
        raise DataImportError(
            f"{where}: connectome region {c_lab[k]!r} is {dist[k]:.1f} mm from its nearest atlas region "
            f"{a_lab[idx[k]]!r}; allowed ≤ {max_distance_mm:g} mm (field 'max_distance_mm'). "
            f"{int(np.sum(dist > max_distance_mm))} region(s) too far: are both in the same (MNI/RAS) space?")
    return xr.Dataset({"atlas_region": (("region",), np.array(a_lab, dtype=object)[idx].astype(str)),
                       "atlas_index": (("region",), idx),
                       "distance_mm": (("region",), dist, {"units": "mm"})},
                      coords={"region": c_lab}, attrs={"by": by, "connectome": connectome.name})


# --- all together --------------------------------------------------------------------------

def import_fmri(bold, atlas, out=None, labels=None, tr_s: float | None = None, connectome=None,
                by: str = "label", max_distance_mm: float = 15.0, overwrite: bool = False,
                **clean) -> xr.Dataset:
    """BOLD image + atlas → ``bold`` (time, region) and ``fc`` (region, region2), optionally on
    a connectome's regions, written to ``out`` (netCDF) when given.

    Parameters
    ----------
    bold : str | Path
        4D NIfTI (see :func:`read_bold`).
    atlas, labels
        See :func:`load_atlas`.
    out : str | Path, optional
        netCDF output. Never replaced unless ``overwrite``.
    connectome : Connectome | str, optional
        Reorder/select the regions to match this connectome (see :func:`map_to_connectome`);
        the result's ``region`` are then the connectome's labels and ``atlas_region`` says
        which atlas region each came from.
    clean
        ``standardize``, ``detrend``, ``high_pass_hz``, ``low_pass_hz`` for :func:`parcellate`.
    """
    ds = parcellate(bold, atlas, labels=labels, tr_s=tr_s, **clean)
    if connectome is not None:
        m = map_to_connectome(ds["region"].values, ds["centres"].values, connectome, by=by,
                              max_distance_mm=max_distance_mm, where=f"BOLD {bold} with atlas {atlas}")
        sub = ds.isel(region=m["atlas_index"].values)
        sub = sub.assign_coords(region=m["region"].values)
        sub["atlas_region"] = (("region",), m["atlas_region"].values)
        sub["distance_mm"] = m["distance_mm"]
        sub.attrs.update(connectome=m.attrs["connectome"], mapped_by=by)
        ds = sub
    ds["fc"] = pearson_fc(ds["bold"], where=f"BOLD {bold}")
    ds.attrs["kind"] = "fmri_targets"
    if out is not None:
        write_new(out, lambda tmp: ds.to_netcdf(tmp), overwrite=overwrite)
    return ds
