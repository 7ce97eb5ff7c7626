"""Ready-made inference problems (specs to train with :func:`neurotwin_dash.infer.train`).

* :func:`jansen_rit_column` — (a) one Jansen–Rit column's A, B, C from a spectrum: log PSD at fixed
  frequencies, alpha peak, low-gamma power (``relative=True``: spectra relative to their total
  power, for a recorded EEG channel whose absolute scale the model does not fix);
* :func:`ad_inhibition` — (b) the Alzheimer path of LaNMM: the PV→P2 weight ``C7`` with the other
  inhibitory weights (SST→P1 ``C2``, PV→PV ``C10``) from gamma/alpha features;
* :func:`network_globals` — (c) a network's global coupling and conduction speed from FC summaries.
"""
from __future__ import annotations

from .spec import InferSpec

__all__ = ["PRESETS", "jansen_rit_column", "ad_inhibition", "network_globals", "preset"]

JR_FEATURES = {"psd_hz": [2, 4, 6, 8, 9, 10, 11, 12, 14, 16, 20, 25, 30, 35, 40, 50, 60],
               "alpha_peak": True, "gamma": True}


def jansen_rit_column(n_simulations: int = 2000, n_test: int = 200, relative: bool = False,
                      aperiodic: bool = False, seed: int = 0) -> InferSpec:
    """(a) A, B, C of one Jansen–Rit column (p, noise and the rate constants fixed at their defaults)."""
    feats = dict(JR_FEATURES, **({"relative": True} if relative else {}),
                 **({"aperiodic": True} if aperiodic else {}))
    return InferSpec(model="jansen_rit", name="jansen_rit column" + (" (relative spectrum)" if relative else ""),
                     params={"A": {"low": 2.5, "high": 5.0}, "B": {"low": 15.0, "high": 30.0},
                             "C": {"low": 90.0, "high": 200.0}},
                     features=feats, n_simulations=n_simulations, n_test=n_test, seed=seed, batch_size=250)


def ad_inhibition(n_simulations: int = 2000, n_test: int = 200, seed: int = 0) -> InferSpec:
    """(b) LaNMM column: C7 (PV→P2, healthy 550 → AD 140), C2 (SST→P1) and C10 (PV→PV), from the
    alpha and gamma features of the summed pyramidal potential (P1 alpha, P2 gamma)."""
    return InferSpec(model="lanmm", name="AD path: LaNMM inhibitory weights",
                     params={"C7": {"low": 100.0, "high": 700.0}, "C2": {"low": 10.0, "high": 70.0},
                             "C10": {"low": 30.0, "high": 200.0}},
                     features={"bands": ["theta", "alpha", "beta"], "alpha_peak": True, "gamma": True,
                               "peak_band_hz": [25.0, 60.0], "aperiodic": True},
                     method="heun", n_simulations=n_simulations, n_test=n_test, seed=seed, batch_size=100)


def network_globals(n_simulations: int = 600, n_test: int = 100, duration_s: float = 21.0,
                    seed: int = 0) -> InferSpec:
    """(c) Jansen–Rit on tvb76: global coupling K and conduction speed from FC summaries and the
    region-mean alpha/beta power."""
    return InferSpec(model="jansen_rit", connectome="tvb76", name="tvb76 network globals",
                     params={"coupling": {"low": 0.0, "high": 6.0},
                             "speed_m_s": {"low": 1.0, "high": 20.0, "log": True}},
                     features={"fc": ["mean", "sd", "sc_corr", "pc"], "fc_pcs": 3, "bands": ["alpha", "beta"],
                               "alpha_peak": True},
                     duration_s=duration_s, n_simulations=n_simulations, n_test=n_test, seed=seed,
                     batch_size=16)


PRESETS = {"jansen_rit_column": jansen_rit_column, "ad_inhibition": ad_inhibition,
           "network_globals": network_globals}


def preset(name: str, **kw) -> InferSpec:
    """The spec of a named use case (:data:`PRESETS`), with keyword overrides."""
    if name not in PRESETS:
        raise ValueError(f"preset {name!r} unknown; allowed: {', '.join(PRESETS)}")
    return PRESETS[name](**kw)
