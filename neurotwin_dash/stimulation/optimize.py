"""Montage optimization: Stimweaver-style constrained least squares, and outcome-driven choice.

Field-driven (Ruffini et al. 2014, "Optimization of multifocal transcranial current
stimulation for weighted cortical pattern targeting from realistic modeling of electric
fields", NeuroImage 89:216–225; docs/science.md §8). With ``A`` the per-electrode normal-field matrix
(region × electrode, V/m per mA; :func:`~neurotwin_dash.stimulation.efield.electrode_fields`),
a target map ``t`` (desired E_n per region) and weights ``w``, find the currents ``I`` (mA)

    minimise   Σ_r w_r (A_r·I − t_r)²  [+ w_vec Σ_{r off-target} |E_r(I)|²]
    subject to Σ_k I_k = 0,  |I_k| ≤ I_max,  Σ_k max(I_k, 0) ≤ I_tot,  #{k: I_k ≠ 0} ≤ N.

Without the count limit this is a convex QP (solved with cvxpy; ``Σ max(I, 0) ≤ I_tot`` is
written as ``‖I‖₁ ≤ 2 I_tot``, equivalent under ``Σ I = 0``). The optional vector term also
penalises tangential off-target field, which Stimweaver's normal-only objective leaves free.

Electrode count (documented heuristic, "greedy prune / re-solve"): solve on all candidates;
while more than ``N`` electrodes carry current, drop the weakest ones — at most a third of the
surplus at a time, always at least one — and re-solve on the rest; finish with a solve on the
≤ N survivors. Currents are then rounded to 0.1 µA and the sum fixed exactly, so the returned
:class:`~neurotwin_dash.stimulation.montage.Montage` meets every limit exactly (it is validated).

Outcome-driven (:func:`choose_by_outcome`): candidate montages and sham are simulated through
the network in one batched run over several noise seeds (common random numbers), a biomarker
such as gamma power in the target regions is measured, and the candidate whose paired effect
has the largest 95 % CI lower bound is chosen (:mod:`neurotwin_dash.stimulation.effects`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import xarray as xr
from scipy.signal import welch

from ..models import get_model
from ..simulate import Drive
from .coupling import STIM_PARAMS
from .effects import paired_effect, simulate_arms
from .efield import bipolar_over, electrode_fields, field_summary, montage_field, scalp_electrodes
from .montage import Limits, Montage
from .waveforms import parse_waveform

__all__ = ["OptimizationError", "Target", "OptimizationResult", "optimize_montage",
           "solve_currents", "choose_by_outcome", "band_power", "candidate_montages"]

_ROUND_MA = 1e-4          # current resolution of the result (0.1 µA)


class OptimizationError(ValueError):
    """Invalid optimization input or an infeasible problem; the message says which."""


@dataclass
class Target:
    """A target field map over regions.

    Parameters
    ----------
    regions : mapping label -> desired E_n (V/m), or a sequence of labels (then ``en_V_m`` each)
    en_V_m : float
        Desired E_n for labels given as a sequence (positive = depolarising/"anodal").
    weight : float
        Weight of every target region (``w_r``).
    offtarget_weight : float
        Weight of every other region, whose desired E_n is 0.
    vector_weight : float
        Weight of the off-target field magnitude term (0 = Stimweaver's normal-only objective).
    """

    regions: Mapping[str, float] | Sequence[str]
    en_V_m: float = 0.5
    weight: float = 100.0
    offtarget_weight: float = 1.0
    vector_weight: float = 1.0

    def __post_init__(self):
        if isinstance(self.regions, str):
            self.regions = [self.regions]
        if not isinstance(self.regions, Mapping):
            self.regions = {str(r): float(self.en_V_m) for r in self.regions}
        if not self.regions:
            raise OptimizationError("target: give at least one region label")
        for name in ("weight", "offtarget_weight", "vector_weight"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise OptimizationError(f"target {name} must be a finite number >= 0, got {v!r}")
        if self.weight == 0:
            raise OptimizationError("target weight must be > 0")

    @property
    def labels(self) -> list[str]:
        return list(self.regions)


@dataclass
class OptimizationResult:
    """An optimized montage with its field and figures of merit."""

    montage: Montage
    field: xr.Dataset
    metrics: dict
    history: list = field(default_factory=list)


def _matrices(fields: xr.Dataset, candidates: list[str], target: Target):
    labels = [str(r) for r in fields["region"].values]
    unknown = [r for r in target.labels if r not in labels]
    if unknown:
        raise OptimizationError(f"target regions {unknown} not among the regions; known e.g. {labels[:6]}")
    An = fields["field_normal"].sel(electrode=candidates).values.T          # (region, electrode)
    Av = fields["field"].sel(electrode=candidates).values.transpose(1, 2, 0)  # (region, axis, electrode)
    t = np.array([target.regions.get(r, 0.0) for r in labels])
    is_t = np.array([r in target.regions for r in labels])
    w = np.where(is_t, target.weight, target.offtarget_weight)
    return An, Av, t, w, is_t


def solve_currents(An, t, w, limits: Limits, Av=None, vector_weight: float = 0.0, off=None,
                   solver: str | None = None) -> np.ndarray:
    """The convex QP: currents (mA) minimising the weighted squared error under the limits.

    Parameters
    ----------
    An : (region, electrode) normal-field matrix (V/m per mA)
    t, w : (region,) target E_n and weights
    limits : Limits (max_current_mA, max_total_mA; the count limit is handled by the caller)
    Av : (region, 3, electrode), optional — vector fields for the off-target magnitude term
    off : (region,) bool — regions the vector term applies to
    """
    import cvxpy as cp  # heavy: cvxpy (~0.6 s), only for the convex optimiser
    n = An.shape[1]
    I = cp.Variable(n)
    sw = np.sqrt(w)
    # scale to O(1) numbers for the solver
    s = 1.0 / max(np.abs(An).max(), 1e-12)
    terms = [cp.sum_squares(cp.multiply(sw * s, An @ I) - sw * s * t)]
    if Av is not None and vector_weight > 0 and off is not None and off.any():
        M = Av[off].reshape(-1, n) * s
        terms.append(vector_weight * cp.sum_squares(M @ I))
    cons = [cp.sum(I) == 0, cp.abs(I) <= limits.max_current_mA, cp.norm1(I) <= 2 * limits.max_total_mA]
    prob = cp.Problem(cp.Minimize(sum(terms)), cons)
    try:
        prob.solve(solver=solver or "CLARABEL")
    except cp.error.SolverError:
        prob.solve(solver="SCS")
    if I.value is None or prob.status not in ("optimal", "optimal_inaccurate"):
        raise OptimizationError(f"the current QP did not solve (status {prob.status})")
    return np.asarray(I.value, float)


def _exact(currents: np.ndarray, limits: Limits) -> np.ndarray:
    """Round to 0.1 µA and make the constraints hold exactly (sum 0, bounds, total)."""
    q = np.round(currents / _ROUND_MA).astype(np.int64)           # integer units of 0.1 µA
    cap = int(np.floor(limits.max_current_mA / _ROUND_MA + 1e-9))
    q = np.clip(q, -cap, cap)
    excess = int(q.sum())
    while excess != 0:                      # move single units where there is room
        step = -np.sign(excess)
        room = (q + step >= -cap) & (q + step <= cap) & (q != 0)
        k = int(np.argmax(np.where(room, np.abs(q), -1)))
        q[k] += step
        excess += step
    tot = int(np.floor(limits.max_total_mA / _ROUND_MA + 1e-9))
    while q[q > 0].sum() > tot:             # shrink the largest anode and cathode together
        q[int(np.argmax(q))] -= 1
        q[int(np.argmin(q))] += 1
    return q * _ROUND_MA


def optimize_montage(target: Target | Sequence[str] | str, fields: xr.Dataset | None = None,
                     connectome="tvb76", limits: Limits | None = None,
                     candidates: Iterable[str] | None = None, layout: str | None = None,
                     prune_floor_mA: float = 1e-3, solver: str | None = None) -> OptimizationResult:
    """Optimize electrode currents for a target E_n map (Stimweaver-style).

    Parameters
    ----------
    target : Target, or region label(s) (then ``Target(labels)``: E_n 0.5 V/m, weight 100)
    fields : xarray.Dataset, optional
        Per-electrode fields; computed for ``connectome`` and ``layout`` (default the EEG
        ``standard_1020`` layout) when omitted.
    limits : Limits
        Per-electrode and total current, and the electrode count ``max_electrodes``.
    candidates : iterable of str, optional
        Electrodes allowed; default the cap electrodes of the layout
        (:func:`~neurotwin_dash.stimulation.efield.scalp_electrodes`).
    prune_floor_mA : float
        Currents below this count as off when pruning.

    Returns
    -------
    OptimizationResult
        ``montage`` (validated), ``field`` (montage field), ``metrics`` (target E_n, off-target
        mean |E|, focality, objective), ``history`` (active electrodes per greedy step).
    """
    if not isinstance(target, Target):
        target = Target(target)
    limits = limits or Limits()
    if fields is None:
        fields = electrode_fields(connectome, layout or "standard_1020")
    names = scalp_electrodes(fields["electrode"].values) if candidates is None else [str(c) for c in candidates]
    present = set(map(str, fields["electrode"].values))
    missing = [c for c in names if c not in present]
    if missing:
        raise OptimizationError(f"candidate electrodes {missing} are not in the field layout")
    if len(names) < 2:
        raise OptimizationError("need at least two candidate electrodes")
    An, Av, t, w, is_t = _matrices(fields, names, target)
    off = ~is_t
    active = np.arange(len(names))
    history = []
    while True:
        I = solve_currents(An[:, active], t, w, limits, Av[:, :, active], target.vector_weight, off, solver)
        on = np.abs(I) > prune_floor_mA
        history.append([names[k] for k in active[on]])
        if on.sum() <= limits.max_electrodes:
            if len(active) > limits.max_electrodes:   # final solve on the survivors only
                active = active[on]
                continue
            break
        surplus = int(on.sum()) - limits.max_electrodes
        drop = max(1, surplus // 3)
        order = np.argsort(np.abs(I))                   # weakest first (zeros included)
        n_zero = int((~on).sum())
        keep = np.ones(len(active), bool)
        keep[order[:n_zero + drop]] = False
        active = active[keep]
    currents = _exact(I, limits)
    montage = Montage({names[k]: c for k, c in zip(active, currents) if c != 0.0},
                      layout=fields.attrs.get("layout", "standard_1020"), limits=limits)
    mfield = montage_field(montage, fields)
    metrics = field_summary(mfield, target.labels)
    En = mfield["E_n"].values
    metrics["objective"] = float(np.sum(w * (En - t) ** 2))
    metrics["n_electrodes"] = len(montage.active_electrodes)
    metrics["total_injected_mA"] = montage.total_injected_mA
    return OptimizationResult(montage, mfield, metrics, history)


# --- outcome-driven ---------------------------------------------------------------------------

def band_power(result: xr.Dataset, variable: str, regions: Sequence[str], band=(38.0, 42.0)) -> np.ndarray:
    """Mean Welch power in ``band`` (Hz) over ``regions``, one value per batch member."""
    if variable not in result:
        raise OptimizationError(f"variable {variable!r} not in the simulation result; has {list(result.data_vars)}")
    x = result[variable].sel(region=list(regions)).transpose("batch", "time", "region").values
    fs = float(result.attrs.get("sample_rate_hz", 1.0 / float(np.diff(result["time"].values[:2])[0])))
    nper = min(x.shape[1], int(fs))
    f, P = welch(x - x.mean(axis=1, keepdims=True), fs=fs, nperseg=nper, axis=1)
    sel = (f >= band[0]) & (f <= band[1])
    if not sel.any():
        raise OptimizationError(f"band {band} Hz holds no frequency bin (resolution {f[1] - f[0]:g} Hz)")
    return P[:, sel, :].mean(axis=(1, 2))


def candidate_montages(target: Sequence[str], fields: xr.Dataset, limits: Limits | None = None,
                       weights: Sequence[float] = (10.0, 100.0, 1000.0)) -> dict[str, Montage]:
    """A small candidate set: the bipolar montage over the target and QP montages at several
    target/off-target weight ratios (more focal ↔ stronger)."""
    limits = limits or Limits()
    out = {"bipolar": bipolar_over(target, fields, current_mA=min(2.0, limits.max_current_mA))}
    for wt in weights:
        res = optimize_montage(Target(list(target), weight=wt), fields, limits=limits)
        out[f"qp_w{wt:g}"] = res.montage
    return out


def choose_by_outcome(candidates: Mapping[str, Montage], waveform, target_regions: Sequence[str],
                      model="jansen_rit", connectome="tvb76", variable: str | None = None,
                      measure: str = "evoked", biomarker: Callable | None = None, band=(38.0, 42.0),
                      fields: xr.Dataset | None = None, lambda_mV_per_V_m=None, duration_s: float = 4.0,
                      transient_s: float = 1.0, dt_ms: float = 0.1, params: Mapping | None = None,
                      seed: int = 0, n_seeds: int = 5, maximize: bool = True) -> tuple[str, xr.Dataset]:
    """Pick the candidate montage that moves a simulated biomarker most *reliably*.

    Every candidate and a sham are simulated in ONE batched run with ``n_seeds`` noise
    realisations each, the same seeds for every arm (common random numbers), and each
    candidate's effect is the paired difference from sham with a 95 % CI over the seeds
    (:func:`neurotwin_dash.stimulation.effects.paired_effect`). Candidates are ranked by the
    CI's **lower bound** of the desired change (the upper bound, negated, with
    ``maximize=False``), not by a point estimate: a large but noisy effect loses to a smaller
    one that is surely there.

    Parameters
    ----------
    candidates : mapping name -> Montage
    waveform : Waveform or text (e.g. ``"tacs:40Hz"``)
    target_regions : region labels the biomarker is measured in
    variable : str, optional
        Recorded output; default the model's first observed output (JR ``v_pyr``; LaNMM ``v_p2``
        is the gamma generator).
    measure : ``"evoked"`` | ``"power"``
        ``evoked``: band power of the stimulation-driven part, ``x_candidate − x_sham`` (same
        noise), over the target regions. ``power``: band power of the signal itself.
    biomarker : callable(result, sham_of_member) -> (batch,), optional
        Replaces ``measure``; ``sham_of_member[k]`` is the batch index of member *k*'s sham.
    n_seeds : int
        Noise realisations per arm (≥ 2; the CI needs pairs).
    maximize : bool
        Choose the largest increase from sham (else the largest decrease).

    Returns
    -------
    best : str
        Name of the chosen candidate.
    scores : xarray.Dataset over ``candidate`` (sham first): ``biomarker`` (mean over seeds),
        ``change_from_sham`` (mean paired difference), ``ci_low``, ``ci_high``, ``verdict``
        ("indistinguishable from sham" when the CI contains 0) and the candidates' mean target
        ``target_En`` (V/m); attrs ``best``, ``ranked_by``, ``n_seeds``.
    """

    if not candidates:
        raise OptimizationError("candidates: give at least one montage")
    if measure not in ("evoked", "power"):
        raise OptimizationError(f"measure {measure!r} unknown; allowed: 'evoked', 'power'")
    if int(n_seeds) != n_seeds or n_seeds < 2:
        raise OptimizationError(f"n_seeds must be an integer ≥ 2 (the CI needs pairs), got {n_seeds!r}")
    wave = parse_waveform(waveform) if isinstance(waveform, str) else waveform
    names = ["sham"] + list(candidates)
    if fields is None:
        fields = electrode_fields(connectome)
    ens = np.array([np.zeros(fields.sizes["region"])] +
                   [montage_field(candidates[n], fields)["E_n"].values for n in names[1:]])
    spec = STIM_PARAMS["stim_lambda_mV_per_V_m"]
    lam = float(spec.check(spec.default if lambda_mV_per_V_m is None else lambda_mV_per_V_m))
    nc, ns = len(names), int(n_seeds)
    spatial = xr.DataArray(lam * ens[1:], dims=("arm", "region"), coords={"region": fields["region"].values})
    mod = get_model(model)
    var = variable or mod.OBSERVED[0]
    p = dict(params or {})
    p.setdefault("coupling", 0.0)
    res = simulate_arms(model, connectome, Drive(spatial, wave, "membrane", "mV"), seed + np.arange(ns), p,
                        duration_s, transient_s, dt_ms, 1000.0, [var])
    sham_of = np.tile(np.arange(ns), nc)                        # sham members come first (arm-major)
    if biomarker is not None:
        values = np.asarray(biomarker(res, sham_of), float)
    elif measure == "evoked":
        x = res[var]
        diff = x - x.isel(batch=sham_of).assign_coords(batch=x["batch"])
        values = band_power(diff.to_dataset(name=var).assign_attrs(res.attrs), var, target_regions, band)
    else:
        values = band_power(res, var, target_regions, band)
    per = xr.DataArray(values.reshape(nc, ns), dims=("candidate", "seed"), coords={"candidate": names})
    eff = paired_effect(per, per.isel(candidate=0, drop=True), "seed")
    score = eff["ci_low"].values[1:] if maximize else -eff["ci_high"].values[1:]
    best = names[1 + int(np.nanargmax(score))]
    in_t = np.isin(fields["region"].values, list(target_regions))
    scores = xr.Dataset({"biomarker": per.mean("seed"), "change_from_sham": eff["effect"],
                         "ci_low": eff["ci_low"], "ci_high": eff["ci_high"], "verdict": eff["verdict"],
                         "target_En": ("candidate", ens[:, in_t].mean(axis=1))},
                        attrs={"variable": var, "band_hz": list(band), "measure": measure if biomarker is None
                               else "custom", "best": best, "model": str(mod.NAME), "n_seeds": ns,
                               "ranked_by": "lower 95 % CI bound of the change from sham" if maximize
                               else "upper 95 % CI bound of the change from sham (most negative)"})
    return best, scores
