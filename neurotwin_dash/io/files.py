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
import tempfile
import uuid
from pathlib import Path
from typing import Callable

__all__ = ["DataImportError", "OutputExistsError", "check_input", "one_bids_match", "write_new",
           "save_uploads", "read_yaml_mapping"]


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
    import yaml
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
