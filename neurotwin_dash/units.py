"""CF-style units and conventions of every dataset neurotwin-dash writes (netCDF, zarr).

Each numeric variable and coordinate carries a ``units`` attribute in UDUNITS spelling
(``"mV"``, ``"1/s"``, ``"mV^2/Hz"``); dimensionless quantities (correlations, fractions, indices,
counts, flags) carry ``"1"`` as the CF conventions ask, never an empty string. Text coordinates
(region, band and sensor names) have no units. Datasets carry ``Conventions`` = :data:`CONVENTIONS`.
"""
from __future__ import annotations

import numpy as np

__all__ = ["CONVENTIONS", "DIMENSIONLESS", "cf_unit", "missing_units"]

#: Value of the ``Conventions`` attribute of written datasets.
CONVENTIONS = "CF-1.10"

#: CF's unit of a dimensionless number.
DIMENSIONLESS = "1"


def cf_unit(unit: str | None) -> str:
    """``unit`` as a CF ``units`` value: ``""`` / ``None`` (dimensionless) become ``"1"``."""
    return unit if unit else DIMENSIONLESS


def missing_units(ds) -> list[str]:
    """Names of the numeric or boolean variables and coordinates of ``ds`` without ``units``.

    Also lists ``Conventions`` when the dataset does not declare CF conventions.

    Parameters
    ----------
    ds : xarray.Dataset

    Returns
    -------
    list of str
        Empty when every number written carries a unit.
    """
    bad = []
    for name, var in {**ds.coords, **ds.data_vars}.items():
        kind = np.dtype(var.dtype).kind
        if kind in "biufc" and not str(var.attrs.get("units", "")).strip():
            bad.append(str(name))
    if not str(ds.attrs.get("Conventions", "")).startswith("CF-"):
        bad.append("Conventions")
    return bad
