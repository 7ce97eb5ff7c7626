"""Analysis of simulated (or recorded) signals: spectra, connectivity, PAC, biomarkers.

xarray in, xarray out; Dask-backed arrays are processed with ``apply_ufunc``.
"""
from .spectra import (BANDS, aperiodic_exponent, band_power, gamma_power, peak_frequency,
                      resolve_band, welch)
from .connectivity import (aec, coherence, fc_fit_score, fc_pearson, fc_sc_correlation, fcd,
                           fcd_ks_distance, plv, upper_triangle)
from .pac import modulation_index, phase_amplitude_coupling
from .biomarkers import spectral_metrics, standard_metrics

__all__ = ["BANDS", "aperiodic_exponent", "band_power", "gamma_power", "peak_frequency",
           "resolve_band", "welch", "aec", "coherence", "fc_fit_score", "fc_pearson", "fc_sc_correlation", "fcd",
           "fcd_ks_distance", "plv", "upper_triangle", "modulation_index",
           "phase_amplitude_coupling", "spectral_metrics", "standard_metrics"]
