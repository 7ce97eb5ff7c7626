"""Stimulation time courses: tDCS with ramps, tACS at any frequency and phase, and sums.

A :class:`Waveform` is a dimensionless function of time ``w(t)`` (``t`` in seconds) that scales
a montage's currents: the current at electrode *k* is ``I_k · w(t)``. A tDCS plateau is
``w = 1``; a tACS waveform ``w = sin(2π f t + φ)`` has peak 1, so the montage holds the peak
(zero-to-peak) currents. Waveforms are vectorised callables (``w(t_array)``), add (``w1 + w2``)
and scale (``0.5 * w``), and sample on a simulation clock (:meth:`Waveform.sample`), which
is what :class:`neurotwin_dash.simulate.Drive` takes.

tACS with a different phase per electrode is not one montage times one waveform; it splits
exactly into a sine and a cosine component (:func:`phased_tacs`): with
``I_k(t) = a_k sin(ωt + φ_k) = a_k cos φ_k · sin ωt + a_k sin φ_k · cos ωt``.

Ramps follow common practice (docs/science.md §7): tDCS ramps of 10–30 s; tACS often ramps a few
seconds. The text form used by the CLI is parsed by :func:`parse_waveform`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import xarray as xr

from .montage import DEFAULT_LAYOUT, Limits, Montage, MontageError, canonical_name

__all__ = ["WaveformError", "Waveform", "TDCS", "TACS", "Sum", "Scaled", "Sampled",
           "parse_waveform", "phased_tacs", "simulation_times"]


class WaveformError(ValueError):
    """Invalid waveform input; the message names the field and the allowed range."""


def simulation_times(duration_s: float, dt_ms: float) -> np.ndarray:
    """The simulation clock: ``n_steps = round(duration_s / dt)`` times ``k·dt`` in seconds."""
    _positive("duration_s", duration_s)
    _positive("dt_ms", dt_ms)
    n = int(round(duration_s * 1000.0 / dt_ms))
    return np.arange(n) * (dt_ms / 1000.0)


def _positive(name, value):
    if not (np.isfinite(value) and value > 0):
        raise WaveformError(f"{name} must be a positive finite number, got {value!r}")


def _nonneg(name, value):
    if not (np.isfinite(value) and value >= 0):
        raise WaveformError(f"{name} must be a finite number >= 0, got {value!r}")


class Waveform:
    """Base class: a dimensionless, vectorised function of time in seconds."""

    def __call__(self, t_s) -> np.ndarray:
        return self.evaluate(np.asarray(t_s, dtype=float))

    def evaluate(self, t: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def sample(self, duration_s: float, dt_ms: float) -> xr.DataArray:
        """Values on the simulation clock (:func:`simulation_times`), dims ``("time",)``."""
        t = simulation_times(duration_s, dt_ms)
        return xr.DataArray(self(t), dims=("time",), coords={"time": t},
                            attrs={"units": "1", "waveform": self.describe(), "dt_ms": dt_ms})

    def describe(self) -> str:
        return repr(self)

    def __add__(self, other):
        if not isinstance(other, Waveform):
            return NotImplemented
        return Sum((self, other))

    def __mul__(self, factor):
        if isinstance(factor, Waveform) or not np.isscalar(factor):
            return NotImplemented
        return Scaled(self, float(factor))

    __rmul__ = __mul__

    def __neg__(self):
        return Scaled(self, -1.0)


def _envelope(t: np.ndarray, onset_s: float, duration_s: float | None, ramp_up_s: float,
              ramp_down_s: float) -> np.ndarray:
    """Trapezoid: 0 before onset, linear ramp up, 1, linear ramp down ending at onset + duration."""
    tau = t - onset_s
    env = np.where(tau >= 0, 1.0, 0.0)
    if ramp_up_s > 0:
        env = env * np.clip(tau / ramp_up_s, 0.0, 1.0)
    if duration_s is not None:
        remaining = duration_s - tau
        env = env * (remaining > 0)
        if ramp_down_s > 0:
            env = env * np.clip(remaining / ramp_down_s, 0.0, 1.0)
    return env


def _check_timing(onset_s, duration_s, ramp_up_s, ramp_down_s):
    _nonneg("onset_s", onset_s)
    _nonneg("ramp_up_s", ramp_up_s)
    _nonneg("ramp_down_s", ramp_down_s)
    if duration_s is not None:
        _positive("duration_s", duration_s)
        if ramp_up_s + ramp_down_s > duration_s + 1e-12:
            raise WaveformError(f"ramp_up_s + ramp_down_s = {ramp_up_s + ramp_down_s:g} s exceeds "
                                f"duration_s = {duration_s:g} s")


@dataclass(frozen=True)
class TDCS(Waveform):
    """Direct current: linear ramp up, plateau 1, linear ramp down.

    Parameters
    ----------
    ramp_up_s, ramp_down_s : float
        Ramp lengths (s); 0 gives a step. Clinical protocols use 10–30 s.
    onset_s : float
        Start of the ramp up (s).
    duration_s : float, optional
        Time from onset to the end of the ramp down (s), ramps included; ``None`` = stays on.
    """

    ramp_up_s: float = 10.0
    ramp_down_s: float = 10.0
    onset_s: float = 0.0
    duration_s: float | None = None

    def __post_init__(self):
        _check_timing(self.onset_s, self.duration_s, self.ramp_up_s, self.ramp_down_s)

    def evaluate(self, t):
        return _envelope(t, self.onset_s, self.duration_s, self.ramp_up_s, self.ramp_down_s)

    def describe(self):
        dur = "" if self.duration_s is None else f":duration={self.duration_s:g}s"
        return f"tdcs:ramp_up={self.ramp_up_s:g}s:ramp_down={self.ramp_down_s:g}s:onset={self.onset_s:g}s{dur}"


@dataclass(frozen=True)
class TACS(Waveform):
    """Alternating current ``sin(2π f (t − onset) + φ)`` times a trapezoid envelope.

    Parameters
    ----------
    frequency_hz : float
        Stimulation frequency (> 0), e.g. 40 for gamma tACS.
    phase_deg : float
        Phase φ in degrees at the onset.
    ramp_up_s, ramp_down_s, onset_s, duration_s : float
        Envelope as in :class:`TDCS` (no ramps by default).
    """

    frequency_hz: float = 10.0
    phase_deg: float = 0.0
    ramp_up_s: float = 0.0
    ramp_down_s: float = 0.0
    onset_s: float = 0.0
    duration_s: float | None = None

    def __post_init__(self):
        _positive("frequency_hz", self.frequency_hz)
        if not np.isfinite(self.phase_deg):
            raise WaveformError(f"phase_deg must be finite, got {self.phase_deg!r}")
        _check_timing(self.onset_s, self.duration_s, self.ramp_up_s, self.ramp_down_s)

    def evaluate(self, t):
        carrier = np.sin(2 * np.pi * self.frequency_hz * (t - self.onset_s) + np.deg2rad(self.phase_deg))
        return carrier * _envelope(t, self.onset_s, self.duration_s, self.ramp_up_s, self.ramp_down_s)

    def describe(self):
        dur = "" if self.duration_s is None else f":duration={self.duration_s:g}s"
        return (f"tacs:{self.frequency_hz:g}Hz:phase={self.phase_deg:g}:ramp_up={self.ramp_up_s:g}s:"
                f"ramp_down={self.ramp_down_s:g}s:onset={self.onset_s:g}s{dur}")


@dataclass(frozen=True)
class Sum(Waveform):
    """Sum of waveforms, e.g. tDCS offset plus tACS (``TDCS() + 0.5 * TACS(40)``)."""

    terms: tuple

    def __post_init__(self):
        terms = []
        for term in self.terms:
            if not isinstance(term, Waveform):
                raise WaveformError(f"Sum terms must be Waveforms, got {type(term).__name__}")
            terms.extend(term.terms if isinstance(term, Sum) else [term])
        object.__setattr__(self, "terms", tuple(terms))

    def evaluate(self, t):
        return sum(term.evaluate(t) for term in self.terms)

    def describe(self):
        return " + ".join(term.describe() for term in self.terms)


@dataclass(frozen=True)
class Scaled(Waveform):
    """``factor · waveform``."""

    waveform: Waveform
    factor: float

    def evaluate(self, t):
        return self.factor * self.waveform.evaluate(t)

    def describe(self):
        return f"{self.factor:g}*{self.waveform.describe()}"


class Sampled(Waveform):
    """A user's waveform given as samples, linearly interpolated (0 outside the samples).

    Parameters
    ----------
    values : array (n,)
        Dimensionless samples.
    dt_ms : float
        Spacing of the samples; the first sample is at ``t0_s``.
    """

    def __init__(self, values, dt_ms: float, t0_s: float = 0.0):
        v = np.asarray(values, dtype=float)
        if v.ndim != 1 or v.size < 2 or not np.all(np.isfinite(v)):
            raise WaveformError(f"values must be a finite 1-D array of >= 2 samples, got shape {v.shape}")
        _positive("dt_ms", dt_ms)
        self.values, self.dt_ms, self.t0_s = v, float(dt_ms), float(t0_s)

    def evaluate(self, t):
        tt = self.t0_s + np.arange(self.values.size) * self.dt_ms / 1000.0
        return np.interp(t, tt, self.values, left=0.0, right=0.0)

    def describe(self):
        return f"sampled:{self.values.size}@{self.dt_ms:g}ms"


# --- text form ----------------------------------------------------------------------------

_TIME_KEYS = {"ramp": ("ramp_up_s", "ramp_down_s"), "ramp_up": ("ramp_up_s",),
              "ramp_down": ("ramp_down_s",), "onset": ("onset_s",), "duration": ("duration_s",)}


def _number(text: str, unit: str, field: str) -> float:
    m = re.fullmatch(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(" + unit + r")?\s*", text)
    if not m:
        raise WaveformError(f"waveform field {field!r}: {text!r} is not a number"
                            + (f" (optionally followed by {unit!r})" if unit else ""))
    value = float(m.group(1))
    if unit == "ms|s" and m.group(2) == "ms":
        value /= 1000.0
    return value


def parse_waveform(text: str) -> Waveform:
    """Parse the CLI's text form of a waveform.

    Grammar: terms joined by ``+``; a term is ``[factor*]kind[:field...]`` with kind ``tdcs`` or
    ``tacs``. tACS takes its frequency as ``40Hz`` (or ``f=40``) and ``phase=<deg>``; both take
    ``ramp=<s>`` (up and down), ``ramp_up=``, ``ramp_down=``, ``onset=``, ``duration=`` (seconds,
    ``s`` or ``ms`` suffix allowed).

    Examples
    --------
    ``tacs:40Hz``, ``tdcs:ramp=10s:duration=60s``, ``tacs:10Hz:phase=90:ramp=2s``,
    ``tdcs:ramp=0 + 0.5*tacs:40Hz``.
    """
    if not isinstance(text, str) or not text.strip():
        raise WaveformError("waveform: expected text such as 'tacs:40Hz' or 'tdcs:ramp=10s'")
    terms = []
    for raw in text.split("+"):
        raw = raw.strip()
        factor = 1.0
        if "*" in raw:
            head, raw = raw.split("*", 1)
            factor = _number(head, "", "factor")
        parts = [p.strip() for p in raw.split(":") if p.strip()]
        if not parts:
            raise WaveformError(f"waveform term {raw!r} is empty")
        kind, fields = parts[0].lower(), parts[1:]
        kwargs: dict = {}
        if kind == "tacs":
            for f in fields:
                if "=" not in f:
                    kwargs["frequency_hz"] = _number(f, "Hz|hz", "frequency")
                    continue
                key, val = (s.strip().lower() for s in f.split("=", 1))
                if key in ("f", "freq", "frequency"):
                    kwargs["frequency_hz"] = _number(val, "Hz|hz", "frequency")
                elif key in ("phase", "phase_deg"):
                    kwargs["phase_deg"] = _number(val, "deg", "phase")
                elif key in _TIME_KEYS:
                    for name in _TIME_KEYS[key]:
                        kwargs[name] = _number(val, "ms|s", key)
                else:
                    raise WaveformError(f"tacs: unknown field {key!r}; allowed: <f>Hz, f, phase, ramp, "
                                        f"ramp_up, ramp_down, onset, duration")
            if "frequency_hz" not in kwargs:
                raise WaveformError("tacs needs a frequency, e.g. 'tacs:40Hz'")
            term = TACS(**kwargs)
        elif kind == "tdcs":
            for f in fields:
                key, _, val = (s.strip().lower() for s in f.partition("="))
                if key not in _TIME_KEYS or not val:
                    raise WaveformError(f"tdcs: unknown field {f!r}; allowed: ramp=, ramp_up=, ramp_down=, "
                                        f"onset=, duration= (seconds)")
                for name in _TIME_KEYS[key]:
                    kwargs[name] = _number(val, "ms|s", key)
            term = TDCS(**kwargs)
        else:
            raise WaveformError(f"waveform kind {kind!r} unknown; allowed: tdcs, tacs")
        terms.append(term if factor == 1.0 else Scaled(term, factor))
    return terms[0] if len(terms) == 1 else Sum(tuple(terms))


# --- tACS with a phase per electrode ------------------------------------------------------

def phased_tacs(amplitudes_mA: Mapping[str, float], phases_deg: Mapping[str, float] | float,
                frequency_hz: float, layout: str | None = None, limits=None, **envelope):
    """tACS with its own amplitude and phase at each electrode, as two separable components.

    ``I_k(t) = a_k sin(2π f t + φ_k)`` is split into ``[(M_sin, TACS(f, 0)), (M_cos, TACS(f, 90))]``
    with ``M_sin = a_k cos φ_k`` and ``M_cos = a_k sin φ_k``; the field is then
    ``E(M_sin)·sin + E(M_cos)·cos`` exactly (the field is linear in the currents).

    The currents must sum to zero at every instant (``Σ a_k e^{iφ_k} = 0``); the limits apply to the
    peak per-electrode amplitude and to the largest instantaneous total injected current.

    Parameters
    ----------
    amplitudes_mA : mapping electrode -> peak current (mA, sign allowed)
    phases_deg : mapping electrode -> phase (degrees), or one phase for all
    frequency_hz : float
    layout : str, optional
        Catalog layout of the electrode names (default ``standard_1005``).
    limits : montage.Limits, optional
    **envelope
        ``ramp_up_s``, ``ramp_down_s``, ``onset_s``, ``duration_s`` of both components.

    Returns
    -------
    list of (Montage, TACS)
        Components with non-zero currents (one when all phases are equal or opposite).
    """

    layout = layout or DEFAULT_LAYOUT
    limits = limits or Limits()
    names = [canonical_name(n, layout) for n in amplitudes_mA]
    amp = np.array([float(v) for v in amplitudes_mA.values()])
    if isinstance(phases_deg, Mapping):
        lookup = {canonical_name(n, layout): float(v) for n, v in phases_deg.items()}
        missing = [n for n in names if n not in lookup]
        if missing:
            raise WaveformError(f"phases_deg: no phase given for electrodes {missing}")
        extra = sorted(set(lookup) - set(names))
        if extra:
            raise WaveformError(f"phases_deg: electrodes {extra} have a phase but no amplitude")
        phase = np.deg2rad([lookup[n] for n in names])
    else:
        phase = np.full(len(names), np.deg2rad(float(phases_deg)))
    for n, a in zip(names, amp):
        if abs(a) > limits.max_current_mA + limits.tol_mA:
            raise MontageError(f"electrode {n!r}: peak |current| = {abs(a):g} mA exceeds the per-electrode "
                               f"limit max_current_mA = {limits.max_current_mA:g} mA")
    phasor = np.sum(amp * np.exp(1j * phase))
    if abs(phasor) > limits.tol_mA:
        raise MontageError(f"tACS currents do not sum to zero at every instant: |Σ a_k e^(iφ_k)| = "
                           f"{abs(phasor):.3g} mA (must be within tol_mA = {limits.tol_mA:g})")
    wt = np.linspace(0.0, 2 * np.pi, 721)
    inst = amp[None, :] * np.sin(wt[:, None] + phase[None, :])
    peak_total = float(np.clip(inst, 0, None).sum(axis=1).max())
    if peak_total > limits.max_total_mA + limits.tol_mA:
        raise MontageError(f"total injected current peaks at {peak_total:.3g} mA during the cycle, over "
                           f"the limit max_total_mA = {limits.max_total_mA:g} mA")
    comps = []
    for coef, ph in ((np.cos(phase), 0.0), (np.sin(phase), 90.0)):
        cur = amp * coef
        cur[np.abs(cur) <= 1e-9] = 0.0   # cos(90°) rounding; keeps the sum zero to ~1e-8 mA
        if np.any(cur != 0):
            montage = Montage(dict(zip(names, cur)), layout=layout, limits=limits)
            comps.append((montage, TACS(frequency_hz, ph, **envelope)))
    return comps
