"""Neural mass models, one small module each.

A model module declares

* ``NAME`` and ``PARAMS`` (a :class:`~neurotwin_dash.params.ParamSet`: name, default, bounds, unit, doc),
* ``STATES`` (state variable names), ``OUTPUTS`` (derived signals the kernel can record) and
  ``OBSERVED`` (the EEG-like default record),
* ``CVARS`` (the transmitted firing rates kept in the delay history) and ``NOISE_STATES``
  (indices of the states that receive the additive input noise),
* ``POLARISED`` (populations whose membrane a ``membrane`` drive shifts) and ``STATE_BOUND``,
* four numba functions working on one region (``dfun``, ``cvar``, ``observe``, ``noise_gain``),
* their plain NumPy references over ``(batch, region)`` arrays (``dfun_numpy``, ``cvar_numpy``,
  ``observe_numpy``, ``noise_gain_numpy``) and ``initial_state(n_batch, n_region)``.

The network integrator (:mod:`neurotwin_dash.models._kernel`) is shared by all models; adding a
model is one file plus a line in :data:`MODELS`.
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MODELS", "get_model", "model_names"]

_MODULES = {
    "jansen_rit": "jansen_rit",
    "wendling": "wendling",
    "lanmm": "lanmm",
    "wilson_cowan": "wilson_cowan",
    "lopes_da_silva": "lopes_da_silva",
}


class _LazyModels(dict):
    """``name -> module``; modules are imported on first access (keeps ``import`` cheap)."""

    def __missing__(self, name):
        if name not in _MODULES:
            raise KeyError(name)
        mod = importlib.import_module(f"{__name__}.{_MODULES[name]}")
        self[name] = mod
        return mod

    def __iter__(self):
        return iter(_MODULES)

    def __len__(self):
        return len(_MODULES)

    def __contains__(self, name):
        return name in _MODULES

    def keys(self):
        return list(_MODULES)

    def items(self):
        return [(n, self[n]) for n in _MODULES]

    def values(self):
        return [self[n] for n in _MODULES]


MODELS: dict[str, ModuleType] = _LazyModels()


def model_names() -> list[str]:
    """Names of the available models."""
    return list(_MODULES)


def get_model(model) -> ModuleType:
    """Return a model module from its name (or the module itself).

    Raises
    ------
    ValueError
        When the name is unknown; the message lists the known names.
    """
    if isinstance(model, ModuleType):
        if model.__name__.rsplit(".", 1)[-1] not in _MODULES:
            raise ValueError(f"model module {model.__name__!r} is not registered in MODELS")
        return model
    if isinstance(model, str) and model in _MODULES:
        return MODELS[model]
    raise ValueError(f"unknown model {model!r}; allowed: {', '.join(_MODULES)}")
