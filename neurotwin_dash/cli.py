"""The ``neurotwin`` command line.

Each sub-command is a ``_add_<name>(subparsers)`` function that declares its options and
points ``func`` at the code that runs it; the library does the work, this module only
parses arguments and prints.

Conventions (as in git, pip, mne): ``--version``; ``-q``/``-v`` set the level of the
``neurotwin_dash`` logger (warnings only / debug); exit status 0 on success, 1 when the work
failed, 2 for a usage error (bad option or input, found before any cluster starts or any
computing); every option's default is shown in ``--help``; progress bars only on a terminal.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from pathlib import Path

import xarray as xr

from . import __version__, catalog, infer, sweep
from .analysis.biomarkers import analyse_file
from .cluster import add_cluster_arguments, client_from_arguments
from .connectome import Connectome
from .fit.personal import add_personalize_parser
from .fit.specs import add_export_parser, add_fit_parser, simulate_twin_cli
from .guards import dt_note
from .infer.usecases import preset
from .io import derivatives as D
from .io.derivatives import validate_derivatives
from .io.eeg_in import import_eeg
from .io.files import check_input, write_dataset
from .io.fmri_in import find_bids_bold, import_fmri
from .models import get_model, model_names
from .simulate import all_params, plan, run_plan
from .stimulation.coupling import STIM_PARAMS, tes_drives
from .stimulation.efield import bipolar_over, electrode_fields, field_summary, montage_field
from .stimulation.montage import Montage, user_limits
from .stimulation.optimize import Target, optimize_montage
from .stimulation.waveforms import parse_waveform
from .ui import serve

__all__ = ["main", "build_parser"]

log = logging.getLogger("neurotwin_dash")

#: Exit status of a command whose work failed / of a usage error (argparse's own convention).
EXIT_FAILURE, EXIT_USAGE = 1, 2


class _HelpFormatter(argparse.HelpFormatter):
    """Adds ``(default: X)`` to an option's help unless the help already names its default."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or not action.option_strings or not _has_default(action):
            return text
        return f"{text} (default: %(default)s)"


def _has_default(action) -> bool:
    # identity, not ==: 0 and 0.0 are defaults worth showing, False (a flag left off) is not
    return not (action.default is None or action.default is False or action.default is argparse.SUPPRESS
                or action.default == [])


def _add_catalog(sub):
    p = sub.add_parser("catalog", help="list or describe the datasets of the data catalog")
    csub = p.add_subparsers(dest="catalog_cmd", required=True)
    csub.add_parser("list", help="print the catalog as a table").set_defaults(func=_catalog_list)
    d = csub.add_parser("show", help="describe one dataset")
    d.add_argument("name")
    d.set_defaults(func=_catalog_show)


def _catalog_list(args):
    print(catalog.table())


def _catalog_show(args):
    entry = catalog.describe(args.name)
    for key, value in entry.items():
        print(f"{key}: {value}")
    obj = catalog.load(args.name)
    print(repr(obj))


def _add_serve(sub):
    p = sub.add_parser("serve", help="serve the dashboards (explorer, montage, fit) with panel serve",
                       description="Serve the Panel dashboards. Wraps `panel serve`; see the README "
                                   "section 'Serving to collaborators' (auth, OAuth, JupyterHub, Dask).")
    p.add_argument("apps", nargs="*", help="apps to serve (default: all)")
    p.add_argument("--port", type=int, default=5006, help="TCP port (default 5006; 0 = any free port)")
    p.add_argument("--address", default=None,
                   help="interface to listen on (default 127.0.0.1: this machine only; 0.0.0.0: all)")
    p.add_argument("--basic-auth", metavar="FILE", default=None,
                   help="credentials file (JSON {user: password} or user:password lines, chmod 600); "
                        "turns login on")
    p.add_argument("--cookie-secret", default=None, help=argparse.SUPPRESS)  # refused: visible in ps
    p.add_argument("--cookie-secret-file", metavar="FILE", default=None,
                   help="private file holding the secret that signs login cookies (or set "
                        "PANEL_COOKIE_SECRET); random per run if omitted")
    p.add_argument("--use-xheaders", action="store_true",
                   help="behind an HTTPS reverse proxy: trust X-Forwarded-* (login cookies become Secure)")
    p.add_argument("--num-threads", type=int, default=None, help="threads per server process for callbacks")
    p.add_argument("--num-procs", type=int, default=1, help="server processes (0 = one per core)")
    p.add_argument("--allow-websocket-origin", action="append", default=None, metavar="HOST[:PORT]",
                   help="allowed websocket origin (repeatable; needed behind a proxy)")
    p.add_argument("--prefix", default=None, help="URL prefix (e.g. behind jupyter-server-proxy)")
    p.add_argument("--oauth-provider", default=None, metavar="NAME",
                   help="Panel OAuth provider (github, google, azure, okta, generic...); key and secret "
                        "from PANEL_OAUTH_KEY / PANEL_OAUTH_SECRET in the environment")
    p.add_argument("--scheduler", dest="dask_scheduler", default=None, metavar="ADDRESS",
                   help="submit simulations to this Dask scheduler (default: a local cluster per "
                        "server process)")
    p.add_argument("--dask-scheduler", dest="dask_scheduler", help=argparse.SUPPRESS)  # old name
    p.add_argument("--show", action="store_true", help="open a browser")
    p.add_argument("--dry-run", action="store_true", help="print the panel serve command and exit")
    p.set_defaults(func=_serve)


def _serve(args):
    if args.cookie_secret is not None:
        raise ValueError("--cookie-secret on the command line is visible to every user of this machine "
                         "(ps); set PANEL_COOKIE_SECRET or use --cookie-secret-file FILE (chmod 600)")
    secret = serve.read_cookie_secret(args.cookie_secret_file) if args.cookie_secret_file else None
    argv, env = serve.panel_serve_command(
        apps=args.apps, port=args.port, address=args.address, basic_auth=args.basic_auth,
        cookie_secret=secret, num_threads=args.num_threads, num_procs=args.num_procs,
        allow_websocket_origin=args.allow_websocket_origin, prefix=args.prefix, show=args.show,
        dask_scheduler=args.dask_scheduler, oauth_provider=args.oauth_provider,
        use_xheaders=args.use_xheaders)
    if args.dry_run:
        print(" ".join(argv))
        for key in sorted(env):
            print(f"{key}={'***' if 'SECRET' in key else env[key]}")
        return 0
    return serve.run(argv, env)


def _add_sweep(sub):
    p = sub.add_parser("sweep", help="run a parameter sweep (YAML spec) on Dask into a zarr store",
                       description="Run a sweep spec on Dask into a zarr store; re-running the same "
                                   "spec into the same store computes only the missing batches.")
    p.add_argument("spec", help="YAML sweep spec (see neurotwin_dash.sweep.SweepSpec)")
    p.add_argument("--out", required=True, help="zarr store to create or resume")
    add_cluster_arguments(p)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing sweep store (only a store made by neurotwin sweep)")
    p.set_defaults(func=_sweep)


def _sweep(args):
    spec = sweep.SweepSpec.from_yaml(args.spec)     # the spec and its samples are checked before
    sweep.make_samples(spec)                         # a cluster starts
    res = sweep.run_sweep(spec, args.out, client=client_from_arguments(args), overwrite=args.overwrite,
                          progress=not args.no_progress)
    ds = res.dataset
    n_div = int(ds["diverged"].sum()) if "diverged" in ds else 0
    print(f"{args.out}: {ds.sizes.get('sample', 0)} samples in {res.n_batches} batches; computed "
          f"{len(res.computed)}, already done {len(res.skipped)}"
          f"{f' (damaged and recomputed: {len(res.repaired)})' if res.repaired else ''}; diverged {n_div}; "
          f"{res.seconds:.1f} s")


def _add_infer_train(sub):
    p = sub.add_parser("infer-train", help="train an amortised posterior (simulation-based inference)",
                       description="Simulate from the prior on Dask (resumable sweeps in --workdir), train a "
                                   "neural posterior estimator (sbi), calibrate it on held-out simulations and "
                                   "save it (posterior.json + weights.safetensors) for the /infer page.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--spec", help="YAML inference spec (see neurotwin_dash.infer.InferSpec)")
    src.add_argument("--preset", help="a use case: jansen_rit_column, ad_inhibition, network_globals")
    p.add_argument("--n-simulations", type=int, default=None, help="training simulations (preset default otherwise)")
    p.add_argument("--workdir", required=True, help="folder of the training sweeps (reused: resumes)")
    p.add_argument("--out", required=True, help="posterior directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing posterior directory")
    add_cluster_arguments(p)
    p.set_defaults(func=_infer_train)


def _infer_train(args):
    if Path(args.out).exists() and not args.overwrite:     # before any simulation
        raise ValueError(f"--out {args.out} exists; pass --overwrite to replace it")
    if args.spec:
        spec = infer.InferSpec.from_yaml(args.spec)
        if args.n_simulations:
            spec = infer.InferSpec.from_dict({**spec.to_dict(), "n_simulations": args.n_simulations})
    else:
        spec = preset(args.preset, **({"n_simulations": args.n_simulations} if args.n_simulations else {}))
    post = infer.train(spec, args.workdir, client=client_from_arguments(args), progress=not args.no_progress)
    post.save(args.out, overwrite=args.overwrite)
    print(f"{args.out}: {post!r}; {post.info['diverged_fraction']:.1%} of the simulations diverged "
          f"(excluded), training {post.info['train_seconds']:.0f} s")
    print(post.calibration_table())


COMMANDS = [_add_catalog, _add_serve, _add_sweep, _add_infer_train]


def _add_optimize_montage(sub):
    p = sub.add_parser(
        "optimize-montage", help="optimize tES electrode currents for target regions (Stimweaver-style QP)",
        description="Find electrode currents whose normal field E_n best matches a target (desired E_n in "
                    "the target regions, 0 elsewhere) under the stimulator limits; write the montage as JSON.")
    p.add_argument("--target", action="append", required=True, metavar="LABEL",
                   help="target region label (repeat for several), e.g. lPFCDL")
    p.add_argument("--en", type=float, default=0.5, metavar="V_PER_M",
                   help="desired normal field in the targets, V/m (positive = depolarising; default 0.5)")
    p.add_argument("--weight", type=float, default=100.0, help="target weight vs 1 for other regions (default 100)")
    p.add_argument("--max-electrodes", type=int, default=8, help="most active electrodes (default 8)")
    p.add_argument("--max-current", type=float, default=2.0, metavar="MA", help="per-electrode limit, mA (default 2)")
    p.add_argument("--max-total", type=float, default=4.0, metavar="MA", help="total injected limit, mA (default 4)")
    p.add_argument("--connectome", default="tvb76", help="catalog connectome (default tvb76)")
    p.add_argument("--layout", default="standard_1020", help="electrode layout of the candidates (default standard_1020)")
    _add_head_option(p)
    p.add_argument("--out", required=True, help="montage JSON to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_optimize_montage)


def _optimize_montage(args):
    limits = user_limits(max_current_mA=args.max_current, max_total_mA=args.max_total,
                    max_electrodes=args.max_electrodes)
    fields = electrode_fields(args.connectome, args.layout, head=args.head)
    res = optimize_montage(Target(args.target, en_V_m=args.en, weight=args.weight), fields, limits=limits)
    bip = bipolar_over(args.target, fields, current_mA=min(2.0, args.max_current))
    ref = field_summary(montage_field(bip, fields), args.target)
    res.montage.save(args.out, metrics={**res.metrics, "target": list(args.target),
                                        "connectome": args.connectome,
                                        "bipolar_reference": {"montage": bip.to_dict()["currents_mA"], **ref}},
                     overwrite=args.overwrite)
    print(f"{args.out}: {len(res.montage.active_electrodes)} electrodes, "
          f"{res.montage.total_injected_mA:.3g} mA injected")
    for name, cur in res.montage.currents_mA.items():
        print(f"  {name:>5} {cur:+.4f} mA")
    m = res.metrics
    print(f"target E_n {m['target_En']:.3f} V/m, off-target mean |E| {m['offtarget_Emag']:.3f} V/m, "
          f"focality {m['focality']:.2f} (bipolar {bip.active_electrodes[0]}-{bip.active_electrodes[1]}: "
          f"E_n {ref['target_En']:.3f}, off-target {ref['offtarget_Emag']:.3f}, focality {ref['focality']:.2f})")


COMMANDS.append(_add_optimize_montage)


def _add_head_option(p):
    """``--head``: the head model of EEG lead fields and tES fields (docs/science.md §10)."""
    p.add_argument("--head", default="sphere", metavar="HEAD",
                   help="head model: sphere (default; four shells fitted to the electrodes), template_bem "
                        "(three-layer BEM of MNE's fsaverage, built offline once and cached) or a path to a "
                        "*-bem-sol.fif in fsaverage's MRI frame")


def _add_stimulation_options(p):
    g = p.add_argument_group("tES stimulation")
    g.add_argument("--montage", default=None, metavar="JSON",
                   help="tES montage file (neurotwin optimize-montage output or hand-written)")
    g.add_argument("--waveform", default=None, metavar="TEXT",
                   help="e.g. tacs:40Hz, tacs:10Hz:phase=90, tdcs:ramp=1s, 'tdcs + 0.5*tacs:40Hz' "
                        "(default tdcs:ramp=0 with --montage)")
    g.add_argument("--stim-lambda", type=float, default=None, metavar="MV_PER_V_M",
                   help="soma polarisation per V/m of normal field (default 0.2, range 0-1)")
    _add_head_option(g)


def _stimulation_drives(args, connectome):
    """Drives for ``simulate --montage/--waveform`` (None without a montage)."""
    if getattr(args, "montage", None) is None:
        if getattr(args, "waveform", None) is not None:
            raise ValueError("--waveform needs --montage (the electrode currents it scales)")
        return None
    if connectome is None or (isinstance(connectome, str) and connectome.lower() == "none"):
        raise ValueError("--montage needs a connectome with region centres (not 'none')")
    return tes_drives(Montage.load(args.montage), args.waveform or "tdcs:ramp=0", connectome=connectome,
                      lambda_mV_per_V_m=args.stim_lambda, head=args.head)


def _record_stimulation(ds, args):
    """Provenance of ``simulate --montage``: montage JSON, waveform and λ in the dataset attrs."""
    if getattr(args, "montage", None) is None:
        return
    ds.attrs["stim_montage"] = json.dumps(Montage.load(args.montage).to_dict())
    ds.attrs["stim_waveform"] = parse_waveform(args.waveform or "tdcs:ramp=0").describe()
    ds.attrs["stim_lambda_mV_per_V_m"] = float(
        STIM_PARAMS["stim_lambda_mV_per_V_m"].default if args.stim_lambda is None else args.stim_lambda)
    ds.attrs["stim_head"] = str(args.head)



def _add_bids_entities(p):
    """``--subject/--task/--session/--run``: which recording of a BIDS root to read."""
    for entity in ("subject", "task", "session", "run"):
        p.add_argument(f"--{entity}", help=f"BIDS {entity} (when the input is a BIDS root)")


def _add_import_eeg(sub):
    p = sub.add_parser(
        "import-eeg", help="EEG recording or BIDS dataset -> fitting targets (netCDF)",
        description="Read an EEG recording (EDF/BDF, BrainVision, EEGLAB, FIF, Neuroelectrics NEDF ...) "
                    "or a BIDS dataset (mne-bids) and write its spectra, band powers, alpha peak, gamma "
                    "power and band-limited sensor FC. An existing output is never replaced without "
                    "--overwrite.")
    p.add_argument("path", help="recording file, or a BIDS root (then --subject/--task)")
    p.add_argument("--out", required=True, help="netCDF file to write, e.g. targets.nc")
    p.add_argument("--channels", help="required channels: comma list (Fp1,Fz,O1) or a montage name "
                                      "(standard_1020, starstim20 ...); default all good EEG channels")
    _add_bids_entities(p)
    p.add_argument("--reference", choices=["average", "none"], default="average",
                   help="re-reference to the average like simulated EEG (default) or keep the recording's")
    p.add_argument("--fc-method", choices=["aec", "plv", "coh"], default="aec",
                   help="sensor FC: amplitude-envelope correlation (default), PLV or coherence")
    p.add_argument("--fc-bands", default="alpha,beta,gamma", help="bands of the FC (default alpha,beta,gamma)")
    p.add_argument("--source-connectome", metavar="NAME",
                   help="also invert through this connectome's lead field (region-level targets)")
    _add_head_option(p)
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_import_eeg)


def _import_eeg(args):
    channels = args.channels
    if channels and "," in channels:
        channels = [c.strip() for c in channels.split(",") if c.strip()]
    ds = import_eeg(args.path, out=args.out, channels=channels, subject=args.subject, task=args.task,
                    session=args.session, run=args.run, overwrite=args.overwrite,
                    source_connectome=args.source_connectome, head=args.head,
                    reference=None if args.reference == "none" else "average", fc_method=args.fc_method,
                    fc_bands=tuple(b.strip() for b in args.fc_bands.split(",") if b.strip()))
    print(f"{args.out}: {ds.sizes['sensor']} channels, {ds.attrs['duration_s']:.1f} s at "
          f"{ds.attrs['sample_rate_hz']:g} Hz; alpha peak {float(ds['alpha_peak_hz_mean']):.2f} Hz "
          f"(mean spectrum); variables: {', '.join(ds.data_vars)}")


def _add_import_fmri(sub):
    p = sub.add_parser(
        "import-fmri", help="BOLD NIfTI + atlas -> region time series and FC (netCDF)",
        description="Parcellate a 4D BOLD image with an atlas (a label NIfTI, or power_2011 / "
                    "dosenbach_2010 / seitzman_2018 coordinates shipped with nilearn) into region time "
                    "series and their Pearson FC, optionally matched to a connectome's regions. An "
                    "existing output is never replaced without --overwrite.")
    p.add_argument("bold", help="4D .nii/.nii.gz, or a BIDS root (then --subject/--task)")
    p.add_argument("--atlas", required=True, help="label image .nii(.gz) or a packaged coordinate atlas name")
    p.add_argument("--atlas-labels", help="region names: BIDS dseg.tsv, colour LUT or one name per line")
    p.add_argument("--out", required=True, help="netCDF file to write, e.g. fc.nc")
    p.add_argument("--tr", type=float, help="repetition time (s); must agree with the header/sidecar")
    _add_bids_entities(p)
    p.add_argument("--connectome", help="catalog name or connectome .nc: reorder regions to match it")
    p.add_argument("--match", choices=["label", "centroid"], default="label",
                   help="pair atlas and connectome regions by label (default) or nearest centroid")
    p.add_argument("--max-distance-mm", type=float, default=15.0,
                   help="largest centroid distance accepted with --match centroid (default 15 mm)")
    p.add_argument("--standardize", action="store_true", help="z-score each region series")
    p.add_argument("--detrend", action="store_true", help="remove linear trends")
    p.add_argument("--high-pass", type=float, metavar="HZ"), p.add_argument("--low-pass", type=float, metavar="HZ")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_import_fmri)


def _import_fmri(args):

    bold = Path(args.bold)
    if bold.is_dir():
        bold = find_bids_bold(bold, subject=args.subject, task=args.task, session=args.session, run=args.run)
    conn = args.connectome
    if conn and Path(conn).suffix == ".nc":
        conn = Connectome.open(conn)
    ds = import_fmri(bold, args.atlas, out=args.out, labels=args.atlas_labels, tr_s=args.tr,
                     connectome=conn, by=args.match, max_distance_mm=args.max_distance_mm,
                     overwrite=args.overwrite, standardize=args.standardize, detrend=args.detrend,
                     high_pass_hz=args.high_pass, low_pass_hz=args.low_pass)
    print(f"{args.out}: {ds.sizes['region']} regions x {ds.sizes['time']} volumes (TR {ds.attrs['tr_s']:g} s) "
          f"from {bold.name} with atlas {ds.attrs['atlas']}")


def _add_validate_derivatives(sub):
    p = sub.add_parser("validate-derivatives",
                       help="check a neurotwin BIDS-derivatives folder against the BIDS schema")
    p.add_argument("root", help="derivatives folder, e.g. bids/derivatives/neurotwin-dash")
    p.set_defaults(func=_validate_derivatives)


def _validate_derivatives(args):
    rep = validate_derivatives(args.root)
    print(rep)
    return 0 if rep.valid else 1


def _add_export_bids(sub):
    p = sub.add_parser(
        "export-bids", help="write a simulation / metrics netCDF into a BIDS-derivatives folder",
        description="Copy a simulation (neurotwin simulate/sweep output) or a metrics file into "
                    "<root> as BIDS-derivatives with a provenance sidecar; validates the folder after.")
    p.add_argument("path", help="netCDF file (simulation or metrics)")
    p.add_argument("--root", required=True, help="derivatives folder, e.g. bids/derivatives/neurotwin-dash")
    p.add_argument("--subject", required=True, help="BIDS subject label (letters and digits)")
    p.add_argument("--kind", choices=["simulation", "metrics"], default="simulation")
    p.add_argument("--desc", help="BIDS desc label (default: the model name for simulations)")
    p.add_argument("--task", default="rest"), p.add_argument("--session")
    p.add_argument("--raw-root", help="the subject's raw BIDS dataset (recorded as the source dataset)")
    p.add_argument("--overwrite", action="store_true", help="replace files that exist")
    p.set_defaults(func=_export_bids)


def _export_bids(args):
    D.init_derivatives(args.root, raw_root=args.raw_root)
    ds = xr.load_dataset(args.path)
    if args.kind == "simulation":
        out = D.write_simulation(args.root, ds, subject=args.subject, desc=args.desc, task=args.task,
                                 session=args.session, sources=[args.path], overwrite=args.overwrite)
    else:
        if not args.desc:
            raise ValueError("--desc is required for --kind metrics (BIDS entity 'desc')")
        out = D.write_metrics(args.root, ds, subject=args.subject, desc=args.desc, task=args.task,
                              session=args.session, sources=[args.path], overwrite=args.overwrite)
    rep = D.validate_derivatives(args.root)
    print(f"{out}\n{rep}")
    return 0 if rep.valid else 1


COMMANDS += [_add_import_eeg, _add_import_fmri, _add_validate_derivatives, _add_export_bids]


def _add_analyse(sub):
    p = sub.add_parser("analyse", help="compute the standard metrics of a simulation file (netCDF/zarr)")
    p.add_argument("run", help="simulation result (.nc or .zarr) written by `neurotwin simulate`")
    p.add_argument("--out", required=True, help="metrics netCDF to write")
    p.add_argument("--variable", help="variable to analyse (default: the model's EEG variable)")
    p.add_argument("--no-aperiodic", action="store_true", help="skip FOOOF aperiodic exponents")
    p.add_argument("--pac-surrogates", type=int, default=0,
                   help="> 0 adds Tort PAC (alpha phase, gamma amplitude) with that many surrogates")
    p.add_argument("--bold", action="store_true", help="also BOLD FC (and FCD variance for ≥ 2 min)")
    p.add_argument("--tr", type=float, default=0.72, help="BOLD repetition time in s (default 0.72)")
    p.add_argument("--montage", help="also simulated-EEG band powers per sensor for this montage")
    _add_head_option(p)
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_analyse)


def _analyse(args):
    if args.pac_surrogates < 0:
        raise ValueError(f"--pac-surrogates must be ≥ 0, got {args.pac_surrogates}")
    ds = analyse_file(args.run, args.out, variable=args.variable, aperiodic=not args.no_aperiodic,
                      pac_surrogates=args.pac_surrogates, bold=args.bold, bold_tr_s=args.tr,
                      montage=args.montage, overwrite=args.overwrite, head=args.head)
    print(f"wrote {args.out}: {', '.join(ds.data_vars)}")


COMMANDS.append(_add_analyse)


def _add_simulate(sub):
    p = sub.add_parser("simulate", help="simulate a neural mass model on a connectome into netCDF",
                       description="Simulate a neural mass model on a connectome (or one node) and "
                                   "write an xarray dataset (batch, time, region) to netCDF/zarr.")
    p.add_argument("--model", default="jansen_rit", choices=model_names())
    p.add_argument("--connectome", default="tvb76",
                   help="catalog name, a TVB-style .zip or a connectome .nc, or 'none' for one node")
    p.add_argument("--duration", type=float, default=10.0, help="simulated seconds, transient included")
    p.add_argument("--dt", type=float, default=0.1, help="integration step in ms (default 0.1)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE[,VALUE...]",
                   help="model or network parameter; a comma list makes a batch (repeatable)")
    p.add_argument("--seed", default="0", help="integer seed, or a comma list with one per batch member")
    p.add_argument("--sample-rate", type=float, default=1000.0, help="monitor rate in Hz")
    p.add_argument("--transient", type=float, default=0.0, help="initial seconds not written")
    p.add_argument("--record", default=None, help="comma list of outputs/states (default: the model's EEG-like outputs)")
    p.add_argument("--method", default="euler", choices=["euler", "heun"])
    p.add_argument("--initial", default=None, choices=["random", "zeros"],
                   help="initial state: each region at its own seeded random point (default on a "
                        "connectome) or the model's zero state in every region (default for one node)")
    p.add_argument("--normalisation", default="max", help="connectome weight normalisation (default max)")
    p.add_argument("--threads", type=int, default=None, help="threads for batch members (default: one per CPU)")
    p.add_argument("--out", required=True, help="output file (.nc, or .zarr)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (a .zarr only if it is a zarr store)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--twin", default=None, metavar="FILE",
                   help="re-run a neurotwin file (`neurotwin export`/`neurotwin fit`); model, connectome, "
                        "parameters, drives and run options then come from the twin")
    _add_stimulation_options(p)
    p.set_defaults(func=_simulate, simulate_parser=p)


def _simulate(args):
    if getattr(args, "twin", None):
        # everything that defines the run comes from the twin: refuse options it would ignore
        parser = args.simulate_parser
        ignored = sorted(f"--{k.replace('_', '-')}" for k, v in vars(args).items()
                         if k not in _TWIN_OPTIONS and v != parser.get_default(k))
        if ignored:
            raise ValueError(f"--twin takes the model, connectome, parameters, drives and run options "
                             f"from the twin; remove {', '.join(ignored)}")
        return simulate_twin_cli(args)
    if Path(args.out).exists() and not args.overwrite:   # before minutes of simulation, not after
        raise ValueError(f"--out {args.out} exists already; choose another name or pass --overwrite")
    coarse = dt_note(get_model(args.model), args.dt)
    if coarse:                                   # the library only flags it; a command refuses
        raise ValueError(coarse.replace("dt_ms =", "--dt", 1).replace("use dt_ms", "use --dt"))
    pset = all_params(args.model)
    params = {}
    for item in args.set:
        if "=" not in item:
            raise ValueError(f"--set expects NAME=VALUE, got {item!r}")
        name, text = (t.strip() for t in item.split("=", 1))
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            raise ValueError(f"--set {name}: {text!r} is not a number or a comma list of numbers") from None
        pset[name].check(values)
        params[name] = values[0] if len(values) == 1 else values
    try:
        seeds = [int(v) for v in args.seed.split(",")]
    except ValueError:
        raise ValueError(f"--seed must be an integer or a comma list of integers, got {args.seed!r}") from None
    conn = args.connectome
    path = Path(conn)
    if conn.lower() != "none" and path.suffix in (".zip", ".nc") and path.exists():
        conn = Connectome.open(path) if path.suffix == ".nc" else Connectome.from_files(path)
    record = None if args.record is None else [r.strip() for r in args.record.split(",") if r.strip()]
    # every input is resolved and checked (the plan) before the run starts
    resolved = plan(args.model, None if conn == "none" else conn, duration_s=args.duration,
                    dt_ms=args.dt, params=params, seed=seeds[0] if len(seeds) == 1 else seeds,
                    sample_rate_hz=args.sample_rate, record=record, transient_s=args.transient,
                    normalisation=args.normalisation, method=args.method, initial=args.initial,
                    drive=_stimulation_drives(args, conn))
    t0 = time.perf_counter()
    ds = run_plan(resolved, progress=not args.no_progress, threads=args.threads)
    seconds = time.perf_counter() - t0
    _record_stimulation(ds, args)
    out = write_dataset(ds, args.out, overwrite=args.overwrite)
    print(f"wrote {out}: {args.model}, {ds.sizes['batch']} run(s) × {ds.sizes['time']} samples × "
          f"{ds.sizes['region']} region(s); diverged {int(ds['diverged'].sum())}; {seconds:.1f} s")


COMMANDS.append(_add_simulate)


def _add_fit(sub):
    add_fit_parser(sub)


def _add_export(sub):
    add_export_parser(sub)


COMMANDS += [_add_fit, _add_export]


def _add_report(sub):
    p = sub.add_parser("report", help="a self-contained HTML report of a twin (lab-meeting page)",
                       description="Re-run a twin and write one HTML page with its figures (inline SVG), "
                                   "parameters and provenance, readable on a projector.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--twin", required=True, help="twin file (.nc or .zarr) written by export or personalize")
    p.add_argument("--out", required=True, help="HTML file to write")
    p.add_argument("--title", default=None, help="page title (default: model and connectome)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=_report)


def _report(args):
    from .report import write_report  # heavy: matplotlib (~0.3 s), only for this command
    check_input(args.twin, "--twin")
    out = Path(args.out)
    if out.exists() and not args.overwrite:      # checked before minutes of simulation
        raise FileExistsError(f"--out {out} exists; pass --overwrite to replace it")
    path = write_report(args.twin, out, overwrite=args.overwrite, title=args.title)
    print(f"wrote {path}")


COMMANDS.append(_add_report)


def _add_personalize(sub):
    add_personalize_parser(sub)


COMMANDS.append(_add_personalize)

#: ``simulate --twin`` options that do not change what is simulated.
_TWIN_OPTIONS = {"twin", "out", "overwrite", "no_progress", "threads", "func", "command",
                 "simulate_parser", "verbose", "quiet"}


def _add_verbosity(parser, default) -> None:
    g = parser.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="count", default=default,
                   help="more messages (debug details with -vv)")
    g.add_argument("-q", "--quiet", action="store_true", default=default,
                   help="only warnings and errors; no progress bar")


def _subparsers(parser):
    for action in parser._actions:      # argparse has no public walk over sub-commands
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield child
                yield from _subparsers(child)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neurotwin", description=__doc__.splitlines()[0],
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_verbosity(parser, default=0)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    for child in _subparsers(parser):
        child.formatter_class = _HelpFormatter
        for action in child._actions:
            if action.help is None and action.option_strings and _has_default(action):
                action.help = "default: %(default)s"   # argparse prints no help line for None
        # -q/-v also after the sub-command; SUPPRESS keeps a value given before it
        _add_verbosity(child, default=argparse.SUPPRESS)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr`` (not the one at set-up, which tests swap)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if verbose
                                           else "%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)


def _check_output_folder(args) -> None:
    """A usage error when ``--out`` lies in a folder that does not exist (before any work)."""
    out = getattr(args, "out", None)
    if isinstance(out, (str, Path)) and out:
        folder = Path(out).expanduser().absolute().parent
        if not folder.is_dir():
            raise ValueError(f"--out {out}: folder {folder} does not exist")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose, args.quiet)
    if hasattr(args, "no_progress") and (args.quiet or not sys.stderr.isatty()):
        args.no_progress = True              # progress bars only on a terminal
    try:
        _check_output_folder(args)
        result = args.func(args)
    except (ValueError, LookupError, FileNotFoundError) as exc:
        # Input errors: one clear line, no traceback.
        print(f"neurotwin {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        # A full disk, a read-only folder ...: the writers left any earlier output in place.
        print(f"neurotwin {args.command}: error: {exc.strerror or exc}"
              f"{f': {exc.filename}' if exc.filename else ''}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"neurotwin {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:                 # the work failed: one line, the traceback with -v
        if args.verbose:
            traceback.print_exc()
        print(f"neurotwin {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
