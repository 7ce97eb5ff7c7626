"""Out: simulations, metrics, fitted twins and simulated EEG as a BIDS-derivatives dataset.

A derivatives folder (usually ``<bids_root>/derivatives/neurotwin-dash``) sits beside a
subject's raw data (BIDS 1.11, "Derivatives"):

``dataset_description.json``
    ``DatasetType: "derivative"``, ``GeneratedBy`` (this package and version),
    ``SourceDatasets`` and ``DatasetLinks`` (``raw`` → the raw dataset) when known.
``descriptions.tsv``
    What every ``desc-<label>`` means (BIDS "descriptions" table).
``sub-<label>/[ses-<label>/]<datatype>/sub-<label>[_ses-][_task-][_run-]_desc-<label>_<suffix><ext>``
    * ``_eeg.vhdr/.vmrk/.eeg`` + ``_eeg.json`` + ``_channels.tsv``: simulated sensor EEG in
      BrainVision format — files the BIDS schema defines for derivatives;
    * ``_timeseries.nc``: a simulation (xarray ``batch × time × region``, netCDF);
    * ``_metrics.nc``: spectra, band powers, FC … (netCDF);
    * ``_twin.json``: a fitted twin (everything needed to re-run it).

    Region time series, metrics and twins have no suffix in the BIDS specification yet
    (BEP012 proposes ``timeseries``, BEP017 connectivity matrices), so their patterns are
    listed in ``.bidsignore`` — BIDS's own mechanism for files it does not define — and
    :func:`validate_derivatives` applies stricter neurotwin rules to them instead.

Every data file has a JSON sidecar with ``Description``, ``Sources``, ``GeneratedBy``,
``Parameters`` and ``Provenance`` (model, seed, connectome and its content hash, creation
time, Python/package versions). Nothing is ever overwritten unless asked (see
:func:`neurotwin_dash.io.files.write_new`).

:func:`validate_derivatives` checks a folder against the rules of the BIDS schema shipped by
``bidsschematools`` (the schema the ``bids-validator`` package uses): required
``dataset_description.json`` fields for a derivative dataset, every file name against the
schema's raw + derivative filename rules (or ``.bidsignore``), required EEG sidecar fields and
TSV columns, entity round-trips through :mod:`mne_bids`, and neurotwin's sidecar rules.
"""
from __future__ import annotations

import datetime as _dt
import fnmatch
import importlib.metadata as md
import json
import logging
import os
import platform
import re
import shutil
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import bidsschematools.rules as bsr
import bidsschematools.schema as bss
import mne
import numpy as np
import xarray as xr

from .. import __version__
from .files import DataImportError, OutputExistsError, write_new

__all__ = ["PIPELINE", "BIDS_VERSION", "BIDSIGNORE_PATTERNS", "DerivativeError", "ValidationReport",
           "init_derivatives", "derivative_path", "write_simulation", "write_metrics", "write_twin",
           "write_simulated_eeg", "read_derivative", "validate_derivatives"]

PIPELINE = "neurotwin-dash"
BIDS_VERSION = "1.11.0"
#: neurotwin outputs without a BIDS suffix yet; listed in .bidsignore.
BIDSIGNORE_PATTERNS = ("*_timeseries.nc", "*_timeseries.json", "*_metrics.nc", "*_metrics.json",
                       "*_twin.json")
_SUFFIX_EXT = {"timeseries": ".nc", "metrics": ".nc", "twin": ".json"}
_LABEL = re.compile(r"^[a-zA-Z0-9]+$")
_ROOT_FILES = {"dataset_description.json", "README", "README.md", "README.rst", "README.txt",
               "CHANGES", "LICENSE", "CITATION.cff", "descriptions.tsv", "descriptions.json",
               "participants.tsv", "participants.json", ".bidsignore"}


class DerivativeError(DataImportError):
    """A derivatives folder or an output request breaks the BIDS(-derivatives) rules."""


def _version() -> str:
    return str(__version__)


def _generated_by(extra: dict | None = None) -> list[dict]:
    gb = {"Name": PIPELINE, "Version": _version(),
          "Description": "Neural mass network neurotwins for transcranial electrical stimulation"}
    if extra:
        gb.update(extra)
    return [gb]


def _label(value, entity: str):
    if value is None:
        return None
    s = str(value)
    if not _LABEL.match(s):
        raise DerivativeError(f"BIDS entity {entity!r} = {s!r}: labels may contain only letters and "
                              "digits (no '_', '-', spaces)")
    return s


# --- dataset level ------------------------------------------------------------------------

def init_derivatives(root, raw_root=None, name: str = "neurotwin-dash outputs") -> Path:
    """Create (or check) a derivatives dataset at ``root``.

    Writes ``dataset_description.json`` (through :func:`mne_bids.make_dataset_description`,
    ``dataset_type="derivative"``), a README and ``.bidsignore`` when missing; an existing
    description is kept, but must describe a derivative dataset.

    Parameters
    ----------
    root : str | Path
        Derivatives folder, e.g. ``<bids_root>/derivatives/neurotwin-dash``.
    raw_root : str | Path, optional
        The raw BIDS dataset the outputs derive from; recorded in ``SourceDatasets`` and as
        the ``raw`` entry of ``DatasetLinks`` (so sidecars can cite ``bids:raw:<path>``).
    """
    from mne_bids import make_dataset_description  # mne-bids (~0.2 s): only when writing BIDS

    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    desc = root / "dataset_description.json"
    if desc.exists():
        try:
            meta = json.loads(desc.read_text())
        except json.JSONDecodeError as exc:
            raise DerivativeError(f"{desc}: not valid JSON ({exc})") from None
        if meta.get("DatasetType") != "derivative":
            raise DerivativeError(f"{desc}: DatasetType is {meta.get('DatasetType')!r}, not 'derivative'; "
                                  "refusing to write derivatives into a raw dataset (choose "
                                  "<bids_root>/derivatives/<pipeline>)")
    else:
        sources = None
        if raw_root is not None:
            rel = os.path.relpath(Path(raw_root).resolve(), root.resolve())
            sources = [{"URL": Path(rel).as_posix()}]
        make_dataset_description(path=root, name=name, dataset_type="derivative",
                                 generated_by=_generated_by(), source_datasets=sources,
                                 authors=["neurotwin-dash"], verbose=False)
        meta = json.loads(desc.read_text())
        meta["BIDSVersion"] = BIDS_VERSION
        if raw_root is not None:
            meta["DatasetLinks"] = {"raw": Path(os.path.relpath(Path(raw_root).resolve(),
                                                                root.resolve())).as_posix()}
        desc.write_text(json.dumps(meta, indent=2) + "\n")
    readme = root / "README.md"
    if not readme.exists():
        readme.write_text("# neurotwin-dash derivatives\n\nSimulations (`*_timeseries.nc`), metrics "
                          "(`*_metrics.nc`), fitted twins (`*_twin.json`) and simulated EEG "
                          "(`*_eeg.vhdr`) written by neurotwin-dash; every file has a JSON sidecar "
                          "with its parameters and provenance. netCDF files open with "
                          "`xarray.open_dataset`.\n")
    ignore = root / ".bidsignore"
    have = ignore.read_text().splitlines() if ignore.exists() else []
    missing = [p for p in BIDSIGNORE_PATTERNS if p not in have]
    if missing:
        head = [] if have else ["# neurotwin-dash outputs the BIDS specification has no suffix for yet",
                                "# (cf. BEP012 'timeseries', BEP017 connectivity); see README.md"]
        ignore.write_text("\n".join(have + head + missing) + "\n")
    return root


def _describe(root: Path, desc: str, text: str) -> None:
    """Add ``desc`` to descriptions.tsv (kept; a different text for a known desc raises)."""
    table = root / "descriptions.tsv"
    rows = {}
    if table.exists():
        for line in table.read_text().splitlines()[1:]:
            if line.strip():
                k, _, v = line.partition("\t")
                rows[k] = v
    text = " ".join(str(text).split())
    if desc in rows:
        return
    rows[desc] = text
    text = "desc_id\tdescription\n" + "".join(f"{k}\t{v}\n" for k, v in rows.items())
    write_new(table, lambda tmp: tmp.write_text(text), overwrite=True)  # atomic: rows only added


def derivative_path(root, subject, suffix: str, extension: str, datatype: str = "eeg", task=None,
                    session=None, run=None, desc=None) -> Path:
    """The BIDS path of one output (through :class:`mne_bids.BIDSPath`)."""
    from mne_bids import BIDSPath  # mne-bids (~0.2 s): only when writing BIDS

    if subject is None:
        raise DerivativeError("subject is required for a derivative file (BIDS entity 'sub')")
    ent = dict(subject=_label(subject, "sub"), session=_label(session, "ses"), task=_label(task, "task"),
               run=_label(run, "run"), description=_label(desc, "desc"))
    if datatype not in ("eeg", "func", "anat", "dwi", "beh"):
        raise DerivativeError(f"datatype {datatype!r}: allowed eeg, func, anat, dwi, beh")
    standard = suffix not in _SUFFIX_EXT and datatype != "func"  # mne-bids checks EEG/MEG/anat only
    bp = BIDSPath(root=Path(root), datatype=datatype, suffix=suffix, extension=extension,
                  check=standard, **ent)
    return Path(bp.fpath)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return obj.as_posix()
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    return obj


def _sources(root: Path, sources) -> list[str]:
    """Source files as BIDS URIs into the linked raw dataset when possible, else paths."""
    out = []
    links = {}
    desc = root / "dataset_description.json"
    if desc.exists():
        links = json.loads(desc.read_text()).get("DatasetLinks", {})
    raw = (root / links["raw"]).resolve() if "raw" in links else None
    for s in sources or []:
        p = Path(str(s))
        if raw is not None and p.exists():
            try:
                out.append("bids:raw:" + p.resolve().relative_to(raw).as_posix())
                continue
            except ValueError:
                pass
        out.append(str(s))
    return out


def _provenance(extra: dict | None = None) -> dict:
    versions = {}
    for pkg in ("numpy", "xarray", "mne", "mne-bids", "nilearn", "numba"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    prov = {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "neurotwin_dash": _version(), "python": platform.python_version(),
            "platform": platform.platform(), "packages": versions}
    prov.update(_jsonable(extra or {}))
    return prov


def _write_sidecar(data_path: Path, meta: dict, overwrite: bool) -> Path:
    side = data_path.with_name(data_path.name[: -len("".join(_ext(data_path)))] + ".json")
    if side == data_path:
        return side
    text = json.dumps(_jsonable(meta), indent=2, sort_keys=False) + "\n"
    return write_new(side, lambda tmp: tmp.write_text(text), overwrite=overwrite)


def _ext(p: Path) -> str:
    return ".nii.gz" if p.name.endswith(".nii.gz") else p.suffix


def _write_dataset(root, ds: xr.Dataset, suffix: str, subject, desc, description: str, task,
                   session, run, datatype, parameters, sources, provenance, overwrite) -> Path:
    root = init_derivatives(root)
    if desc is None:
        raise DerivativeError("desc is required (BIDS entity 'desc'): a short label saying what the "
                              "file holds, e.g. 'jansenrit' or 'K0p5'")
    path = derivative_path(root, subject, suffix, ".nc", datatype, task, session, run, desc)
    side = path.with_suffix(".json")
    if not overwrite:
        for p in (path, side):
            if p.exists():
                raise OutputExistsError(f"output file {p} exists already; pass overwrite=True to replace it")
    out = ds.copy()
    out.attrs = {k: (json.dumps(_jsonable(v)) if isinstance(v, (dict, list, tuple)) else v)
                 for k, v in ds.attrs.items() if v is not None}
    write_new(path, lambda tmp: out.to_netcdf(tmp), overwrite=overwrite)
    variables = {str(k): {"dims": list(v.dims), **{a: str(v.attrs[a]) for a in ("units", "long_name")
                                                   if a in v.attrs}} for k, v in ds.data_vars.items()}
    meta = {"Description": description, "Sources": _sources(root, sources),
            "GeneratedBy": _generated_by(), "Parameters": parameters or {},
            "Provenance": _provenance(provenance), "Variables": variables,
            "Format": "netCDF4 (open with xarray.open_dataset)"}
    _write_sidecar(path, meta, overwrite)
    _describe(root, desc, description)
    return path


def write_simulation(root, sim: xr.Dataset, subject, desc=None, task="rest", session=None, run=None,
                     datatype: str = "eeg", description: str | None = None, sources=None,
                     overwrite: bool = False) -> Path:
    """Write a simulation (the ``xarray.Dataset`` of :func:`neurotwin_dash.simulate.simulate`)
    as ``…_desc-<desc>_timeseries.nc`` with a sidecar holding its parameters and provenance.

    ``desc`` defaults to the model name (letters and digits only). Parameters come from the
    simulation's ``params`` attribute (JSON) plus ``dt_ms``, ``seed``, ``duration_s`` …;
    provenance records the connectome name and content hash.
    """
    attrs = dict(sim.attrs)
    model = str(attrs.get("model", "simulation"))
    desc = desc or re.sub(r"[^a-zA-Z0-9]", "", model) or "simulation"
    params = attrs.get("params", {})
    if isinstance(params, str):
        try:
            params = json.loads(params)
        except json.JSONDecodeError:
            params = {"params": params}
    for key in ("dt_ms", "sample_rate_hz", "duration_s", "transient_s", "seed", "method"):
        if key in attrs:
            params.setdefault(key, attrs[key])
    prov = {k: v for k, v in attrs.items() if k != "params"}  # model, seed, connectome + hash, backend …
    text = description or f"{model} neural mass network simulation"
    return _write_dataset(root, sim, "timeseries", subject, desc, text, task, session, run, datatype,
                          params, sources, prov, overwrite)


def write_metrics(root, metrics: xr.Dataset, subject, desc, task="rest", session=None, run=None,
                  datatype: str = "eeg", description: str | None = None, parameters=None, sources=None,
                  overwrite: bool = False) -> Path:
    """Write metrics (spectra, band powers, FC, fit scores …) as ``…_desc-<desc>_metrics.nc``."""
    text = description or f"metrics ({', '.join(map(str, metrics.data_vars))})"
    return _write_dataset(root, metrics, "metrics", subject, desc, text, task, session, run, datatype,
                          parameters or {k: v for k, v in metrics.attrs.items()}, sources, None, overwrite)


def write_twin(root, twin, subject, desc, task="rest", session=None, datatype: str = "eeg",
               description: str = "fitted neurotwin", sources=None, overwrite: bool = False) -> Path:
    """Write a fitted twin as ``…_desc-<desc>_twin.json`` (sidecar-free: the file is JSON).

    ``twin`` is a dict or an object with ``to_dict()``; its content goes under ``"Twin"`` next
    to ``GeneratedBy``, ``Sources`` and ``Provenance``.
    """
    root = init_derivatives(root)
    content = twin.to_dict() if hasattr(twin, "to_dict") else dict(twin)
    path = derivative_path(root, subject, "twin", ".json", datatype, task, session, None, desc)
    doc = {"Description": description, "Sources": _sources(root, sources), "GeneratedBy": _generated_by(),
           "Provenance": _provenance(), "Twin": _jsonable(content)}
    text = json.dumps(doc, indent=2) + "\n"
    write_new(path, lambda tmp: tmp.write_text(text), overwrite=overwrite)
    _describe(root, desc, description)
    return path


def write_simulated_eeg(root, raw, subject, desc, task="rest", session=None, run=None,
                        description: str = "simulated EEG", parameters=None, sources=None,
                        power_line_hz: float = 50.0, overwrite: bool = False) -> Path:
    """Write an ``mne.io.Raw`` of simulated EEG as BIDS EEG (BrainVision) in the derivatives.

    Produces ``_eeg.vhdr/.vmrk/.eeg``, ``_eeg.json`` (the schema's required EEG fields plus
    parameters and provenance) and ``_channels.tsv``.
    """

    root = init_derivatives(root)
    vhdr = derivative_path(root, subject, "eeg", ".vhdr", "eeg", task, session, run, desc)
    companions = [vhdr.with_suffix(e) for e in (".vmrk", ".eeg", ".json")] + \
        [vhdr.with_name(vhdr.name.replace("_eeg.vhdr", "_channels.tsv"))]
    if not overwrite:
        for p in [vhdr] + companions:
            if p.exists():
                raise OutputExistsError(f"output file {p} exists already; pass overwrite=True to replace it")
    # BrainVision is three files that name each other: export them under their final names into
    # a hidden scratch folder, then move each into place without clobbering (write_new).
    scratch = vhdr.parent / f".{uuid.uuid4().hex[:8]}.partial"
    scratch.mkdir(parents=True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Converting to float32")
            mne.export.export_raw(scratch / vhdr.name, raw, fmt="brainvision", verbose=False)
        for made in sorted(scratch.iterdir(), key=lambda q: q.suffix == ".vhdr"):  # header last
            write_new(vhdr.parent / made.name, lambda tmp, src=made: os.replace(src, tmp),
                      overwrite=overwrite)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    picks = mne.pick_types(raw.info, eeg=True)
    meta = {"TaskName": task, "EEGReference": "average" if _is_avg_ref(raw) else "n/a",
            "SamplingFrequency": float(raw.info["sfreq"]), "PowerLineFrequency": power_line_hz,
            "SoftwareFilters": "n/a", "EEGChannelCount": int(len(picks)),
            "RecordingDuration": float(raw.times[-1] + 1 / raw.info["sfreq"]),
            "RecordingType": "continuous", "Manufacturer": PIPELINE + " (simulation)",
            "Description": description, "Sources": _sources(root, sources),
            "GeneratedBy": _generated_by(), "Parameters": parameters or {}, "Provenance": _provenance()}
    _write_sidecar(vhdr, meta, overwrite)
    ch_types = raw.get_channel_types()
    lines = ["name\ttype\tunits\tsampling_frequency\tstatus"]
    for name, kind in zip(raw.ch_names, ch_types):
        lines.append(f"{name}\t{kind.upper()}\tV\t{raw.info['sfreq']:g}\t"
                     f"{'bad' if name in raw.info['bads'] else 'good'}")
    text = "\n".join(lines) + "\n"
    write_new(companions[-1], lambda tmp: tmp.write_text(text), overwrite=overwrite)
    _describe(root, desc, description)
    return vhdr


def _is_avg_ref(raw) -> bool:
    return bool(raw.info.get("custom_ref_applied")) or any(
        "Average EEG reference" in str(p.get("desc", "")) for p in raw.info["projs"])


def read_derivative(path):
    """Open a derivative written here: ``.nc`` → xarray.Dataset (with ``attrs['sidecar']``),
    ``_twin.json`` → dict, ``_eeg.vhdr`` → ``mne.io.Raw``."""
    p = Path(path)
    if p.suffix == ".nc":
        ds = xr.load_dataset(p)
        side = p.with_suffix(".json")
        if side.exists():
            ds.attrs["sidecar"] = side.read_text()
        return ds
    if p.suffix == ".json":
        return json.loads(p.read_text())
    if p.suffix == ".vhdr":
        return mne.io.read_raw_brainvision(p, preload=True, verbose=False)
    raise DerivativeError(f"{p}: unknown derivative type (allowed .nc, .json, .vhdr)")


# --- validation ---------------------------------------------------------------------------

@dataclass
class ValidationReport:
    """Outcome of :func:`validate_derivatives`."""

    root: Path
    schema_version: str
    bids_version: str
    checked: list = field(default_factory=list)   # relative paths checked against the schema
    ignored: list = field(default_factory=list)   # relative paths matched by .bidsignore
    errors: list = field(default_factory=list)    # "path: problem" strings

    @property
    def valid(self) -> bool:
        return not self.errors

    def __str__(self):
        head = (f"BIDS derivatives {self.root}: {len(self.checked)} files matched the BIDS {self.bids_version} "
                f"schema, {len(self.ignored)} neurotwin files via .bidsignore; ")
        return head + ("valid" if self.valid else f"{len(self.errors)} error(s):\n  " + "\n  ".join(self.errors))


def _schema():
    logging.getLogger("bidsschematools").setLevel(logging.WARNING)
    schema = bss.load_schema()
    regexes = []
    for group in (schema.rules.files.common, schema.rules.files.raw, schema.rules.files.deriv):
        regexes += [r["regex"] for r in bsr.regexify_filename_rules(group, schema, level=2)]
    return schema, [re.compile(r) for r in regexes]


def _required(fields) -> list[str]:
    out = []
    for name, level in dict(fields).items():
        lvl = level if isinstance(level, str) else dict(level).get("level")
        if lvl == "required":
            out.append(name)
    return out


def _ignored(rel: str, patterns: list[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    for pat in patterns:
        pat = pat.strip()
        if not pat or pat.startswith("#"):
            continue
        if fnmatch.fnmatch(name, pat) or fnmatch.fnmatch(rel, pat.lstrip("/")):
            return True
    return False


def validate_derivatives(root, raise_on_error: bool = False) -> ValidationReport:
    """Check a derivatives folder against the BIDS schema and neurotwin's provenance rules.

    Checks
    ------
    1. ``dataset_description.json``: valid JSON; the fields the schema requires (``Name``,
       ``BIDSVersion``; ``GeneratedBy`` for a derivative) with ``DatasetType == "derivative"``;
       every ``GeneratedBy`` entry has a ``Name`` (schema ``GeneratedBy.items.required``).
    2. Every file outside the root-level metadata matches a filename rule of the schema
       (``rules.files.common``, ``raw`` and ``deriv``, the regexes ``bids-validator`` builds),
       or a ``.bidsignore`` pattern.
    3. Every ``sub-*`` file sits in its subject's (and session's) folder, and its entities
       round-trip: :func:`mne_bids.get_entities_from_fname` → :class:`mne_bids.BIDSPath` gives
       the same name.
    4. EEG sidecars carry the schema's required EEG fields; ``*_channels.tsv`` and
       ``descriptions.tsv`` start with the schema's required columns; every ``desc`` used is
       described in ``descriptions.tsv``.
    5. neurotwin files (``.bidsignore``-d): a JSON sidecar (or the JSON itself) with
       ``Description``, ``GeneratedBy`` and ``Provenance``; netCDF files open with xarray.

    Returns
    -------
    ValidationReport
        ``report.valid`` is True when no check failed; ``raise_on_error`` raises
        :class:`DerivativeError` with the report instead.
    """
    from mne_bids import BIDSPath, get_entities_from_fname  # mne-bids (~0.2 s): only when validating BIDS

    root = Path(root)
    schema, regexes = _schema()
    rep = ValidationReport(root=root, schema_version=str(schema.get("schema_version", "?")),
                           bids_version=str(schema.get("bids_version", "?")))
    err = rep.errors.append
    desc_file = root / "dataset_description.json"
    if not desc_file.exists():
        err("dataset_description.json: missing (required at the dataset root)")
        meta = {}
    else:
        try:
            meta = json.loads(desc_file.read_text())
        except json.JSONDecodeError as exc:
            err(f"dataset_description.json: not valid JSON ({exc})")
            meta = {}
    if meta:
        required = _required(schema.rules.json.dataset.dataset_description.fields)
        if meta.get("DatasetType") == "derivative":
            required += _required(schema.rules.json.dataset.derivative_description.fields)
        else:
            err(f"dataset_description.json: DatasetType is {meta.get('DatasetType')!r}; a derivatives "
                "folder needs 'derivative'")
        for name in required:
            if name not in meta:
                err(f"dataset_description.json: required field {name!r} missing")
        gb = meta.get("GeneratedBy")
        item_req = list(schema.objects.metadata.GeneratedBy["items"]["required"])
        if gb is not None:
            if not isinstance(gb, list) or len(gb) < 1:
                err("dataset_description.json: GeneratedBy must be a non-empty list")
            else:
                for k, entry in enumerate(gb):
                    for name in item_req:
                        if not isinstance(entry, dict) or name not in entry:
                            err(f"dataset_description.json: GeneratedBy[{k}] lacks required {name!r}")
    ignore_file = root / ".bidsignore"
    patterns = ignore_file.read_text().splitlines() if ignore_file.exists() else []
    described = set()
    if (root / "descriptions.tsv").exists():
        lines = (root / "descriptions.tsv").read_text().splitlines()
        cols = lines[0].split("\t") if lines else []
        if cols[:2] != ["desc_id", "description"]:
            err(f"descriptions.tsv: columns must start with desc_id, description; got {cols[:2]}")
        described = {ln.split("\t")[0] for ln in lines[1:] if ln.strip()}
    eeg_required = []
    for group in ("EEGRequired", "EEGTaskInformation"):
        eeg_required += _required(schema.rules.sidecars.eeg[group].fields)
    chan_cols = [schema.objects.columns[c]["name"]
                 for c in schema.rules.tabular_data.eeg.EEGChannels.initial_columns]

    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for fname in sorted(files):
            path = Path(dirpath) / fname
            rel = path.relative_to(root).as_posix()
            if fname.startswith(".") or ".partial" in fname:
                if ".partial" in fname:
                    err(f"{rel}: left-over partial write")
                continue
            if "/" not in rel and fname in _ROOT_FILES:
                continue
            ignored = _ignored(rel, patterns)
            if ignored:
                rep.ignored.append(rel)
            elif any(r.fullmatch(rel) for r in regexes):
                rep.checked.append(rel)
            else:
                err(f"{rel}: file name matches no BIDS {rep.bids_version} filename rule and no "
                    ".bidsignore pattern")
                continue
            if not fname.startswith("sub-"):
                continue
            try:
                ents = get_entities_from_fname(fname, on_error="raise")
            except (KeyError, ValueError, RuntimeError) as exc:
                err(f"{rel}: entities do not parse ({exc})")
                continue
            parts = rel.split("/")
            if parts[0] != f"sub-{ents['subject']}":
                err(f"{rel}: in folder {parts[0]} but named sub-{ents['subject']}")
            if ents.get("session") and (len(parts) < 3 or parts[1] != f"ses-{ents['session']}"):
                err(f"{rel}: session entity ses-{ents['session']} but not in a ses-{ents['session']} folder")
            m = re.match(r"^(.*)_([a-zA-Z0-9]+)((?:\.[a-zA-Z0-9]+)+)$", fname)
            if not m:
                err(f"{rel}: no <suffix><extension> ending")
                continue
            suffix, ext = m.group(2), m.group(3)
            bp = BIDSPath(**{k: v for k, v in ents.items() if v is not None}, suffix=suffix,
                          extension=ext, datatype=parts[-2] if len(parts) > 2 else None, check=False)
            if bp.basename != fname:
                err(f"{rel}: BIDSPath round-trip gives {bp.basename} (entity order or labels wrong)")
            if ents.get("description") and ents["description"] not in described:
                err(f"{rel}: desc-{ents['description']} is not described in descriptions.tsv")
            if suffix == "eeg" and ext == ".json":
                side = json.loads(path.read_text())
                for name in eeg_required:
                    if name not in side:
                        err(f"{rel}: required EEG sidecar field {name!r} missing")
            if suffix == "channels" and ext == ".tsv":
                head = path.read_text().splitlines()[:1]
                got = head[0].split("\t") if head else []
                if got[: len(chan_cols)] != chan_cols:
                    err(f"{rel}: columns must start with {chan_cols}, got {got[:len(chan_cols)]}")
            if ignored and suffix in _SUFFIX_EXT and ext == _SUFFIX_EXT[suffix]:
                side_path = path if ext == ".json" else path.with_suffix(".json")
                if not side_path.exists():
                    err(f"{rel}: no JSON sidecar {side_path.name} with parameters and provenance")
                    continue
                try:
                    side = json.loads(side_path.read_text())
                except json.JSONDecodeError as exc:
                    err(f"{side_path.relative_to(root).as_posix()}: not valid JSON ({exc})")
                    continue
                for name in ("Description", "GeneratedBy", "Provenance"):
                    if name not in side:
                        err(f"{side_path.relative_to(root).as_posix()}: neurotwin sidecar field {name!r} missing")
                if ext == ".nc":
                    try:
                        xr.open_dataset(path).close()
                    except Exception as exc:  # any reader failure means a broken file
                        err(f"{rel}: netCDF file does not open ({exc})")
    if raise_on_error and rep.errors:
        raise DerivativeError(str(rep))
    return rep
