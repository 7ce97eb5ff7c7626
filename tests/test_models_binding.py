"""Models read their parameters by name: reordering a model's ParamSpecs changes no number."""
import importlib.util
import inspect
import re
import sys

import numpy as np
import pytest

from neurotwin_dash.models import get_model, model_names, register_model
from neurotwin_dash.simulate import simulate


def _reordered(name, tmp_path):
    """The model's own source with its PARAMS declared in reverse order, as model ``<name>_reordered``."""
    src = inspect.getsource(get_model(name))
    src = re.sub(r"^from \.\.(\w+)", r"from neurotwin_dash.\1", src, flags=re.M)
    src = re.sub(r"^from \. import", "from neurotwin_dash.models import", src, flags=re.M)
    src = re.sub(r"^from \.(\w+)", r"from neurotwin_dash.models.\1", src, flags=re.M)
    src, n = re.subn(r'^NAME = "(\w+)"', r'NAME = "\1_reordered"', src, flags=re.M)
    assert n == 1
    src, n = re.subn(r"^(PARAMS = ParamSet\(\[.*?^\], owner=NAME\)\n)",
                     r"\1PARAMS = ParamSet(PARAMS.specs[::-1], owner=PARAMS.owner)\n",
                     src, count=1, flags=re.M | re.S)
    assert n == 1
    mod_name = f"{name}_reordered"
    path = tmp_path / f"{mod_name}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(mod_name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = mod
    spec.loader.exec_module(mod)
    return mod


def _values(mod, rng):
    """Each parameter at a random point of its range, by name."""
    return {s.name: s.low + (s.high - s.low) * rng.uniform(0.2, 0.8) for s in mod.PARAMS}


@pytest.mark.parametrize("name", model_names())
def test_reordering_a_models_params_changes_none_of_its_numba_functions(name, tmp_path):
    orig = get_model(name)
    rev = _reordered(name, tmp_path)
    assert rev.PARAMS.names == orig.PARAMS.names[::-1]
    rng = np.random.default_rng(1)
    values = _values(orig, rng)
    p = np.array([values[n] for n in orig.PARAMS.names])
    q = np.array([values[n] for n in rev.PARAMS.names])
    x = rng.uniform(-1.0, 1.0, len(orig.STATES)) * np.array([hi for _, hi in orig.INITIAL_RANGE] or 1.0)
    x = np.where(x == 0.0, 0.01, x)
    u_mem = 0.3
    rates = np.array(orig.cvar(x, p, u_mem))
    c_in = rng.uniform(0.0, 5.0, len(orig.CVARS))
    np.testing.assert_array_equal(rates, rev.cvar(x, q, u_mem))
    np.testing.assert_array_equal(orig.dfun(x, p, rates, c_in, u_mem, 1.0), rev.dfun(x, q, rates, c_in, u_mem, 1.0))
    np.testing.assert_array_equal(orig.observe(x, p, rates, u_mem), rev.observe(x, q, rates, u_mem))
    np.testing.assert_array_equal(orig.noise_gain(p), rev.noise_gain(q))
    # the NumPy references too
    P, Q = p[None, None], q[None, None]
    np.testing.assert_array_equal(orig.dfun_numpy(x[None, None], P, c_in[None, None], u_mem, 1.0),
                                  rev.dfun_numpy(x[None, None], Q, c_in[None, None], u_mem, 1.0))
    np.testing.assert_array_equal(orig.noise_gain_numpy(P), rev.noise_gain_numpy(Q))


def test_a_reordered_model_runs_the_same_network_through_the_kernel(tmp_path):
    rev = register_model(_reordered("jansen_rit", tmp_path))
    kw = dict(connectome="tvb76", duration_s=0.05, params={"p": 180.0, "C": 140.0, "coupling": 3.0},
              seed=2, record=["v_pyr", "rate_out"])
    a = simulate("jansen_rit", **kw)
    b = simulate(rev, **kw)
    for v in ("v_pyr", "rate_out"):
        np.testing.assert_array_equal(a[v].values, b[v].values)
