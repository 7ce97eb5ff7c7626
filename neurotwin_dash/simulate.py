"""Batched, delayed, stochastic network simulation of neural mass models.

:func:`simulate` integrates a model (see :mod:`neurotwin_dash.models`) on every region of a
connectome, for many parameter sets at once (the ``batch`` axis), and returns an
``xarray.Dataset`` with dims ``(batch, time, region)``.

Network
    Region *i* receives ``u_net,i(t) = K Σ_j W_ij r_j(t − τ_ij)``, with ``r_j`` the model's
    transmitted rate(s) (``CVARS``), ``W`` the connectome weights after ``normalisation``
    (row = target), ``K`` the global ``coupling`` and ``τ_ij = L_ij / speed_m_s`` rounded to
    integration steps. Only the non-zero weights are visited (CSR); the transmitted rates are
    kept in a ring buffer with one slot per step of the longest delay.

Integration
    Euler–Maruyama (default) or stochastic Heun with additive noise (the same increment in the
    predictor and the corrector; the delayed network input is held over the step, as in TVB).
    Time is in seconds inside the kernel.

Noise convention
    Each model adds white noise to its external input rate, ``p(t) = p + σ ξ(t)``; ``noise_sd``
    is the sd of that input per 1-ms sample, i.e. ``σ_w = noise_sd · √(1 ms)`` in s⁻¹·√s, and a
    step adds ``gain · σ_w · √dt · N(0, 1)`` to the velocity state of the input synapse (JR:
    ``Δy4 += A a σ_w √dt N``). Spectra therefore do not depend on ``dt``.

Seeds
    Each batch member draws from its own ``numpy.random.default_rng(seed_k)``. A scalar
    ``seed`` gives every member the same realisation (common random numbers: members differ
    only by their parameters, as a sweep wants); pass one seed per member for independent
    realisations. Member *k* equals the run of its parameters alone with seed ``seed_k``.

Initial state
    ``initial="random"`` (the default for networks) starts every region at its own point drawn
    uniformly within the model's ``INITIAL_RANGE`` from ``default_rng([seed_k, INITIAL_TAG])``
    (a stream separate from the noise, which is unchanged). Identical starts would make
    uncoupled limit-cycle regions oscillate in phase for seconds (JR on tvb76 at coupling 0:
    mean FC 0.5 instead of 0) and pollute every FC/PLV. ``"zeros"`` (the default for one node)
    is the model's deterministic ``initial_state`` (zero PSPs; Wilson–Cowan 0.05), the start of
    the single-node reference behaviours.

Monitor
    Every recorded variable is averaged over each sampling period (``decim = 1 / (fs·dt)``
    steps, which must be an integer); sample *n* carries the time of its window start.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Callable, NamedTuple, Sequence

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from . import __version__, catalog
from .connectome import NORMALISATIONS, Connectome
from .guards import check_memory, dt_note
from .models import get_model, initial_state
from .models._batch_kernel import BatchBlocks
from .models._kernel import (DTYPES, MATH_MODES, NOISE_RNGS, KernelArgs, compiled_integrate, counter_noise, drives_at,
                             edge_offsets, integrate_numpy, kernel_tag, mode_error, model_tag)
from .params import ParamError, ParamSet, ParamSpec
from .units import CONVENTIONS, DIMENSIONLESS, cf_unit

__all__ = ["simulate", "plan", "run_plan", "SimulationPlan", "TimeGrid", "time_grid", "Network",
           "SampledDrives", "sample_drives", "Drive", "NETWORK_PARAMS", "network_params",
           "all_params", "METHODS", "NOISE_RNGS", "DTYPES", "MATH_MODES", "SimulationError"]

METHODS = ("euler", "heun")
KERNELS = ("auto", "member", "batch")
BACKENDS = ("numba", "numpy")
INITIALS = ("random", "zeros")
#: Second entropy word of the initial-state generator ``default_rng([seed_k, INITIAL_TAG])``.
INITIAL_TAG = 0x696E6974  # "init"

NETWORK_PARAMS = ParamSet([
    ParamSpec("coupling", 0.0, 0.0, 1000.0, "",
              "global coupling K: the network input K·Σ_j W_ij·rate_j(t−τ_ij) in 1/s is added to "
              "each region's input rate (W normalised, see `normalisation`)"),
    ParamSpec("speed_m_s", 4.0, 0.5, 100.0, "m/s",
              "axonal conduction speed (m/s = mm/ms); delays = tract length / speed"),
], owner="network")

# Noise increments generated per chunk are kept under this many float64 values.
_NOISE_BUDGET = 4_000_000
# At most this many steps per kernel call (2 s at dt 0.1 ms): results do not depend on it (tested);
# each call costs ~1-2 ms of dispatch and thread hand-off, ~4 % of a sweep batch (JR tvb76, 8 × 11 s,
# one thread) with the former 5,000, and the progress bar moves once per call.
_MAX_CHUNK_STEPS = 20_000


class SimulationError(ValueError):
    """Invalid simulation input; the message names the field and the allowed values."""


def all_params(model) -> ParamSet:
    """Every parameter a simulation of ``model`` accepts, with its default: the model's
    ``PARAMS``, then :data:`NETWORK_PARAMS` with the model's own ``NETWORK_DEFAULTS`` (e.g. the
    coupling at which its 76-region network shows its reference rhythm).

    This is the single resolver of the parameter set: :func:`plan` fills every value not given
    from it, and sweeps, fits, the CLI and the dashboards read names, bounds and defaults here.
    """
    mod = get_model(model)
    clash = set(mod.PARAMS.names) & set(NETWORK_PARAMS.names)
    if clash:
        raise SimulationError(f"model {mod.NAME} redeclares network parameters {sorted(clash)}")
    overrides = dict(getattr(mod, "NETWORK_DEFAULTS", {}))
    unknown = set(overrides) - set(NETWORK_PARAMS.names)
    if unknown:
        raise SimulationError(f"model {mod.NAME}: NETWORK_DEFAULTS names {sorted(unknown)}, which are "
                              f"not network parameters; allowed: {', '.join(NETWORK_PARAMS.names)}")
    network = [replace(s, default=overrides.get(s.name, s.default)) for s in NETWORK_PARAMS]
    return ParamSet(tuple(mod.PARAMS) + tuple(network), owner=mod.NAME)


def network_params(model) -> ParamSet:
    """The network part of :func:`all_params` (:data:`NETWORK_PARAMS` with the model's defaults)."""
    return ParamSet(all_params(model).specs[len(get_model(model).PARAMS):], owner="network")


@dataclass
class Drive:
    """An external input to every region over time, separable in space and time.

    ``value(batch, region, t) = spatial[batch, region] · waveform(t)``.

    Parameters
    ----------
    spatial : array (region,) or (batch, region), or an ``xarray.DataArray`` with a ``region`` dim
        Per-region amplitude (e.g. ``λ · E_n`` in mV for tES).
    waveform : callable or array
        ``t_s -> value`` (called with an array of step times in seconds) or samples on the
        integration clock (``n_steps`` or ``n_steps + 1`` values, including the transient).
    target : {"membrane", "rate"}
        ``membrane`` adds mV to the polarised populations' membrane potential (see each model's
        ``POLARISED``); ``rate`` adds 1/s to the external input rate.
    unit : str, optional
        ``"mV"`` for membrane, ``"1/s"`` for rate; checked when given.
    """

    spatial: object
    waveform: object
    target: str = "membrane"
    unit: str | None = None

    def __post_init__(self):
        if self.target not in ("membrane", "rate"):
            raise SimulationError(f"Drive.target must be 'membrane' or 'rate', got {self.target!r}")
        expected = "mV" if self.target == "membrane" else "1/s"
        if self.unit is not None and self.unit != expected:
            raise SimulationError(
                f"Drive.unit {self.unit!r} does not fit target {self.target!r}; expected {expected!r}")
        self.unit = expected


def simulate(model="jansen_rit", connectome="tvb76", duration_s: float = 10.0, dt_ms: float = 0.1,
             params: dict | None = None, seed=0, sample_rate_hz: float = 1000.0,
             record: Sequence[str] | None = None, transient_s: float = 0.0,
             drive: Drive | Sequence[Drive] | None = None, normalisation: str = "max",
             method: str = "euler", backend: str = "numba",
             progress: bool | Callable[[int, int], None] = False,
             threads: int | None = None, initial=None, kernel: str = "auto",
             noise_rng: str = "numpy", dtype: str = "float64", math_mode: str = "default") -> xr.Dataset:
    """Simulate a neural mass model on a connectome, for one or many parameter sets.

    Parameters
    ----------
    model : str or module
        ``"jansen_rit"``, ``"wendling"``, ``"lanmm"``, ``"wilson_cowan"``, ``"lopes_da_silva"``.
    connectome : Connectome, str or None
        A :class:`~neurotwin_dash.connectome.Connectome`, a catalog name (``"tvb76"``), or
        ``None``/``"none"`` for one uncoupled node (region label ``"node"``).
    duration_s : float
        Simulated time in seconds, including the transient.
    dt_ms : float
        Integration step in ms, in (0, 10].
    params : dict, optional
        Model parameters and network parameters (:data:`NETWORK_PARAMS`: ``coupling``,
        ``speed_m_s``), each a scalar, ``(batch,)``, ``(region,)`` or ``(batch, region)``.
    seed : int or sequence of int or None
        One seed for all members, or one per member (see the module notes). ``None`` draws one.
    sample_rate_hz : float
        Monitor rate; ``1000 / (sample_rate_hz · dt_ms)`` must be an integer.
    record : sequence of str, optional
        Output or state names; default the model's ``OBSERVED`` outputs.
    transient_s : float
        Initial period simulated but not returned (``0 ≤ transient_s < duration_s``).
    drive : Drive or list of Drive, optional
        External inputs (stimulation enters here); a ``(batch, region)`` spatial map gives each
        member its own drive (e.g. a dose sweep).
    normalisation : str
        Weight normalisation applied before simulating (``max``, ``spectral``, ``rowsum``, ``log``,
        ``none``).
    method : {"euler", "heun"}
    backend : {"numba", "numpy"}
        ``numpy`` runs the slow reference integrator (for tests).
    progress : bool or callable
        ``True`` shows a tqdm bar; a callable receives ``(steps_done, steps_total)``.
    threads : int, optional
        Threads that advance blocks of batch members concurrently (the kernel releases the GIL);
        ``1`` keeps the call single-threaded; ``None`` uses one per CPU, or one inside a Dask
        worker. Results do not depend on it.
    initial : {"random", "zeros"} or array, optional
        Initial state. ``"random"``: each member's regions drawn uniformly within the model's
        ``INITIAL_RANGE`` from its own seed (``default_rng([seed_k, INITIAL_TAG])``), so the same
        seed gives the same start and member *k* equals its run alone. ``"zeros"``: the model's
        deterministic ``initial_state`` (identical in every region). An array of shape
        ``(batch, region, n_state)`` (or ``(region, n_state)``, ``(n_state,)``) gives it
        explicitly. Default (``None``): ``"random"`` on a connectome, ``"zeros"`` for one node
        (and for a registered model without ``INITIAL_RANGE``). Recorded in ``attrs["initial"]``.
    kernel : {"auto", "member", "batch"}
        Numba integrator: ``"member"`` advances one member at a time; ``"batch"`` advances
        blocks of 8 members as SIMD lanes (:mod:`neurotwin_dash.models._batch_kernel`; needs one
        ``speed_m_s`` for the batch), several times faster per run; ``"auto"`` uses it for
        batches of 2 or more with shared delays. Results are the same (to rounding).
    noise_rng : {"numpy", "counter"}
        Noise generator. ``"numpy"`` (default): each member's ``numpy.random.default_rng(seed)``,
        drawn outside the kernel (reproduces every earlier run bit for bit). ``"counter"``:
        Philox4x32-10 keyed by the member's seed and counted by step, region and component,
        drawn inside the kernel (no generator state, vectorised across batch members), with
        the models' exponentials by the vectorisable polynomial (relative difference to libm
        ≤ 1e-15): the fast path of sweeps and inference. Both kernels draw the same numbers
        in either mode. Part of the plan and its fingerprint; recorded in
        ``attrs["noise_rng"]``.
    dtype : {"float64", "float32"}
        Floating-point type of the integration. ``"float32"`` (batch kernel only: a batch with
        one ``speed_m_s``, ``kernel`` not ``"member"``) runs 16 members per vector instead of 8,
        for sweeps and inference; its results agree with float64 on the reference behaviours
        (peak frequencies, band powers: ``tests/test_batch_kernel.py``), not number for number.
        Never the default. Part of the plan and its fingerprint; ``attrs["dtype"]``.
    math_mode : {"default", "fast"}
        The models' exponentials. ``"default"``: as described under ``noise_rng`` (the numbers
        of every earlier run). ``"fast"`` (opt-in; ``noise_rng="counter"``, float64, numba
        backend): a cheaper polynomial exp (degree 9, ≤ 2e-14 relative to libm, argument
        clamped to [−707, 709]); about 10 % faster batches, other numbers than ``"default"``
        (the same reference behaviours: ``tests/test_batch_kernel.py``), batch == per-member
        kernel bit for bit within the mode. In the plan's fingerprint and ``attrs["math_mode"]``
        only when not ``"default"``.

    Returns
    -------
    xarray.Dataset
        One variable per recorded name with dims ``(batch, time, region)``, ``diverged``
        ``(batch,)``, a coordinate per parameter varied along the batch, and attrs describing
        the run (``params`` holds every value as JSON, ``plan_sha256`` the
        :meth:`SimulationPlan.fingerprint`).

    See Also
    --------
    plan : the same inputs resolved and checked without simulating; ``simulate(...)`` is
        ``run_plan(plan(...))``.

    Notes
    -----
    The batch size is inferred from every source that has a batch axis: ``params`` values of
    shape ``(batch,)`` or ``(batch, region)``, drives whose spatial map is ``(batch, region)``,
    and a ``seed`` list. They must agree (a size-1 batch axis counts as one value for all);
    otherwise a :class:`SimulationError` (:class:`~neurotwin_dash.params.ParamError` when only
    parameters disagree) names each source and its size. A ``(region,)``-long 1-D value is
    always per region.
    """
    try:
        resolved = plan(model, connectome, duration_s, dt_ms, params, seed, sample_rate_hz, record,
                        transient_s, drive, normalisation, method, backend, initial, noise_rng, dtype,
                        math_mode)
        return run_plan(resolved, progress=progress, threads=threads, kernel=kernel)
    except MemoryError:
        raise SimulationError(f"not enough memory for this simulation (duration_s = {duration_s}, "
                              f"sample_rate_hz = {sample_rate_hz}): shorten it, lower the sample rate or "
                              "record fewer variables") from None


def run_plan(plan: "SimulationPlan", progress: bool | Callable[[int, int], None] = False,
             threads: int | None = None, kernel: str = "auto") -> xr.Dataset:
    """Integrate a :class:`SimulationPlan` (see :func:`simulate` for ``progress``, ``threads``,
    ``kernel`` and the returned dataset)."""
    if not isinstance(plan, SimulationPlan):
        raise SimulationError(f"run_plan needs a SimulationPlan (from simulate.plan), got "
                              f"{type(plan).__name__}")
    if kernel not in KERNELS:
        raise SimulationError(f"kernel {kernel!r} unknown; allowed: {', '.join(KERNELS)}")
    # guards (neurotwin_dash.guards): an output that cannot fit in memory is refused before any
    # compute; a step above the model's accuracy limit is flagged (warning + attribute)
    check_memory(plan.n_batch, plan.time.n_samples, plan.n_region, len(plan.record), SimulationError,
                 plan.time.duration_s, plan.time.sample_rate_hz)
    coarse = dt_note(plan.module, plan.time.dt_ms)
    if coarse:
        warnings.warn(coarse, stacklevel=3)
    ds = _to_dataset(plan, _execute(plan, progress, threads, kernel))
    if coarse:
        ds.attrs["dt_warning"] = coarse
    return ds


# --- the plan: every input resolved and checked before any compute ----------------------------

@dataclass(frozen=True)
class TimeGrid:
    """The integration and monitor clocks of a run (made by :func:`time_grid`).

    Attributes
    ----------
    dt_ms : float
        Integration step (ms).
    sample_rate_hz : float
        Monitor rate (Hz); one sample averages ``decim`` steps.
    decim : int
        Integration steps per recorded sample.
    n_steps : int
        Integration steps of the whole run, transient included (drive waveforms are sampled at
        the ``n_steps + 1`` times of :meth:`step_times`).
    n_transient_steps : int
        Steps simulated before the first recorded sample.
    duration_s : float
        Simulated time, transient included, as asked.
    transient_s : float
        Transient actually dropped (rounded to whole samples).
    """

    dt_ms: float
    sample_rate_hz: float
    decim: int
    n_steps: int
    n_transient_steps: int
    duration_s: float
    transient_s: float

    @property
    def dt_s(self) -> float:
        """Integration step in seconds (the kernel's unit)."""
        return self.dt_ms * 1e-3

    @property
    def n_samples(self) -> int:
        """Recorded samples per variable and region."""
        return (self.n_steps - self.n_transient_steps) // self.decim

    def step_times(self) -> np.ndarray:
        """Times (s) of the ``n_steps + 1`` integration points, where waveforms are sampled."""
        return np.arange(self.n_steps + 1) * self.dt_s

    def sample_times(self) -> np.ndarray:
        """Times (s) of the recorded samples (each the start of its averaging window)."""
        return self.transient_s + np.arange(self.n_samples) / self.sample_rate_hz


def time_grid(duration_s: float = 10.0, dt_ms: float = 0.1, sample_rate_hz: float = 1000.0,
              transient_s: float = 0.0) -> TimeGrid:
    """Check the clock settings of a run and return its :class:`TimeGrid`.

    Raises
    ------
    SimulationError
        When a value is not a finite number in its range, when ``1000 / (sample_rate_hz ·
        dt_ms)`` is not an integer, or when the transient leaves no sample.
    """
    dt_ms = _number(dt_ms, "dt_ms", 0.0, 10.0, low_open=True)
    duration_s = _number(duration_s, "duration_s", 0.0, 1e6, low_open=True)
    fs = _number(sample_rate_hz, "sample_rate_hz", 0.0, 1e6, low_open=True)
    transient_s = _number(transient_s, "transient_s", 0.0, 1e6)
    decim_f = 1000.0 / (fs * dt_ms)
    decim = int(round(decim_f))
    if decim < 1 or abs(decim - decim_f) > 1e-6 * decim_f:
        raise SimulationError(
            f"sample_rate_hz = {fs:g} does not divide the integration rate 1000/dt_ms = "
            f"{1000 / dt_ms:g} Hz; pick a sample rate such that 1000/(sample_rate_hz·dt_ms) is an integer")
    n_samp_total = int(math.floor(duration_s * fs + 1e-9))
    n_samp_trans = int(round(transient_s * fs))
    if transient_s >= duration_s or n_samp_total - n_samp_trans < 1:
        raise SimulationError(
            f"transient_s = {transient_s:g} must be shorter than duration_s = {duration_s:g} "
            f"by at least one sample (1/{fs:g} s)")
    return TimeGrid(dt_ms=dt_ms, sample_rate_hz=fs, decim=decim, n_steps=n_samp_total * decim,
                    n_transient_steps=n_samp_trans * decim, duration_s=duration_s,
                    transient_s=n_samp_trans / fs)


class SampledDrives(NamedTuple):
    """Drives on the integration clock: ``value[d](b, i, step) = space[d, b, i] · wave[d, step]``."""

    space: np.ndarray   #: (drive, batch, region)
    wave: np.ndarray    #: (drive, n_steps + 1)
    target: np.ndarray  #: (drive,) int64: 0 membrane (mV), 1 rate (1/s)


def sample_drives(drive, labels: Sequence[str], grid: TimeGrid, n_batch: int = 1) -> SampledDrives:
    """Sample drives exactly as :func:`plan` does (a twin stores these numbers).

    Parameters
    ----------
    drive : Drive, list of Drive or None
    labels : sequence of str
        Region labels in simulation order (a ``DataArray`` spatial map is reordered to them).
    grid : TimeGrid
    n_batch : int
        Batch size; a ``(batch, region)`` spatial map must have this many rows.
    """
    drives = _drive_list(drive)
    n_region = len(labels)
    space = np.zeros((len(drives), n_batch, n_region))
    wave = np.zeros((len(drives), grid.n_steps + 1))
    target = np.zeros(len(drives), dtype=np.int64)
    for k, d in enumerate(drives):
        space[k] = _spatial(_spatial_array(d, labels, k), n_batch, n_region, k)
        wave[k] = _waveform(d, grid, k)
        target[k] = 0 if d.target == "membrane" else 1
    return SampledDrives(space, wave, target)


@dataclass(frozen=True)
class Network:
    """The connectome as the kernel reads it: CSR of the non-zero weights (row = target) and
    per-member integer delays.

    Attributes
    ----------
    indptr : (region + 1,) int64
    indices : (nnz,) int64
        Source region of each edge.
    weights : (nnz,) float64
        Normalised weights.
    delays : (batch, nnz) int64
        Delays in integration steps, ``round(length / speed / dt)``.
    n_slot : int
        History slots per copy of the ring buffer: the longest delay + 2.
    """

    indptr: np.ndarray
    indices: np.ndarray
    weights: np.ndarray
    delays: np.ndarray
    n_slot: int

    def dense_weights(self) -> np.ndarray:
        """The weights as a (region, region) matrix (row = target)."""
        n = len(self.indptr) - 1
        w = np.zeros((n, n))
        w[np.repeat(np.arange(n), np.diff(self.indptr)), self.indices] = self.weights
        return w

    def dense_delays(self) -> np.ndarray:
        """Per-member delays as (batch, region, region) matrices (0 where no edge)."""
        n = len(self.indptr) - 1
        d = np.zeros((self.delays.shape[0], n, n), dtype=np.int64)
        d[:, np.repeat(np.arange(n), np.diff(self.indptr)), self.indices] = self.delays
        return d


@dataclass(frozen=True, eq=False)
class SimulationPlan:
    """Everything a simulation will compute, resolved and checked (made by :func:`plan`).

    Two plans are equal when their :meth:`fingerprint` is: they integrate the same equations
    from the same start with the same noise, so they give the same numbers. Every array is
    read-only.

    Attributes
    ----------
    model : str
        Model name.
    params : ParamSet
        The full parameter set (:func:`all_params`): model parameters, then network parameters.
    values : ndarray (batch, n_params, region)
        Every parameter's value for every member and region, defaults filled in.
    given : tuple of str
        Names given explicitly (those varied along the batch become result coordinates).
    connectome : Connectome or None
        The normalised connectome (``None``: one uncoupled node).
    normalisation : str
        Weight normalisation applied (``"none"`` for one node).
    labels : tuple of str
        Region labels.
    time : TimeGrid
    seeds : tuple of int
        One noise seed per member.
    record : tuple of str
        Recorded outputs/states.
    drives : SampledDrives
    network : Network
    initial : str
        ``"random"``, ``"zeros"`` or ``"array"``.
    x0 : ndarray (batch, region, state)
        Initial state.
    method : {"euler", "heun"}
    backend : {"numba", "numpy"}
        How it is computed, not what: not part of the fingerprint.
    noise_rng : {"numpy", "counter"}
        Noise generator (see :func:`simulate`); in the fingerprint when not ``"numpy"`` (so
        that the fingerprints of earlier plans stay what they were).
    dtype : {"float64", "float32"}
        Floating-point type (see :func:`simulate`); in the fingerprint when not ``"float64"``.
    math_mode : {"default", "fast"}
        The models' exponentials (see :func:`simulate`); in the fingerprint when not ``"default"``.
    """

    model: str
    params: ParamSet
    values: np.ndarray
    given: tuple
    connectome: Connectome | None
    normalisation: str
    labels: tuple
    time: TimeGrid
    seeds: tuple
    record: tuple
    drives: SampledDrives
    network: Network
    initial: str
    x0: np.ndarray
    method: str
    backend: str
    noise_rng: str = "numpy"
    dtype: str = "float64"
    math_mode: str = "default"

    def __post_init__(self):
        for arr in (self.values, self.x0, *self.drives, self.network.indptr, self.network.indices,
                    self.network.weights, self.network.delays):
            arr.setflags(write=False)

    @property
    def module(self) -> ModuleType:
        """The model module."""
        return get_model(self.model)

    @property
    def n_batch(self) -> int:
        return self.values.shape[0]

    @property
    def n_region(self) -> int:
        return len(self.labels)

    def value(self, name: str) -> np.ndarray:
        """Values of parameter ``name``, shape (batch, region) (a copy)."""
        return self.values[:, self.params.index(name), :].copy()

    def model_values(self) -> np.ndarray:
        """The model parameters as the kernel reads them, (batch, region, n_model_params)."""
        n_model = len(self.module.PARAMS)
        return np.ascontiguousarray(self.values[:, :n_model, :].transpose(0, 2, 1))

    @property
    def record_index(self) -> np.ndarray:
        """Recorded names as kernel indices: outputs first, then states."""
        mod = self.module
        names = list(mod.OUTPUTS) + list(mod.STATES)
        return np.array([names.index(r) for r in self.record], dtype=np.int64)

    def fingerprint(self) -> str:
        """SHA-256 of everything that determines the numbers (not ``backend``, not ``given``,
        not the ``normalisation`` label: the normalised weights themselves are hashed)."""
        g = self.time
        head = {
            "model": self.model, "model_tag": model_tag(self.model), "params": list(self.params.names),
            "labels": list(self.labels),
            # the normalised weights, not the name of their normalisation: a connectome
            # normalised beforehand (the explorer's edits) is the same network
            "connectome": None if self.connectome is None else self.connectome.content_hash(),
            "time": [g.dt_ms, g.sample_rate_hz, g.decim, g.n_steps, g.n_transient_steps],
            "seeds": list(self.seeds), "record": list(self.record), "method": self.method,
            "initial": self.initial,
        }
        if self.noise_rng != "numpy":
            head["noise_rng"] = self.noise_rng
        if self.dtype != "float64":
            head["dtype"] = self.dtype
        if self.math_mode != "default":
            head["math_mode"] = self.math_mode
        h = hashlib.sha256(json.dumps(head, sort_keys=True).encode())
        for arr in (self.values, self.x0, *self.drives, self.network.indptr, self.network.indices,
                    self.network.weights, self.network.delays):
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    def __eq__(self, other):
        if not isinstance(other, SimulationPlan):
            return NotImplemented
        return self.fingerprint() == other.fingerprint()

    def __hash__(self):
        return hash(self.fingerprint())

    def __repr__(self):
        conn = "one node" if self.connectome is None else self.connectome.name
        return (f"<SimulationPlan {self.model} on {conn}: {self.n_batch} member(s) × "
                f"{self.n_region} region(s), {self.time.duration_s:g} s at dt {self.time.dt_ms:g} ms, "
                f"{self.method}, {len(self.drives.target)} drive(s)>")


def plan(model="jansen_rit", connectome="tvb76", duration_s: float = 10.0, dt_ms: float = 0.1,
         params: dict | None = None, seed=0, sample_rate_hz: float = 1000.0,
         record: Sequence[str] | None = None, transient_s: float = 0.0,
         drive: Drive | Sequence[Drive] | None = None, normalisation: str = "max",
         method: str = "euler", backend: str = "numba", initial=None,
         noise_rng: str = "numpy", dtype: str = "float64", math_mode: str = "default") -> SimulationPlan:
    """Resolve and check a simulation without running it: the single resolver of a run.

    Takes the arguments of :func:`simulate` (without ``progress`` and ``threads``) and returns
    the frozen :class:`SimulationPlan` that ``simulate`` integrates: the full parameter set
    with every default filled in (:func:`all_params`), the time grid, the seeds, the initial
    state, the drives on the integration clock and the normalised connectome with its delays.
    Every error :func:`simulate` can raise about its inputs is raised here, before any compute.
    """
    mod = get_model(model)
    if method not in METHODS:
        raise SimulationError(f"method {method!r} unknown; allowed: {', '.join(METHODS)}")
    if backend not in BACKENDS:
        raise SimulationError(f"backend {backend!r} unknown; allowed: {', '.join(BACKENDS)}")
    msg = mode_error(noise_rng, dtype, math_mode, backend)
    if msg:
        raise SimulationError(msg)
    grid = time_grid(duration_s, dt_ms, sample_rate_hz, transient_s)

    conn = _load_connectome(connectome, normalisation)
    labels = ["node"] if conn is None else list(conn.labels)
    n_region = len(labels)

    if params is not None and not isinstance(params, dict):
        raise SimulationError(f"params must be a dict of name -> value, got {type(params).__name__}")
    pset = all_params(mod)
    given = dict(params or {})
    drives = _drive_list(drive)
    spatials = [_spatial_array(d, labels, k) for k, d in enumerate(drives)]
    n_batch = _batch_size(given, spatials, seed, n_region)
    # checks names, bounds and shapes
    values = pset.to_array(_squeeze_batch(given, n_batch, n_region), n_batch=n_batch, n_region=n_region)
    speed = values[:, pset.index("speed_m_s"), :]
    if np.any(speed != speed[:, :1]):
        raise ParamError("parameter 'speed_m_s' must be a scalar or one value per batch member, "
                         "not per region")

    names = list(mod.OUTPUTS) + list(mod.STATES)
    record = list(mod.OBSERVED) if record is None else (
        [record] if isinstance(record, str) else list(record))
    for r in record:
        if r not in names:
            raise SimulationError(
                f"cannot record {r!r} from model {mod.NAME}; allowed: {', '.join(names)}")
    if not record or len(set(record)) != len(record):
        raise SimulationError(f"record must list distinct names, got {record!r}")

    seeds = _seeds(seed, n_batch)
    x0, initial = _initial_state(mod, initial, conn, seeds, n_batch, n_region)
    return SimulationPlan(
        model=mod.NAME, params=pset, values=values, given=tuple(given), connectome=conn,
        normalisation=normalisation if conn is not None else "none", labels=tuple(labels),
        time=grid, seeds=tuple(seeds), record=tuple(record),
        drives=sample_drives(drives, labels, grid, n_batch),
        network=_network(conn, speed[:, 0], grid.dt_ms), initial=initial, x0=x0, method=method,
        backend=backend, noise_rng=noise_rng, dtype=dtype, math_mode=math_mode)


def _drive_list(drive) -> list:
    drives = [] if drive is None else ([drive] if isinstance(drive, Drive) else list(drive))
    for k, d in enumerate(drives):
        if not isinstance(d, Drive):
            raise SimulationError(f"drive[{k}] must be a Drive, got {type(d).__name__}")
    return drives


def _network(conn, speed, dt_ms) -> Network:
    """CSR of the non-zero weights (row = target) and per-member integer delays."""
    if conn is None:
        W = np.zeros((1, 1))
        L = np.zeros((1, 1))
    else:
        W = conn.weights
        L = conn.tract_lengths
    n_region = W.shape[0]
    rows, cols = np.nonzero(W)
    indptr = np.zeros(n_region + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_region), out=indptr[1:])
    delays = np.rint(L[rows, cols][None, :] / speed[:, None] / dt_ms).astype(np.int64)
    # +2: the kernel writes the next step's slot while the current step still reads the oldest
    n_slot = int(delays.max()) + 2 if delays.size else 2
    return Network(indptr=indptr, indices=cols.astype(np.int64), weights=W[rows, cols].astype(float),
                   delays=delays, n_slot=n_slot)


# --- checks and conversions used by plan() ---------------------------------------------

def _number(value, field, low=None, high=None, low_open=False):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SimulationError(f"{field} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise SimulationError(f"{field} must be finite, got {value!r}")
    if low is not None and (v < low or (low_open and v == low)):
        rng = f"({low:g}, {high:g}]" if low_open else f"[{low:g}, {high:g}]"
        raise SimulationError(f"{field} = {v:g} is outside the allowed range {rng}")
    if high is not None and v > high:
        rng = f"({low:g}, {high:g}]" if low_open else f"[{low:g}, {high:g}]"
        raise SimulationError(f"{field} = {v:g} is outside the allowed range {rng}")
    return v


def _load_connectome(connectome, normalisation):
    if connectome is None or (isinstance(connectome, str) and connectome.lower() == "none"):
        return None
    if isinstance(connectome, str):
        connectome = catalog.load_connectome(connectome)
    if not isinstance(connectome, Connectome):
        raise SimulationError(
            f"connectome must be a Connectome, a catalog name or None, got {type(connectome).__name__}")
    if normalisation not in NORMALISATIONS:
        raise SimulationError(
            f"normalisation {normalisation!r} unknown; allowed: {', '.join(NORMALISATIONS)}")
    return connectome.normalise(normalisation)


def _seeds(seed, n_batch):
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2 ** 63))
    arr = np.atleast_1d(np.asarray(seed))
    if arr.ndim != 1 or arr.dtype.kind not in "iu" or np.any(arr < 0):
        raise SimulationError(f"seed must be a non-negative integer or one per batch member, got {seed!r}")
    if arr.size == 1:
        arr = np.repeat(arr, n_batch)
    if arr.size != n_batch:
        raise SimulationError(f"seed has {arr.size} values but the batch has {n_batch} members")
    return [int(s) for s in arr]


def _spatial_array(drv, labels, k):
    """The drive's spatial map as a float array, a DataArray's regions put in connectome order."""
    sp = drv.spatial
    if hasattr(sp, "dims") and "region" in getattr(sp, "dims", ()):
        try:
            sp = sp.sel(region=labels).transpose(..., "region").values
        except KeyError:
            raise SimulationError(f"drive[{k}].spatial: its region labels do not match the connectome") from None
    try:
        return np.asarray(sp, dtype=float)
    except (TypeError, ValueError):
        raise SimulationError(f"drive[{k}].spatial must be numeric, got {type(sp).__name__}") from None


def _batch_size(given, spatials, seed, n_region):
    """Batch size agreed by params, drives and seeds: each source with a batch axis, by name."""
    param_sizes, other_sizes = {}, {}
    for name, value in given.items():
        try:
            arr = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            continue                                   # ParamSet.to_array names the bad value
        if arr.ndim == 2 and arr.shape[1] == n_region:
            param_sizes[f"params[{name!r}]"] = arr.shape[0]
        elif arr.ndim == 1 and arr.shape[0] != n_region:
            param_sizes[f"params[{name!r}]"] = arr.shape[0]
    for k, sp in enumerate(spatials):
        if sp.ndim == 2 and sp.shape[1] == n_region:
            other_sizes[f"drive[{k}].spatial"] = sp.shape[0]
    if seed is not None and not isinstance(seed, (int, np.integer)):
        arr = np.asarray(seed)
        if arr.ndim == 1:
            other_sizes["seed"] = arr.shape[0]
    sizes = {**param_sizes, **other_sizes}
    for src, n in sizes.items():
        if n == 0:
            raise (ParamError if src in param_sizes else SimulationError)(
                f"{src} has no values along the batch axis; give at least one")
    distinct = {n for n in sizes.values() if n != 1}
    if len(distinct) > 1:
        listed = ", ".join(f"{src} has {n}" for src, n in sizes.items())
        error = ParamError if not {n for n in other_sizes.values() if n != 1} else SimulationError
        raise error(f"batch sizes disagree: {listed}; give each a batch axis of the same length "
                    f"(or one value for all members)")
    return distinct.pop() if distinct else 1


def _squeeze_batch(given, n_batch, n_region):
    """Size-1 batch axes of parameters broadcast like scalars when the batch is larger."""
    if n_batch == 1:
        return given
    out = {}
    for name, value in given.items():
        try:
            arr = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            out[name] = value
            continue
        if arr.ndim == 2 and arr.shape == (1, n_region):
            value = arr[0]
        elif arr.shape == (1,) and n_region != 1:
            value = arr[0]
        out[name] = value
    return out


def _spatial(sp, n_batch, n, k):
    if sp.ndim == 0:
        sp = np.full((n_batch, n), float(sp))
    elif sp.shape == (n,):
        sp = np.repeat(sp[None], n_batch, axis=0)
    elif sp.shape == (1, n):
        sp = np.repeat(sp, n_batch, axis=0)
    elif sp.shape != (n_batch, n):
        raise SimulationError(
            f"drive[{k}].spatial has shape {sp.shape}; allowed: ({n},) or ({n_batch}, {n})")
    if not np.all(np.isfinite(sp)):
        raise SimulationError(f"drive[{k}].spatial contains NaN or Inf")
    return sp


def _waveform(drv, grid, k):
    n_total = grid.n_steps
    t = grid.step_times()
    wf = drv.waveform
    if callable(wf):
        try:
            w = np.asarray(wf(t), dtype=float)
        except Exception:  # scalar-only callables
            w = None
        if w is None or w.shape != t.shape:
            w = np.array([float(wf(float(ti))) for ti in t])
    else:
        w = np.asarray(wf, dtype=float).ravel()
        if w.size == n_total:
            w = np.append(w, w[-1] if n_total else 0.0)
        if w.size != n_total + 1:
            raise SimulationError(
                f"drive[{k}].waveform has {w.size} samples; it needs one per integration step "
                f"({n_total}, or {n_total + 1} with the end point)")
    if not np.all(np.isfinite(w)):
        raise SimulationError(f"drive[{k}].waveform contains NaN or Inf")
    return w


def _initial_state(mod, initial, conn, seeds, n_batch, n_region):
    """The initial state (batch, region, n_state) and its attrs label."""
    n_state = len(mod.STATES)
    can_draw = hasattr(mod, "INITIAL_RANGE")
    if initial is None:
        initial = "random" if conn is not None and can_draw else "zeros"
    if isinstance(initial, str):
        if initial not in INITIALS:
            raise SimulationError(f"initial {initial!r} unknown; allowed: {', '.join(INITIALS)} "
                                  f"or an array ({n_batch}, {n_region}, {n_state})")
        if initial == "zeros":
            return np.ascontiguousarray(initial_state(mod, n_batch, n_region), dtype=float), initial
        if not can_draw:
            raise SimulationError(f"initial='random': model {mod.NAME} declares no INITIAL_RANGE; "
                                  f"use 'zeros' or an array")
        x = np.empty((n_batch, n_region, n_state))
        drawn = {}
        for k, s in enumerate(seeds):
            if s not in drawn:
                drawn[s] = initial_state(mod, 1, n_region, rng=np.random.default_rng([s, INITIAL_TAG]))[0]
            x[k] = drawn[s]
        return x, initial
    try:
        x = np.asarray(initial, dtype=float)
    except (TypeError, ValueError):
        raise SimulationError(f"initial must be 'random', 'zeros' or a numeric array, got "
                              f"{type(initial).__name__}") from None
    if x.shape in ((n_state,), (n_region, n_state), (1, n_region, n_state)):
        x = np.broadcast_to(x, (n_batch, n_region, n_state))
    if x.shape != (n_batch, n_region, n_state):
        raise SimulationError(f"initial has shape {x.shape}; allowed: ({n_batch}, {n_region}, {n_state}), "
                              f"({n_region}, {n_state}) or ({n_state},) (batch, region, state)")
    if not np.all(np.isfinite(x)):
        raise SimulationError("initial contains NaN or Inf")
    return np.array(x, dtype=float, order="C"), "array"   # a copy: the plan freezes its arrays


# --- execution -----------------------------------------------------------------------------

def _use_batch_kernel(plan: SimulationPlan, kernel: str) -> bool:
    """Whether the lanes kernel runs ``plan``: asked for, or ``auto`` with a batch of 2 or more;
    either way only with the numba backend and delays shared by all members."""
    shared = bool(np.all(plan.network.delays == plan.network.delays[:1]))
    if kernel == "batch" and not shared:
        raise SimulationError("kernel='batch' needs one speed_m_s for the whole batch (shared delays)")
    if plan.dtype == "float32":
        if kernel == "member" or not shared:
            raise SimulationError("dtype='float32' runs on the batch kernel only: one speed_m_s for the "
                                  "whole batch and kernel 'auto' or 'batch'")
        return True
    return plan.backend == "numba" and shared and (kernel == "batch" or (kernel == "auto" and plan.n_batch > 1))


def _execute(plan: SimulationPlan, progress, threads=None, kernel_choice="auto"):
    mod = plan.module
    grid, net = plan.time, plan.network
    nb, nr = plan.n_batch, plan.n_region
    n_noise = len(mod.NOISE_STATES)
    decim = grid.decim
    n_total, n_trans = grid.n_steps, grid.n_transient_steps
    # the kernel writes into these (or types them): writable copies of the plan's frozen arrays
    x = np.array(plan.x0)
    model_p = plan.model_values()
    coupling = plan.value("coupling")
    drv_space, drv_wave, drv_target = (np.array(a) for a in plan.drives)
    indptr, weights = np.array(net.indptr), np.array(net.weights)
    # the history starts constant at the rates of the initial state under step 0's membrane
    # drive (the kernel hands the newest entry to the model as this state's rates)
    um0, _ = drives_at(drv_space, drv_wave, drv_target, 0)
    c0 = mod.cvar_numpy(x, model_p, um0)  # (batch, region, cvar)
    hist = np.ascontiguousarray(
        np.repeat(np.moveaxis(c0, -1, 1)[:, :, :, None], 2 * net.n_slot, axis=3))
    diverged = np.zeros(nb, dtype=bool)
    uniq = sorted(set(plan.seeds))
    stream = np.array([uniq.index(s) for s in plan.seeds], dtype=np.int64)
    rngs = [np.random.default_rng(s) for s in uniq]
    noise_idx = np.array(mod.NOISE_STATES, dtype=np.int64)
    counter = plan.noise_rng == "counter"
    keys = np.array(plan.seeds, dtype=np.int64)
    # the counter generator draws inside the kernel: nothing to draw ahead, chunks at their longest
    per_step = 1 if counter and plan.backend == "numba" else max(1, len(uniq) * nr * n_noise)
    chunk = max(decim, min(_MAX_CHUNK_STEPS, _NOISE_BUDGET // per_step) // decim * decim)
    n_out = len(mod.OUTPUTS)
    rec = plan.record_index
    out = np.empty((len(rec), nb, grid.n_samples, nr))
    heun = plan.method == "heun"
    tag = kernel_tag(mod.NAME, plan.noise_rng, plan.dtype, plan.math_mode)
    offsets = edge_offsets(net.indices, net.delays, net.n_slot)
    if plan.backend == "numpy":
        W, D = net.dense_weights(), net.dense_delays()

    bar = None
    if progress is True:
        bar = tqdm(total=n_total, unit="step", desc=f"simulate {mod.NAME}")
    no_rec = np.zeros((0, 0, 0, 0))
    # chunk boundaries: the transient first (not recorded), then the recorded part
    bounds = []
    t = 0
    while t < n_total:
        end = min(t + chunk, n_trans if t < n_trans else n_total)
        bounds.append((t, end))
        t = end

    def draw(n, t):
        if counter:
            if plan.backend == "numba":
                return np.zeros((1, 0, nr, n_noise))      # not read: the kernels draw
            return np.stack([counter_noise(s, t, n, nr, n_noise) for s in uniq])
        noise = np.empty((len(uniq), n, nr, n_noise))
        for k, g in enumerate(rngs):
            g.standard_normal(out=noise[k].reshape(-1)) if n_noise else None
        return noise

    # batch members are split into contiguous blocks advanced by threads (the kernel releases
    # the GIL); the next chunk's noise is drawn meanwhile by one more thread
    lanes = None
    if _use_batch_kernel(plan, kernel_choice):
        lanes = BatchBlocks(tag, x, hist, model_p, coupling, drv_space, stream, keys, n_noise, len(rec),
                            len(mod.OUTPUTS), offsets[0], plan.dtype, threads or _default_threads())
    n_units = nb if lanes is None else len(lanes.blocks)
    n_workers = 1 if plan.backend != "numba" else min(n_units, threads or _default_threads())
    blocks = np.array_split(np.arange(nb), n_workers)
    blocks = [(int(blk[0]), int(blk[-1]) + 1) for blk in blocks if blk.size]
    pool = ThreadPoolExecutor(max_workers=1)
    workers = ThreadPoolExecutor(max_workers=len(blocks)) if len(blocks) > 1 else None
    try:
        pending = pool.submit(draw, bounds[0][1] - bounds[0][0], bounds[0][0])
        sample = 0
        for c, (t, end) in enumerate(bounds):
            n = end - t
            noise = pending.result()
            if c + 1 < len(bounds):
                pending = pool.submit(draw, bounds[c + 1][1] - bounds[c + 1][0], bounds[c + 1][0])
            in_trans = t < n_trans
            wave = np.ascontiguousarray(drv_wave[:, t:end + 1])
            buf = no_rec if in_trans else np.empty((len(rec), nb, n // decim, nr))
            args = KernelArgs(x=x, hist=hist, t0=t, params=model_p, coupling=coupling,
                              indptr=indptr, weights=weights, offsets=offsets, noise=noise,
                              stream=stream, keys=keys, noise_idx=noise_idx, drv_space=drv_space,
                              drv_wave=wave, drv_target=drv_target, dt=grid.dt_s, n_steps=n,
                              decim=decim, rec=rec, n_out=n_out, out=buf, diverged=diverged,
                              bound=float(mod.STATE_BOUND))
            if lanes is not None:
                lanes.advance(args, heun, workers)
            elif plan.backend == "numba":
                kernel = compiled_integrate(tag, heun, args)
                if workers is None:
                    kernel(tag, heun, 0, nb, args)
                else:
                    for f in [workers.submit(kernel, tag, heun, b0, b1, args) for b0, b1 in blocks]:
                        f.result()
            else:
                integrate_numpy(mod, heun, args, W, D)
            if not in_trans:
                out[:, :, sample:sample + n // decim, :] = buf
                sample += n // decim
            if bar is not None:
                bar.update(n)
            elif callable(progress):
                progress(end, n_total)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if workers is not None:
            workers.shutdown(wait=True)
    if bar is not None:
        bar.close()
    return out, diverged


def _default_threads() -> int:
    """One thread per CPU, but one inside a Dask worker (the cluster already fills the CPUs)."""
    distributed = sys.modules.get("distributed")
    if distributed is not None:
        try:
            distributed.get_worker()
            return 1
        except (ValueError, AttributeError):
            pass
    return os.cpu_count() or 1


def _param_json(plan: SimulationPlan):
    values = {}
    for i, name in enumerate(plan.params.names):
        v = plan.values[:, i, :]
        if np.all(v == v.flat[0]):
            values[name] = float(v.flat[0])
        elif np.all(v == v[:, :1]):
            values[name] = v[:, 0].tolist()
        else:
            values[name] = v.tolist()
    return values


def _to_dataset(plan: SimulationPlan, result):
    out, diverged = result
    mod = plan.module
    units = getattr(mod, "UNITS", {})
    data = {}
    for k, name in enumerate(plan.record):
        data[name] = (("batch", "time", "region"), out[k], {"units": cf_unit(units.get(name, ""))})
    data["diverged"] = (("batch",), diverged.copy(),
                        {"units": DIMENSIONLESS,
                         "doc": "state became non-finite or exceeded the model's STATE_BOUND"})
    coords = {"batch": ("batch", np.arange(plan.n_batch), {"units": DIMENSIONLESS}),
              "time": ("time", plan.time.sample_times(), {"units": "s"}),
              "region": list(plan.labels)}
    for name in plan.given:
        v = plan.value(name)
        if plan.n_batch > 1 and not np.all(v == v[:1]):
            unit = {"units": cf_unit(plan.params[name].unit)}
            if np.all(v == v[:, :1]):
                coords[name] = ("batch", v[:, 0].copy(), unit)
            else:
                coords[name] = (("batch", "region"), v, unit)
    conn = plan.connectome
    seeds = plan.seeds
    attrs = {
        "Conventions": CONVENTIONS,
        "model": mod.NAME,
        "dt_ms": plan.time.dt_ms,
        "sample_rate_hz": plan.time.sample_rate_hz,
        "seed": seeds[0] if len(set(seeds)) == 1 else json.dumps(list(seeds)),
        "duration_s": plan.time.duration_s,
        "transient_s": plan.time.transient_s,
        "method": plan.method,
        "noise_rng": plan.noise_rng,
        "dtype": plan.dtype,
        "initial": plan.initial,
        "backend": plan.backend,
        "connectome": "none" if conn is None else conn.name,
        "connectome_hash": "" if conn is None else conn.content_hash(),
        "normalisation": plan.normalisation,
        "params": json.dumps(_param_json(plan)),
        "plan_sha256": plan.fingerprint(),
        "monitor": "temporal average over each sampling period; time = window start",
        "noise": "additive on the input rate; noise_sd = sd per 1-ms sample (sigma_w = noise_sd*sqrt(1 ms))",
        "version": __version__,
    }
    if plan.math_mode != "default":
        attrs["math_mode"] = plan.math_mode
    return xr.Dataset(data, coords=coords, attrs=attrs)
