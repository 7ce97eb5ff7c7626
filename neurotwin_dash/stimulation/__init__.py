"""Transcranial electrical stimulation: montages, fields, waveforms, coupling and optimization.

Flow: :class:`~.montage.Montage` (electrode currents, safety limits) → :mod:`.efield`
(reciprocity on the EEG forward model: E and the inward normal E_n per region) →
:mod:`.coupling` (λ·E_n·w(t) as a simulation ``Drive``) with a :mod:`.waveforms` time course;
:mod:`.optimize` searches currents (Stimweaver QP) or picks montages by simulated outcome;
:mod:`.effects` estimates every effect against sham (paired noise seeds, mean and 95 % CI);
:mod:`.simnibs_io` imports SimNIBS fields to use instead of the built-in sphere.
"""
from .coupling import STIM_PARAMS, tes_drives
from .effects import paired_effect, stimulation_effect
from .efield import bipolar_over, electrode_fields, field_summary, montage_field, normal_field
from .montage import Limits, Montage, MontageError
from .optimize import Target, choose_by_outcome, optimize_montage
from .waveforms import TACS, TDCS, parse_waveform, phased_tacs

__all__ = ["Montage", "Limits", "MontageError", "electrode_fields", "montage_field", "normal_field",
           "field_summary", "bipolar_over", "TDCS", "TACS", "parse_waveform", "phased_tacs",
           "STIM_PARAMS", "tes_drives", "Target", "optimize_montage", "choose_by_outcome",
           "paired_effect", "stimulation_effect"]
