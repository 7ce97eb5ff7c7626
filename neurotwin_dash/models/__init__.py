"""Neural mass models, one small module each.

A model module declares

* ``NAME`` and ``PARAMS`` (a :class:`~neurotwin_dash.params.ParamSet`: name, default, bounds, unit, doc),
* ``STATES`` (state variable names), ``OUTPUTS`` (derived signals the kernel can record) and
  ``OBSERVED`` (the EEG-like default record),
* ``CVARS`` (the transmitted firing rates kept in the delay history) and ``NOISE_STATES``
  (indices of the states that receive the additive input noise),
* ``POLARISED`` (populations whose membrane a ``membrane`` drive shifts) and ``STATE_BOUND``,
* four numba functions working on one region: ``dfun(x, p, rates, c_in, u_mem, u_rate)``,
  ``cvar(x, p, u_mem)``, ``observe(x, p, rates, u_mem)`` and ``noise_gain(p)``. ``rates`` is
  ``cvar`` of the same state, which the kernel already holds (it is the delay history's newest
  entry), so a model reads its own transmitted rates from it instead of evaluating their sigmoid
  again (two to three fewer ``exp`` per region and step),
* their plain NumPy references over ``(batch, region)`` arrays (``dfun_numpy``, ``cvar_numpy``,
  ``observe_numpy``, ``noise_gain_numpy``; these compute everything themselves, without
  ``rates``),
* ``INITIAL_RANGE``: one ``(low, high)`` per state for random starts, declared once per model with
  its physiological rationale, and optionally ``REST_STATE`` (the constant deterministic start;
  0 when absent). :func:`initial_state` turns them into arrays; ``simulate(initial="random")``
  draws one start per batch member.

The network integrator (:mod:`neurotwin_dash.models._kernel`) is shared by all models; adding a
model is one file plus a line in ``_MODULES`` (or :func:`register_model` for a module elsewhere).
"""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

import numpy as np

__all__ = ["MODELS", "get_model", "model_names", "installed_model_names", "register_model",
           "initial_state",
           "psp_initial_range", "uniform_initial_state"]

_MODULES = {
    "jansen_rit": "jansen_rit",
    "wendling": "wendling",
    "lanmm": "lanmm",
    "wilson_cowan": "wilson_cowan",
    "lopes_da_silva": "lopes_da_silva",
}


def initial_state(model, n_batch: int, n_region: int, rng=None) -> np.ndarray:
    """Initial state of ``model``, shape (batch, region, n_state).

    With ``rng=None`` the deterministic start of the reference behaviours: every state at the
    model's ``REST_STATE`` (0, i.e. zero PSPs, when the model declares none). With a
    ``numpy.random.Generator``, a uniform draw within the model's ``INITIAL_RANGE``.
    """
    mod = get_model(model)
    if rng is None:
        return np.full((n_batch, n_region, len(mod.STATES)), float(getattr(mod, "REST_STATE", 0.0)))
    return uniform_initial_state(mod.INITIAL_RANGE, n_batch, n_region, rng)


#: Fraction of each PSP's largest stationary value that bounds its random start.
INITIAL_FRACTION = 0.25


def psp_initial_range(psp_max, n_derivatives: int) -> tuple:
    """``INITIAL_RANGE`` of a model built from second-order synapses.

    Each PSP starts uniformly between 0 (rest) and ``INITIAL_FRACTION`` of its largest
    stationary value ``psp_max`` (``gain · C_k · 2e0 / rate constant``: presynaptic population
    at its maximal rate 2e0, an external input at its mean; negative for GABA PSPs), i.e. up to
    the PSP sustained by a presynaptic rate e0/2 at the default parameters; the ``n_derivatives``
    derivative states start at 0. This is the low-activity neighbourhood of rest that the zero
    start belongs to, wide enough for each region to reach its rhythm at its own phase.
    Full-range boxes are worse: a large inhibitory PSP silences the pyramidal cells and every
    region re-enters the rhythm from the same point (Jansen–Rit on tvb76, coupling 0: mean FC 0.2
    with the full range, 0.02–0.06 with a quarter, 0.5 with zeros; 0 when started on the limit
    cycle at random phases).
    """
    out = []
    for m in psp_max:
        edge = INITIAL_FRACTION * m
        out.append((min(0.0, edge), max(0.0, edge)))
    return tuple(out) + ((0.0, 0.0),) * n_derivatives


def uniform_initial_state(ranges, n_batch: int, n_region: int, rng) -> np.ndarray:
    """Draw states independently and uniformly within per-state ``(low, high)`` ranges.

    Parameters
    ----------
    ranges : sequence of (float, float)
        One ``(low, high)`` per state (a model's ``INITIAL_RANGE``); ``low == high`` fixes a state.
    n_batch, n_region : int
    rng : numpy.random.Generator
        Consumed as ``rng.random((n_batch, n_region, n_state))`` (C order), so one generator per
        batch member with ``n_batch=1`` gives each member the same draw as when run alone.

    Returns
    -------
    numpy.ndarray, shape (n_batch, n_region, n_state)
    """
    r = np.asarray(ranges, dtype=float)
    if r.ndim != 2 or r.shape[1] != 2 or np.any(r[:, 1] < r[:, 0]):
        raise ValueError("INITIAL_RANGE must hold one (low, high) pair per state with low <= high")
    u = rng.random((n_batch, n_region, r.shape[0]))
    return r[:, 0] + (r[:, 1] - r[:, 0]) * u


class _LazyModels(dict):
    """``name -> module``; modules are imported on first access (keeps ``import`` cheap)."""

    def __missing__(self, name):
        if name not in _MODULES:
            raise KeyError(name)
        path = _MODULES[name]
        mod = importlib.import_module(path if "." in path else f"{__name__}.{path}")
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


def register_model(module: ModuleType) -> ModuleType:
    """Make a model module defined outside this package usable by ``simulate`` (by its ``NAME``).

    The module must be importable by its ``__name__`` (numba caches the compiled kernel per
    model and looks the model up again by name) and declare the interface listed above.
    """
    missing = [a for a in ("NAME", "PARAMS", "STATES", "OUTPUTS", "OBSERVED", "CVARS", "NOISE_STATES",
                           "STATE_BOUND", "dfun", "cvar", "observe", "noise_gain", "dfun_numpy",
                           "cvar_numpy", "observe_numpy", "noise_gain_numpy")
               if not hasattr(module, a)]
    if missing:
        raise ValueError(f"model module {module.__name__!r} lacks {', '.join(missing)}")
    known = _MODULES.get(module.NAME)
    if known is not None and (known if "." in known else f"{__name__}.{known}") != module.__name__:
        raise ValueError(f"a different model is already registered as {module.NAME!r}")
    _MODULES[module.NAME] = module.__name__
    MODELS[module.NAME] = module
    return module


def model_names() -> list[str]:
    """Names of the available models."""
    return list(_MODULES)


def installed_model_names() -> list[str]:
    """Names of the models whose module can be imported (the registry may list models still to come)."""
    return [n for n in _MODULES
            if importlib.util.find_spec(_MODULES[n] if "." in _MODULES[n] else f"{__name__}.{_MODULES[n]}")
            is not None]


def get_model(model) -> ModuleType:
    """Return a model module from its name (or the module itself).

    Raises
    ------
    ValueError
        When the name is unknown; the message lists the known names.
    """
    if isinstance(model, ModuleType):
        if getattr(model, "NAME", None) not in _MODULES:
            raise ValueError(f"model module {model.__name__!r} is not registered; "
                             "call neurotwin_dash.models.register_model(module) first")
        return model
    if isinstance(model, str) and model in _MODULES:
        return MODELS[model]
    raise ValueError(f"unknown model {model!r}; allowed: {', '.join(_MODULES)}")
