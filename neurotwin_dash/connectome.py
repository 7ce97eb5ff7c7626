"""Structural connectomes as labelled ``xarray.Dataset`` objects.

A :class:`Connectome` wraps a dataset with

* ``weights`` (``region`` × ``region2``): row = target, column = source, so region *i*
  receives ``sum_j weights[i, j] * rate_j``;
* ``tract_lengths`` (``region`` × ``region2``, mm);
* ``centres`` (``region`` × ``axis``, RAS millimetres: x right, y anterior, z superior);
* ``orientations`` (``region`` × ``axis``, unit vectors in RAS) when the data has them;
* ``hemisphere`` (``region``: ``"L"``, ``"R"`` or ``""``) and ``cortical`` where known.

Every operation returns a new connectome (the original is never modified), so a
dashboard can keep the loaded data and derive edits from it.
"""
from __future__ import annotations

import bz2
import hashlib
import io
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import xarray as xr

__all__ = ["ConnectomeError", "Connectome", "NORMALISATIONS", "read_tvb_zip", "to_ras", "hemisphere_runs"]

NORMALISATIONS = ("none", "max", "rowsum", "spectral", "log")

_AXIS_LETTERS = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}


class ConnectomeError(ValueError):
    """Invalid connectome input; the message names the field and what is allowed."""


def read_tvb_zip(source) -> dict[str, np.ndarray]:
    """Read a TVB-style connectivity zip (weights, tract lengths, centres, ...).

    Accepts a path or file-like object. Members may sit in a sub-folder and may be
    bz2-compressed (``.txt.bz2``), as in tvb-data.
    """
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(source) as zf:
        members = {}
        for member in zf.namelist():
            base = member.rsplit("/", 1)[-1]
            if base.endswith(".bz2"):
                text = bz2.decompress(zf.read(member)).decode()
                base = base[:-4]
            else:
                text = zf.read(member).decode()
            if base.endswith(".txt"):
                members[base[:-4]] = text
    if "weights" not in members:
        raise ValueError(f"connectivity zip {source}: no weights.txt inside (field 'weights')")
    for key in ("weights", "tract_lengths", "average_orientations", "areas", "cortical"):
        if key in members:
            out[key] = np.loadtxt(io.StringIO(members[key]), ndmin=1 if key in ("areas", "cortical") else 2)
    if "centres" in members:
        rows = [line.split() for line in members["centres"].strip().splitlines() if line.strip()]
        out["labels"] = np.array([r[0] for r in rows])
        out["centres"] = np.array([[float(v) for v in r[1:4]] for r in rows])
    return out


def to_ras(xyz: np.ndarray, axes: str) -> np.ndarray:
    """Re-express points/vectors (n, 3) stored along ``axes`` (e.g. ``"ALS"``: x anterior, y left,
    z superior) in RAS (x right, y anterior, z superior)."""
    axes = axes.upper()
    if len(axes) != 3 or any(a not in _AXIS_LETTERS for a in axes) or \
            sorted(_AXIS_LETTERS[a][0] for a in axes) != [0, 1, 2]:
        raise ConnectomeError(f"axes {axes!r}: expected three letters from RLAPSI covering all three axes")
    out = np.zeros_like(xyz, dtype=float)
    for col, letter in enumerate(axes):
        ras_axis, sign = _AXIS_LETTERS[letter]
        out[:, ras_axis] = sign * xyz[:, col]
    return out


def hemisphere_runs(codes) -> list[tuple[int, int, str]]:
    """Contiguous runs of regions in the same hemisphere: ``[(start, stop, name), ...]``.

    ``codes`` are the per-region ``hemisphere`` values (``"L"``, ``"R"``, ``""``); names are
    ``"left"``, ``"right"`` (other codes as given, ``""`` for none). Used to draw region × region
    matrices with hemisphere separators.
    """
    codes = [str(c) for c in codes]
    names = {"L": "left", "R": "right"}
    runs, start = [], 0
    for i in range(1, len(codes) + 1):
        if i == len(codes) or codes[i] != codes[start]:
            runs.append((start, i, names.get(codes[start], codes[start])))
            start = i
    return runs


def _hemisphere(label: str, x_ras: float) -> str:
    lower = label.lower()
    if lower.endswith(("_l", "-l", ".l", "_lh")) or lower.startswith(("l_", "lh_", "left")) or \
            (len(label) > 1 and label[0] == "l" and label[1].isupper()):
        return "L"
    if lower.endswith(("_r", "-r", ".r", "_rh")) or lower.startswith(("r_", "rh_", "right")) or \
            (len(label) > 1 and label[0] == "r" and label[1].isupper()):
        return "R"
    if np.isfinite(x_ras) and abs(x_ras) > 2.0:
        return "R" if x_ras > 0 else "L"
    return ""


class Connectome:
    """A structural connectome (weights, tract lengths, centres, labels) backed by xarray.

    Build one with :meth:`from_arrays`, :meth:`from_files` or
    :func:`neurotwin_dash.catalog.load`.
    """

    def __init__(self, ds: xr.Dataset):
        self.ds = ds

    # --- construction ---------------------------------------------------------------------
    @classmethod
    def from_arrays(cls, weights, tract_lengths, centres=None, labels=None, orientations=None,
                    cortical=None, axes: str = "RAS", recentre: bool = False, name: str = "custom",
                    source: str = "arrays") -> "Connectome":
        """Validate arrays and build a connectome.

        Parameters
        ----------
        weights, tract_lengths : array (n, n)
            Non-negative, finite, square and of the same shape. Lengths in mm.
        centres : array (n, 3), optional
            Region centres in mm along ``axes``; zeros when absent.
        labels : sequence of str, optional
            One unique label per region; ``R0..R{n-1}`` when absent.
        orientations : array (n, 3), optional
            Mean dipole orientation per region (same axes as the centres).
        axes : str
            Direction of the stored x, y, z axes, e.g. ``"RAS"`` or ``"ALS"`` (tvb-data's 76).
        recentre : bool
            Move the centroid to the origin (for voxel frames with an offset origin).
        """
        w = _matrix(weights, "weights")
        n = w.shape[0]
        L = _matrix(tract_lengths, "tract_lengths")
        if L.shape != w.shape:
            raise ConnectomeError(
                f"tract_lengths has shape {L.shape} but weights has shape {w.shape}; they must match"
            )
        if labels is None:
            labels = [f"R{i}" for i in range(n)]
        labels = np.asarray([str(s) for s in labels])
        if labels.shape != (n,):
            raise ConnectomeError(f"labels: got {labels.size} labels for {n} regions; need exactly {n}")
        if len(set(labels)) != n:
            dup = sorted({s for s in labels if (labels == s).sum() > 1})
            raise ConnectomeError(f"labels must be unique; duplicated: {dup[:5]}")
        if centres is None:
            xyz = np.zeros((n, 3))
        else:
            xyz = _points(centres, n, "centres")
            if recentre:
                xyz = xyz - xyz.mean(axis=0)
            xyz = to_ras(xyz, axes)
        data = {
            "weights": (("region", "region2"), w, {"long_name": "structural weight", "units": "a.u.",
                                                   "convention": "row = target, column = source"}),
            "tract_lengths": (("region", "region2"), L, {"long_name": "tract length", "units": "mm"}),
            "centres": (("region", "axis"), xyz, {"long_name": "region centre", "units": "mm",
                                                  "frame": "RAS (x right, y anterior, z superior)"}),
            "hemisphere": (("region",), np.array([_hemisphere(s, x) for s, x in zip(labels, xyz[:, 0])])),
        }
        if orientations is not None:
            o = to_ras(_points(orientations, n, "orientations"), axes)
            norm = np.linalg.norm(o, axis=1, keepdims=True)
            o = np.divide(o, norm, out=np.zeros_like(o), where=norm > 0)
            data["orientations"] = (("region", "axis"), o, {"long_name": "mean dipole orientation",
                                                            "units": "1", "frame": "RAS"})
        if cortical is not None:
            c = np.asarray(cortical).astype(bool).ravel()
            if c.shape != (n,):
                raise ConnectomeError(f"cortical: got {c.size} flags for {n} regions")
            data["cortical"] = (("region",), c)
        ds = xr.Dataset(
            data, coords={"region": labels, "region2": labels.copy(), "axis": ["x", "y", "z"]},
            attrs={"name": name, "source": source, "source_axes": axes.upper(),
                   "recentred": int(bool(recentre)), "normalisation": "none", "history": ""},
        )
        return cls(ds)

    @classmethod
    def from_files(cls, weights, tract_lengths=None, labels=None, centres=None, axes: str = "RAS",
                   name: str | None = None) -> "Connectome":
        """Load a user's connectome from files.

        ``weights`` may be a TVB-style ``.zip`` (then everything else is read from it), or a
        ``.csv``/``.tsv``/``.txt``/``.npy`` matrix with ``tract_lengths`` the same. ``labels``
        is a text file with one label per line; ``centres`` a text/CSV file with ``x y z``
        per row (optionally a leading label column).

        MRtrix3 outputs load as they are: ``tck2connectome`` writes whitespace-delimited
        ``.csv`` files without a header, and by default only the upper triangle; such a
        matrix (zero strictly below the diagonal, non-zero above) is mirrored into a symmetric
        one and the mirroring is recorded in ``history``. ``labels`` may be a lookup table
        (MRtrix ``fs_default.txt``, FreeSurfer ``FreeSurferColorLUT.txt``-style ``index name
        [long name] R G B [A]`` rows): node *k* of the matrix takes the name of LUT index *k*
        (index 0, "Unknown", is skipped).
        """
        path = Path(weights)
        if not path.exists():
            raise ConnectomeError(f"weights file {path} does not exist")
        name = name or path.stem
        if path.suffix == ".zip":
            try:
                arr = read_tvb_zip(path)
            except (ValueError, KeyError) as exc:
                raise ConnectomeError(f"{path}: {exc}") from None
            if "tract_lengths" not in arr:
                raise ConnectomeError(f"{path}: no tract_lengths.txt inside (field 'tract_lengths')")
            return cls.from_arrays(arr["weights"], arr["tract_lengths"], arr.get("centres"),
                                   arr.get("labels"), arr.get("average_orientations"),
                                   arr.get("cortical"), axes=axes, name=name, source=str(path))
        if tract_lengths is None:
            raise ConnectomeError("tract_lengths file is required unless weights is a TVB-style zip")
        w = _read_matrix(path, "weights")
        L = _read_matrix(Path(tract_lengths), "tract_lengths")
        mirrored = _is_upper_triangular(w)
        if mirrored:
            w = w + np.triu(w, 1).T
            L = L + np.triu(L, 1).T if _is_upper_triangular(L) else L
        lab = None
        if labels is not None:
            lab = _read_labels(Path(labels), w.shape[0] if w.ndim == 2 else None)
        xyz = None
        if centres is not None:
            rows = [r.replace(",", " ").split() for r in Path(centres).read_text().splitlines() if r.strip()]
            try:
                xyz = np.array([[float(v) for v in r[-3:]] for r in rows])
            except ValueError:
                raise ConnectomeError(f"centres file {centres}: expected 3 numbers per row") from None
            if lab is None and rows and len(rows[0]) == 4:
                lab = [r[0] for r in rows]
        conn = cls.from_arrays(w, L, xyz, lab, axes=axes, name=name, source=str(path))
        if mirrored:
            conn.ds.attrs["history"] = "symmetrised upper-triangular matrix (MRtrix tck2connectome layout)"
        return conn

    # --- views ------------------------------------------------------------------------------
    @property
    def n_regions(self) -> int:
        return self.ds.sizes["region"]

    @property
    def labels(self) -> list[str]:
        return [str(s) for s in self.ds["region"].values]

    @property
    def name(self) -> str:
        return self.ds.attrs["name"]

    @property
    def weights(self) -> np.ndarray:
        return self.ds["weights"].values

    @property
    def tract_lengths(self) -> np.ndarray:
        return self.ds["tract_lengths"].values

    @property
    def centres(self) -> np.ndarray:
        """Centres in RAS millimetres, shape (n, 3)."""
        return self.ds["centres"].values

    @property
    def orientations(self) -> np.ndarray | None:
        return self.ds["orientations"].values if "orientations" in self.ds else None

    def __repr__(self):
        nnz = int(np.count_nonzero(self.weights))
        return (f"<Connectome {self.name!r}: {self.n_regions} regions, {nnz} edges, "
                f"normalisation={self.ds.attrs['normalisation']}>")

    def index(self, label: str) -> int:
        """Position of a region label; raises listing a few known labels when unknown."""
        try:
            return self.labels.index(label)
        except ValueError:
            raise ConnectomeError(
                f"unknown region {label!r} in connectome {self.name!r}; known e.g. {self.labels[:8]}"
            ) from None

    def content_hash(self) -> str:
        """SHA-256 of weights, lengths, centres and labels (the identity of the data)."""
        h = hashlib.sha256()
        for key in ("weights", "tract_lengths", "centres"):
            h.update(np.ascontiguousarray(self.ds[key].values, dtype=np.float64).tobytes())
        h.update("\n".join(self.labels).encode())
        return h.hexdigest()

    # --- operations (each returns a new Connectome) -------------------------------------
    def _with(self, weights=None, note: str = "", **attrs) -> "Connectome":
        ds = self.ds.copy(deep=True)
        if weights is not None:
            ds["weights"].values = weights
        ds.attrs.update(attrs)
        if note:
            ds.attrs["history"] = (ds.attrs.get("history", "") + "; " + note).strip("; ")
        return Connectome(ds)

    def normalise(self, method: str = "max") -> "Connectome":
        """Normalise the weights.

        ``max``: divide by the largest weight; ``rowsum``: each row sums to 1 (in-strength);
        ``spectral``: divide by the spectral radius (largest |eigenvalue|), so K < 1 keeps a
        linear network stable; ``log``: ``log1p(w / min_nonzero)`` then divide by its max,
        which compresses the many orders of magnitude of tractography counts; ``none``: as is.
        """
        w = self.weights.copy()
        if method not in NORMALISATIONS:
            raise ConnectomeError(f"normalisation {method!r} unknown; allowed: {', '.join(NORMALISATIONS)}")
        if method == "max" and w.max() > 0:
            w = w / w.max()
        elif method == "rowsum":
            s = w.sum(axis=1, keepdims=True)
            w = np.divide(w, s, out=np.zeros_like(w), where=s > 0)
        elif method == "spectral":
            rho = np.max(np.abs(np.linalg.eigvals(w)))
            if rho > 0:
                w = w / rho
        elif method == "log":
            nz = w[w > 0]
            if nz.size:
                w = np.log1p(w / nz.min())
                w = w / w.max()
        return self._with(w, note=f"normalise({method})", normalisation=method)

    def scale(self, factor: float) -> "Connectome":
        """Multiply all weights by ``factor`` (≥ 0)."""
        if not np.isfinite(factor) or factor < 0:
            raise ConnectomeError(f"scale factor must be finite and ≥ 0, got {factor}")
        return self._with(self.weights * factor, note=f"scale({factor:g})")

    def lesion_region(self, label: str) -> "Connectome":
        """Remove every connection to and from ``label`` (the region stays, disconnected)."""
        i = self.index(label)
        w = self.weights.copy()
        w[i, :] = 0.0
        w[:, i] = 0.0
        return self._with(w, note=f"lesion_region({label})")

    def set_edge(self, target: str, source: str, value: float, symmetric: bool = True) -> "Connectome":
        """Set the weight from ``source`` to ``target`` (and back when ``symmetric``)."""
        if not np.isfinite(value) or value < 0:
            raise ConnectomeError(f"edge weight must be finite and ≥ 0, got {value}")
        i, j = self.index(target), self.index(source)
        w = self.weights.copy()
        w[i, j] = value
        if symmetric:
            w[j, i] = value
        return self._with(w, note=f"set_edge({target},{source},{value:g})")

    def lesion_edge(self, target: str, source: str, symmetric: bool = True) -> "Connectome":
        """Cut the connection between two regions."""
        return self.set_edge(target, source, 0.0, symmetric)

    def select(self, labels: Sequence[str]) -> "Connectome":
        """Sub-connectome with only ``labels`` (in the given order)."""
        idx = [self.index(s) for s in labels]
        ds = self.ds.isel(region=idx, region2=idx)
        ds.attrs = dict(self.ds.attrs, history=(self.ds.attrs.get("history", "") +
                                                f"; select({len(idx)} regions)").strip("; "))
        return Connectome(ds)

    def delays_steps(self, speed_m_s: float, dt_ms: float) -> np.ndarray:
        """Integer conduction delays in integration steps: ``round(length_mm / speed / dt)``.

        ``speed_m_s`` in m/s equals mm/ms, so ``length_mm / speed_m_s`` is milliseconds.
        """
        if not np.isfinite(speed_m_s) or speed_m_s <= 0:
            raise ConnectomeError(f"conduction speed_m_s must be > 0, got {speed_m_s}")
        if not np.isfinite(dt_ms) or dt_ms <= 0:
            raise ConnectomeError(f"dt_ms must be > 0, got {dt_ms}")
        return np.rint(self.tract_lengths / speed_m_s / dt_ms).astype(np.int64)

    def to_netcdf(self, path) -> None:
        self.ds.to_netcdf(path)

    @classmethod
    def open(cls, path) -> "Connectome":
        return cls(xr.load_dataset(path))


def _matrix(values, field: str) -> np.ndarray:
    try:
        m = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ConnectomeError(f"{field} must be numeric") from None
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ConnectomeError(f"{field} must be a square matrix (n × n), got shape {m.shape}")
    if m.shape[0] < 1:
        raise ConnectomeError(f"{field} is empty")
    if not np.all(np.isfinite(m)):
        bad = np.argwhere(~np.isfinite(m))[0]
        raise ConnectomeError(f"{field} contains NaN or Inf (first at row {bad[0]}, column {bad[1]}); "
                              "all entries must be finite")
    if np.any(m < 0):
        bad = np.argwhere(m < 0)[0]
        raise ConnectomeError(f"{field} contains negative values (first at row {bad[0]}, column {bad[1]}: "
                              f"{m[tuple(bad)]:g}); allowed: ≥ 0")
    return m


def _points(values, n: int, field: str) -> np.ndarray:
    p = np.asarray(values, dtype=float)
    if p.shape != (n, 3):
        raise ConnectomeError(f"{field} must have shape ({n}, 3), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ConnectomeError(f"{field} contains NaN or Inf")
    return p


def _read_matrix(path: Path, field: str) -> np.ndarray:
    if not path.exists():
        raise ConnectomeError(f"{field} file {path} does not exist")
    if path.stat().st_size == 0:
        raise ConnectomeError(f"{field} file {path} is empty")
    try:
        if path.suffix == ".npy":
            return np.load(path)
        delim = None  # any whitespace: MRtrix writes space-delimited ".csv" files
        if path.suffix == ".tsv":
            delim = "\t"
        elif path.suffix == ".csv" and "," in path.read_text(errors="replace")[:4096]:
            delim = ","
        return np.loadtxt(path, delimiter=delim, ndmin=2, comments="#")
    except ValueError as exc:
        raise ConnectomeError(f"{field} file {path}: could not read a numeric matrix ({exc})") from None


def _is_upper_triangular(m: np.ndarray) -> bool:
    """True for the MRtrix default layout: entries only on/above the diagonal, some above."""
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2:
        return False
    return bool(np.all(np.tril(m, -1) == 0) and np.any(np.triu(m, 1) != 0))


def _read_labels(path: Path, n: int | None) -> list[str]:
    """Region labels from a plain list (one per line) or a colour lookup table."""
    if not path.exists():
        raise ConnectomeError(f"labels file {path} does not exist")
    rows = [r.strip() for r in path.read_text(errors="replace").splitlines()]
    rows = [r for r in rows if r and not r.startswith("#")]
    if not rows:
        raise ConnectomeError(f"labels file {path} is empty (field 'labels')")
    split = [r.split() for r in rows]
    is_lut = all(len(t) >= 2 and t[0].isdigit() for t in split)
    if not is_lut:
        return rows
    lut = {}
    for t in split:
        idx = int(t[0])
        if idx in lut:
            raise ConnectomeError(f"labels file {path}: index {idx} appears twice in the lookup table")
        lut[idx] = t[1]
    lut.pop(0, None)  # "Unknown" / background
    idx = sorted(lut)
    if n is not None and idx != list(range(1, n + 1)):
        if len(idx) >= n and idx[:n] == list(range(1, n + 1)):
            raise ConnectomeError(
                f"labels file {path}: the lookup table has {len(idx)} entries but the matrix has {n} "
                f"nodes; give the LUT of the parcellation the matrix was built from (indices 1..{n})")
        raise ConnectomeError(
            f"labels file {path}: lookup-table indices must be 1..{n} for a {n}-node matrix, "
            f"got {len(idx)} entries from {idx[0] if idx else '-'} to {idx[-1] if idx else '-'}")
    return [lut[i] for i in idx]
