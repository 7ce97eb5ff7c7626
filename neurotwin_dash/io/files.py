"""Input-file checks and output writes that never lose data.

Every importer opens its input through :func:`check_input` (so a missing or empty file is
reported with its path and the field it was meant to fill) and writes through
:func:`write_new`, which

* refuses to replace an existing file unless ``overwrite=True``
  (:class:`OutputExistsError` names the file), and
* writes to a temporary file in the same folder first and moves it into place only when
  the write finished, so an import that fails half-way leaves any earlier output intact.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable

import yaml

__all__ = ["DataImportError", "OutputExistsError", "check_input", "one_bids_match", "write_new",
           "write_bytes", "write_text", "write_dataset", "is_zarr_store", "save_uploads", "read_yaml_mapping"]


class DataImportError(ValueError):
    """Unreadable or inconsistent user data; the message names the file and the field."""


class OutputExistsError(DataImportError):
    """The output file exists already and ``overwrite`` was not requested."""


def check_input(path, field: str) -> Path:
    """Return ``path`` as a :class:`~pathlib.Path` after checking it exists and is not empty.

    Parameters
    ----------
    path : str | os.PathLike
        File (or folder, for BrainVision/BIDS roots) given by the user.
    field : str
        What the file provides (``"EEG recording"``, ``"BOLD image"`` ...), used in messages.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise DataImportError(f"{field} file {p} does not exist")
    if p.is_file() and p.stat().st_size == 0:
        raise DataImportError(f"{field} file {p} is empty (0 bytes)")
    return p


def read_yaml_mapping(path, what: str, error: type[Exception] = DataImportError) -> dict:
    """Read a YAML file whose top level must be a mapping (a sweep or fit spec ...).

    A missing file raises :class:`FileNotFoundError`; any other top level raises ``error``,
    both naming ``what`` and the path."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise error(f"{what} {path}: expected a mapping of keys, got {type(data).__name__}")
    return data


def one_bids_match(hits, root, what: str, entities: dict, narrow: str):
    """The single BIDS path in ``hits``; a clear error when there is none or several.

    ``what`` names the file kind in the messages (``"EEG run"``), ``entities`` the entities that
    were asked for, ``narrow`` the entities that tell several matches apart.
    """
    if not hits:
        asked = " ".join(f"{k}={v!r}" for k, v in entities.items())
        raise DataImportError(f"BIDS root {root}: no {what} for {asked}")
    if len(hits) > 1:
        raise DataImportError(f"BIDS root {root}: {len(hits)} {what}s match "
                              f"({', '.join(h.basename for h in hits[:4])}); give {narrow}")
    return hits[0]


def write_new(path, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Write a file through ``write(tmp_path)`` without ever clobbering data by accident.

    Parameters
    ----------
    path : str | os.PathLike
        Final location. Its folder is created when missing.
    write : callable
        Called with a temporary path in the same folder (same suffixes as ``path``); it must
        create that file.
    overwrite : bool
        Replace an existing ``path``. Even then the old file stays in place until the new
        one is complete.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    OutputExistsError
        When ``path`` exists and ``overwrite`` is False (checked before and, atomically,
        after writing, so a file created meanwhile by another process is kept too).
    """
    path = Path(path).expanduser()
    if path.exists() and not overwrite:
        raise OutputExistsError(f"output file {path} exists already; choose another name or pass "
                                "overwrite=True (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix  # keep .nii.gz
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial{ext}")
    try:
        write(tmp)
        if not tmp.exists():
            raise DataImportError(f"writing {path} produced no file")
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path appeared meanwhile: no silent clobbering
            except FileExistsError:
                raise OutputExistsError(f"output file {path} was created by someone else while "
                                        "writing; kept it, nothing written") from None
            except OSError:  # filesystems without hard links
                if path.exists():
                    raise OutputExistsError(f"output file {path} exists already") from None
                os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _check_space(folder: Path, n_bytes: int, path: Path) -> None:
    """Refuse early, with a clear message, when ``folder`` cannot hold ``n_bytes`` more."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < n_bytes:
        raise OSError(28, f"not enough space to write {path}: needs {n_bytes / 1e6:.1f} MB, "
                          f"{free / 1e6:.1f} MB free on its file system; nothing was replaced")


def write_bytes(path, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` through :func:`write_new` (temporary file, fsync, atomic rename).

    A full disk raises :class:`OSError` (errno ``ENOSPC``) before anything is replaced."""
    path = Path(path).expanduser()
    data = bytes(data)

    def write(tmp):
        _check_space(tmp.parent, len(data), path)
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())     # on disk before the rename makes it the file

    return write_new(path, write, overwrite=overwrite)


def write_text(path, text: str, overwrite: bool = False) -> Path:
    """:func:`write_bytes` of UTF-8 text (JSON results, montages)."""
    return write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def is_zarr_store(path) -> bool:
    """True when ``path`` is a folder holding a zarr group (v2 ``.zgroup`` or v3 ``zarr.json``)."""
    p = Path(path)
    return p.is_dir() and ((p / ".zgroup").is_file() or (p / "zarr.json").is_file())


def write_dataset(ds, path, overwrite: bool = False, zarr_format: int | None = None) -> Path:
    """Write an :class:`xarray.Dataset` to ``.nc`` (netCDF4/HDF5) or ``.zarr`` without losing data.

    netCDF is encoded in memory first and then written by :func:`write_bytes`, so a full disk is a
    clean :class:`OSError` (not an HDF5 crash) and never touches an existing file. A ``.zarr``
    store is written to a temporary folder next to ``path`` and renamed into place; an existing
    ``path`` is replaced only with ``overwrite`` **and** only when it is a zarr store itself (a
    folder of other files is never deleted).

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is False, or it is a folder that is not a zarr store.
    """
    import dask  # noqa: PLC0415 - a heavy import, needed only here
    path = Path(path).expanduser()
    if path.suffix != ".zarr":
        # In-process scheduler: with a distributed client active, xarray would otherwise ask the
        # scheduler for a write lock named after the in-memory buffer (and fail).
        with dask.config.set(scheduler="synchronous"):
            data = ds.to_netcdf(engine="h5netcdf")
        return write_bytes(path, data, overwrite=overwrite)
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise OutputExistsError(f"output {path} exists already; choose another name or pass "
                                    "overwrite=True (--overwrite) to replace it")
        if path.is_symlink() or not is_zarr_store(path):
            raise OutputExistsError(f"output {path} exists and is not a zarr store; refusing to replace "
                                    "it (it may hold other files): choose another name")
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = path.with_name(f".{path.name}.{tag}.partial")
    old = path.with_name(f".{path.name}.{tag}.old")
    try:
        kw = {} if zarr_format is None else {"zarr_format": zarr_format}
        ds.to_zarr(tmp, mode="w-", **kw)
        if path.exists():
            os.rename(path, old)          # both renames stay in one folder: atomic each
        os.rename(tmp, path)
    except BaseException:
        if old.exists() and not path.exists():
            os.rename(old, path)          # put the previous store back
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
        if old.exists() and path.exists():
            shutil.rmtree(old)            # a zarr store we checked above
    return path


def save_uploads(files, folder=None) -> list[Path]:
    """Store uploaded files (e.g. a dashboard's FileInput) so the importers can open them.

    Parameters
    ----------
    files : mapping of file name → bytes
        All files of one recording together (BrainVision's ``.vhdr``/``.vmrk``/``.eeg``,
        EEGLAB's ``.set``/``.fdt``, a NIfTI with its JSON sidecar …): they are written side by
        side under their own names, which the formats use to find each other.
    folder : str | Path, optional
        Where to write; a fresh temporary folder when omitted. Existing files are never replaced.

    Returns
    -------
    list of Path
        The stored files, in the order given.
    """
    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="neurotwin_upload_"))
    out = []
    for name, content in dict(files).items():
        base = Path(str(name)).name  # no folders from the client
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", base):
            raise DataImportError(f"uploaded file name {name!r}: use letters, digits and . _ + - only")
        if not content:
            raise DataImportError(f"uploaded file {base} is empty (0 bytes)")
        out.append(write_new(folder / base, lambda tmp, c=content: tmp.write_bytes(bytes(c))))
    return out
