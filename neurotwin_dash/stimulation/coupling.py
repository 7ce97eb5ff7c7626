"""tES into the neural masses: a montage's normal field becomes a membrane drive.

Each region's polarised population (Jansen–Rit and Wendling: pyramidal cells; LaNMM: P1 and
P2; see each model's ``POLARISED``) gets the soma shift

    ΔV(region, t) = λ · E_n(region) · w(t)        (mV)

with ``E_n`` the inward normal field of the montage at its peak currents (V/m; positive
depolarises, :mod:`neurotwin_dash.stimulation.efield`), ``w(t)`` the dimensionless waveform
(:mod:`neurotwin_dash.stimulation.waveforms`) and ``λ`` the coupling constant
``stim_lambda_mV_per_V_m`` (docs/science.md §7: 0.1–0.3 mV per V/m, from Molaee-Ardekani et al.
2013 / Ruffini et al. 2013 modelling and in-vitro polarisation lengths, Bikson et al. 2004;
default 0.2, bounds 0–1). The result is a :class:`neurotwin_dash.simulate.Drive` (or one per
component for per-electrode phases), ready for ``simulate(..., drive=...)``.

Dose sweeps run as one batched simulation: ``dose`` scales the currents per batch member
(every scaled montage is checked against the stimulator limits), ``lambda_mV_per_V_m`` may also
vary per member.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import xarray as xr

from ..params import ParamSet, ParamSpec
from ..simulate import Drive
from .efield import montage_field
from .montage import Montage, MontageError
from .waveforms import Waveform, parse_waveform

__all__ = ["STIM_PARAMS", "tes_drives", "stimulus_components"]

STIM_PARAMS = ParamSet([
    ParamSpec("stim_lambda_mV_per_V_m", 0.2, 0.0, 1.0, "mV/(V/m)",
              "soma polarisation per unit normal field: ΔV = λ·E_n (0.1–0.3 typical)"),
], owner="stimulation")


def stimulus_components(stimulus, waveform=None) -> list[tuple]:
    """Normalise a stimulus to ``[(montage_or_En, Waveform), ...]``.

    ``stimulus`` is a Montage or an ``E_n`` DataArray over ``region`` (e.g. from SimNIBS) with
    ``waveform`` (Waveform or text such as ``"tacs:40Hz"``), or a list of such pairs (e.g. from
    :func:`~neurotwin_dash.stimulation.waveforms.phased_tacs`) with ``waveform=None``.
    """
    if isinstance(waveform, str):
        waveform = parse_waveform(waveform)
    if isinstance(stimulus, (Montage, xr.DataArray)):
        if not isinstance(waveform, Waveform):
            raise ValueError("waveform: a Waveform or text such as 'tacs:40Hz' is needed with a single montage")
        return [(stimulus, waveform)]
    if isinstance(stimulus, Sequence) and not isinstance(stimulus, str):
        if waveform is not None:
            raise ValueError("waveform: give either a list of (montage, waveform) pairs or one montage and "
                             "one waveform, not both")
        comps = []
        for k, item in enumerate(stimulus):
            if not (isinstance(item, tuple) and len(item) == 2):
                raise ValueError(f"stimulus[{k}] must be a (montage, waveform) pair")
            m, w = item
            comps.extend(stimulus_components(m, w))
        return comps
    raise ValueError(f"stimulus must be a Montage, an E_n DataArray or a list of (montage, waveform) pairs; "
                     f"got {type(stimulus).__name__}")


def tes_drives(stimulus, waveform=None, connectome="tvb76", lambda_mV_per_V_m=None, dose=None,
               fields: xr.Dataset | None = None, head="sphere", orientation="auto") -> list:
    """Simulation drives for a tES protocol.

    Parameters
    ----------
    stimulus, waveform
        See :func:`stimulus_components`.
    connectome : Connectome | str
        Regions of the simulation (fields are computed for them).
    lambda_mV_per_V_m : float or array (batch,), optional
        λ; default from :data:`STIM_PARAMS` (0.2). Bounds 0–1 are enforced.
    dose : array (batch,), optional
        Current multipliers per batch member (1 = the montage as given; 0 = sham). Each scaled
        montage must respect its limits.
    fields : xarray.Dataset, optional
        Per-electrode fields (:func:`~neurotwin_dash.stimulation.efield.electrode_fields`).

    Returns
    -------
    list of neurotwin_dash.simulate.Drive
        ``target="membrane"``, ``spatial`` a DataArray (region) or (batch, region) in mV.
    """

    spec = STIM_PARAMS["stim_lambda_mV_per_V_m"]
    lam = spec.check(spec.default if lambda_mV_per_V_m is None else lambda_mV_per_V_m,
                     where="tes_drives")
    if lam.ndim > 1:
        raise ValueError(f"lambda_mV_per_V_m must be a scalar or one value per batch member; got shape {lam.shape}")
    scale = None
    if dose is not None:
        scale = np.atleast_1d(np.asarray(dose, dtype=float))
        if scale.ndim != 1 or not np.all(np.isfinite(scale)):
            raise ValueError(f"dose must be a finite 1-D array (one multiplier per batch member); got {dose!r}")
        if lam.ndim == 1 and lam.size not in (1, scale.size):
            raise ValueError(f"dose has {scale.size} members but lambda_mV_per_V_m has {lam.size}")
    drives = []
    for montage, wave in stimulus_components(stimulus, waveform):
        if isinstance(montage, Montage):
            if scale is not None:
                for s in np.unique(scale):
                    try:
                        montage.scaled(s)
                    except MontageError as exc:
                        raise MontageError(f"dose {s:g}: {exc}") from None
            En = montage_field(montage, fields, connectome, head=head, orientation=orientation)["E_n"]
        else:
            En = montage
            if "region" not in En.dims or En.ndim != 1:
                raise ValueError(f"an E_n DataArray must have the single dim 'region'; got {En.dims}")
        en = En.values.astype(float)
        regions = En["region"].values
        if scale is None and lam.ndim == 0:
            spatial = xr.DataArray(float(lam) * en, dims=("region",), coords={"region": regions})
        else:
            s = np.ones(1) if scale is None else scale
            lam_b = np.broadcast_to(lam, s.shape) if lam.ndim == 1 and lam.size == s.size else \
                np.broadcast_to(np.atleast_1d(lam), (max(s.size, np.atleast_1d(lam).size),))
            s_b = np.broadcast_to(s, lam_b.shape)
            spatial = xr.DataArray((lam_b * s_b)[:, None] * en[None, :], dims=("batch", "region"),
                                   coords={"region": regions})
        spatial.attrs.update({"units": "mV", "long_name": "λ·E_n, soma shift at waveform = 1"})
        drives.append(Drive(spatial=spatial, waveform=wave, target="membrane", unit="mV"))
    return drives
