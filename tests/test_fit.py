"""Fits: objectives, parameter encoding, DE / CMA-ES on Dask, checkpoint + exact resume, recovery."""
import threading

import numpy as np
import pytest
import xarray as xr

from neurotwin_dash.analysis import spectra
from neurotwin_dash.cluster import get_client
from neurotwin_dash.fit.objectives import (AlphaPeakError, FCCorrelation, Features, GammaPower, InRange,
                                           LogPSDDistance, Objective, healthy_objective)
from neurotwin_dash.fit.optimizers import FitError, FitProblem, FreeParam, fit
from neurotwin_dash.params import ParamError
from neurotwin_dash.simulate import simulate

NET = dict(model="jansen_rit", connectome="tvb76", duration_s=2.0, transient_s=0.5, sample_rate_hz=250.0, seed=0)


@pytest.fixture(scope="module")
def client():
    return get_client(n_workers=2, quiet=True)


# --- objectives -------------------------------------------------------------------------------

def test_fc_correlation_term_is_one_minus_pearson_of_upper_triangles():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 400, 6))
    x[1] += 0.8 * x[1, :, :1]                           # member 1: shared component
    res = xr.Dataset({"v_pyr": (("batch", "time", "region"), x)},
                     coords={"time": np.arange(400) * 0.01, "region": list("abcdef")})
    target = np.corrcoef(x[1].T)
    term = FCCorrelation(target=target, signal="raw")
    loss, r = term.evaluate(Features(res))
    iu = np.triu_indices(6, 1)
    expected = [np.corrcoef(np.corrcoef(x[k].T)[iu], target[iu])[0, 1] for k in range(2)]
    np.testing.assert_allclose(r, expected, rtol=1e-10)
    np.testing.assert_allclose(loss, 1 - np.array(expected), atol=1e-12)
    assert r[1] == pytest.approx(1.0)


def test_bold_fc_marks_members_with_a_flat_region_as_invalid_instead_of_failing():
    rng = np.random.default_rng(0)
    n_t, fs = 8000, 100.0                                   # 80 s at 100 Hz
    shared = np.convolve(rng.standard_normal(n_t), np.ones(200) / 200, "same")
    x = 0.3 + 0.05 * (shared[None, :, None] + rng.standard_normal((3, n_t, 5)) * 0.5)
    x[1, :, 2] = 5.0                                        # member 1: one saturated region
    res = xr.Dataset({"rate_out": (("batch", "time", "region"), x)},
                     coords={"time": np.arange(n_t) / fs, "region": list("abcde")})
    t = rng.uniform(0.1, 0.6, (5, 5))
    target = (t + t.T) / 2
    np.fill_diagonal(target, 1.0)
    loss, r = FCCorrelation(target=target, variable="rate_out").evaluate(Features(res))
    assert np.isfinite(loss[[0, 2]]).all() and np.isnan(loss[1])
    b = Features(res).bold("rate_out")
    assert b.dims == ("batch", "time", "region") and np.isnan(b.values[1]).all()
    assert np.isfinite(b.values[[0, 2]]).all()


def test_fcd_ks_is_zero_against_its_own_bold_and_positive_against_another():
    from neurotwin_dash.fit.objectives import FCDKS
    rng = np.random.default_rng(2)
    n_t, fs = 15000, 100.0                                  # 150 s
    slow = np.cumsum(rng.standard_normal((2, n_t, 6)), axis=1) * 0.002
    x = 1.0 + slow + 0.01 * rng.standard_normal((2, n_t, 6))
    x[1] += 0.2 * np.sin(2 * np.pi * 0.05 * np.arange(n_t) / fs)[:, None]    # member 1: a strong shared slow wave
    res = xr.Dataset({"rate_out": (("batch", "time", "region"), x)},
                     coords={"time": np.arange(n_t) / fs, "region": list("abcdef")})
    own = Features(res).bold("rate_out").isel(batch=0).values          # (frame, region)
    term = FCDKS(target=own, window_s=30.0, step_s=2.16, variable="rate_out")
    loss, ks = term.evaluate(Features(res))
    print("FCD KS (own, other):", ks)
    assert ks[0] < 0.01                 # the same series (window placement may differ by a frame)
    assert ks[1] > 20 * ks[0] and ks[1] > 0.1


def test_objective_is_the_weighted_sum_of_its_terms_and_reports_each_measurement():
    res = simulate(params={"p": [120.0, 220.0]}, **NET)
    psd = spectra.welch(res["v_pyr"].isel(batch=1), window_s=1.0)
    obj = Objective([LogPSDDistance(target=psd, window_s=1.0, weight=2.0),
                     AlphaPeakError(target_hz=10.0, window_s=1.0, weight=0.1),
                     GammaPower(window_s=1.0, weight=0.0)])
    out = obj.evaluate(res)
    assert set(out.data_vars) >= {"loss", "psd_dist", "alpha_peak_hz", "gamma_power",
                                  "loss_psd_dist", "loss_alpha_peak_hz"}
    np.testing.assert_allclose(out["loss"], 2.0 * out["loss_psd_dist"] + 0.1 * out["loss_alpha_peak_hz"])
    assert out["psd_dist"].values[1] == pytest.approx(0.0, abs=1e-12)      # identical spectrum
    assert out["psd_dist"].values[0] > 0.1
    assert 9.0 < out["alpha_peak_hz"].values[1] < 12.0                    # JR at p = 220: alpha
    assert out["loss_alpha_peak_hz"].values[1] == pytest.approx(abs(out["alpha_peak_hz"].values[1] - 10))


def test_in_range_loss_is_zero_inside_and_grows_linearly_outside():
    class F:  # features stand-in exposing one biomarker value per member
        n_batch = 3
    term = InRange(biomarker="alpha_peak_hz", low=8.0, high=12.0)
    from neurotwin_dash.fit import objectives
    orig = objectives.BIOMARKERS["alpha_peak_hz"]
    objectives.BIOMARKERS["alpha_peak_hz"] = lambda feats, **kw: np.array([10.0, 6.0, 14.0])
    try:
        loss, v = term.evaluate(F())
    finally:
        objectives.BIOMARKERS["alpha_peak_hz"] = orig
    np.testing.assert_allclose(loss, [0.0, 0.5, 0.5])
    with pytest.raises(ValueError, match="biomarker 'beta' unknown"):
        InRange(biomarker="beta")


def test_healthy_objective_separates_alpha_rhythm_from_a_silent_network():
    res = simulate(params={"p": [220.0, 60.0], "noise_sd": [22.0, 0.0]}, **dict(NET, duration_s=4.0))
    out = healthy_objective("jansen_rit").evaluate(res)
    # default JR network: alpha peak and amplitude in range
    assert 9.0 < out["alpha_peak_hz"].values[0] < 12.0
    assert out["loss_alpha_peak_hz"].values[0] == 0.0 and out["loss_signal_sd"].values[0] == 0.0
    # p = 60 without noise: fixed point, no rhythm, sd ~1e-7 mV (7 decades below range)
    assert out["signal_sd"].values[1] < 1e-5
    assert out["loss_signal_sd"].values[1] > 1.5
    assert out["loss"].values[1] > out["loss"].values[0] + 1.5


# --- problem encoding -------------------------------------------------------------------------

def test_free_parameters_round_trip_through_the_unit_cube_including_log_and_per_region():
    prob = FitProblem(model="jansen_rit", connectome="tvb76", objective=healthy_objective(),
                      free=[FreeParam("coupling", 0.0, 40.0), FreeParam("noise_sd", 1.0, 100.0, log=True),
                            FreeParam("p", 100.0, 300.0, regions=["lV1", "rV1"])])
    assert prob.names == ["coupling", "noise_sd", "p[lV1]", "p[rV1]"]
    u = np.array([[0.25, 0.5, 0.0, 1.0]])
    params = prob.decode(u)
    assert params["coupling"][0] == pytest.approx(10.0)
    assert params["noise_sd"][0] == pytest.approx(10.0)                   # geometric middle
    p = params["p"][0]
    labels = prob._conn().labels
    assert p[labels.index("lV1")] == 100.0 and p[labels.index("rV1")] == 300.0
    assert np.sum(p == 220.0) == 74                                       # others keep the default
    back = prob.encode({"coupling": 10.0, "noise_sd": 10.0, "p": p})
    np.testing.assert_allclose(back, u[0])


def test_bad_fit_problems_raise_naming_the_field():
    with pytest.raises(ParamError, match="'coupling'.*outside the allowed range"):
        FitProblem(model="jansen_rit", objective=healthy_objective(), free=[FreeParam("coupling", -1.0, 5.0)])
    with pytest.raises(FitError, match="need finite low < high"):
        FreeParam("p", 300.0, 100.0)
    with pytest.raises(FitError, match="both free and fixed"):
        FitProblem(model="jansen_rit", objective=healthy_objective(), free=[FreeParam("p", 100, 300)],
                   fixed={"p": 200.0})
    prob = FitProblem(model="jansen_rit", objective=healthy_objective(), free=[FreeParam("p", 100, 300)])
    with pytest.raises(FitError, match="method 'bfgs' unknown"):
        fit(prob, method="bfgs", client="sync")


# --- optimisation -----------------------------------------------------------------------------

def _recovery_problem():
    truth = {"coupling": 12.0, "p": 180.0}
    target = simulate(params=truth, **NET)
    psd = spectra.welch(target["v_pyr"].isel(batch=0), window_s=1.0)       # (region, frequency)
    obj = Objective([LogPSDDistance(target=psd, window_s=1.0, normalise=False)])
    prob = FitProblem(free=[FreeParam("coupling", 0.0, 30.0), FreeParam("p", 120.0, 300.0)],
                      objective=obj, **NET)
    return truth, prob


def test_cmaes_on_dask_recovers_parameters_that_generated_the_data(client, tmp_path):
    truth, prob = _recovery_problem()
    res = fit(prob, method="cmaes", generations=8, popsize=8, seed=3, client=client,
              checkpoint=tmp_path / "cma.json", progress=False)
    # tolerance: 10 % of each search range
    assert abs(res.best["coupling"] - truth["coupling"]) < 3.0, res.best
    assert abs(res.best["p"] - truth["p"]) < 18.0, res.best
    assert res.loss < 0.05
    assert res.evaluations == 64 and res.computed_generations == list(range(8))
    assert res.history.sizes["evaluation"] == 64
    # resuming a finished fit recomputes nothing and gives the same answer
    again = fit(prob, method="cmaes", generations=8, popsize=8, seed=3, client=client,
                checkpoint=tmp_path / "cma.json", progress=False)
    assert again.computed_generations == [] and again.best == res.best


def _cheap_problem():
    """Single Jansen–Rit node, 1 s: a real but cheap objective for optimizer mechanics."""
    obj = Objective([AlphaPeakError(target_hz=9.0, window_s=0.5, band=(5.0, 14.0))])
    return FitProblem(model="jansen_rit", connectome=None, duration_s=1.5, transient_s=0.5,
                      sample_rate_hz=250.0, free=[FreeParam("p", 120.0, 300.0), FreeParam("b", 30.0, 80.0)],
                      objective=obj)


@pytest.mark.parametrize("method", ["de", "cmaes"])
def test_interrupted_fit_resumes_from_its_checkpoint_exactly(method, tmp_path):
    prob = _cheap_problem()
    full = fit(prob, method=method, generations=4, popsize=6, seed=7, client="sync",
               checkpoint=tmp_path / "full.json", progress=False)
    # a run stopped after 2 generations, then resumed to 4 with the same checkpoint
    part = fit(prob, method=method, generations=2, popsize=6, seed=7, client="sync",
               checkpoint=tmp_path / "cp.json", progress=False)
    resumed = fit(prob, method=method, generations=4, popsize=6, seed=7, client="sync",
                  checkpoint=tmp_path / "cp.json", progress=False)
    n_first = len(part.computed_generations)
    assert resumed.computed_generations == full.computed_generations[n_first:]
    assert resumed.computed_generations[0] == n_first                       # nothing redone
    np.testing.assert_array_equal(resumed.history["unit"].values, full.history["unit"].values)
    np.testing.assert_array_equal(resumed.history["loss"].values, full.history["loss"].values)
    assert resumed.best == full.best
    with pytest.raises(FitError, match="belongs to another fit"):
        fit(prob, method=method, generations=2, popsize=6, seed=8, client="sync",
            checkpoint=tmp_path / "cp.json", progress=False)


def test_counter_noise_fit_scores_the_counter_runs_and_keeps_its_own_checkpoints(tmp_path):
    import dataclasses

    from neurotwin_dash.fit.optimizers import evaluate_population
    prob = _recovery_problem()[1]
    fast = dataclasses.replace(prob, noise_rng="counter")
    assert fast.fingerprint() != prob.fingerprint()
    assert dataclasses.replace(prob, noise_rng="numpy").fingerprint() == prob.fingerprint()
    with pytest.raises(FitError, match="noise_rng"):
        dataclasses.replace(prob, noise_rng="mersenne")
    unit = np.array([[0.4, 0.3], [0.2, 0.7], [0.5, 0.5]])
    # the population's losses are those of the counter-noise runs, not of NumPy's
    got = evaluate_population(fast, unit)["loss"].values
    runs = simulate(params=fast.decode(unit), noise_rng="counter", **NET)
    np.testing.assert_allclose(got, fast.objective.evaluate(runs)["loss"].values, rtol=0, atol=1e-12)
    assert not np.allclose(got, evaluate_population(prob, unit)["loss"].values)
    # a checkpoint of the NumPy-noise fit is refused by the counter one
    small = dataclasses.replace(_cheap_problem(), noise_rng="counter")
    fit(_cheap_problem(), method="de", generations=1, popsize=4, seed=1, client="sync",
        checkpoint=tmp_path / "cp.json", progress=False)
    with pytest.raises(FitError, match="belongs to another fit"):
        fit(small, method="de", generations=1, popsize=4, seed=1, client="sync",
            checkpoint=tmp_path / "cp.json", progress=False)


class _StopAfter:
    """The objective, setting ``event`` after its ``n``-th generation (a user clicking Stop)."""

    def __init__(self, inner, n, event):
        self.inner, self.n, self.event, self.calls = inner, n, event, 0

    def evaluate(self, res):
        self.calls += 1
        if self.calls >= self.n:
            self.event.set()
        return self.inner.evaluate(res)

    def fingerprint(self):
        return self.inner.fingerprint()


@pytest.mark.parametrize("method", ["de", "cmaes"])
def test_stop_event_ends_a_fit_between_generations_and_the_same_call_resumes(method, tmp_path):
    prob = _cheap_problem()
    full = fit(prob, method=method, generations=3, popsize=6, seed=7, client="sync", progress=False)
    stop = threading.Event()
    stopping = _cheap_problem()
    stopping.objective = _StopAfter(prob.objective, 2, stop)
    part = fit(stopping, method=method, generations=3, popsize=6, seed=7, client="sync",
               checkpoint=tmp_path / "cp.json", progress=False, stop=stop)
    assert part.stopped and part.computed_generations == [0, 1] and part.evaluations == 12
    np.testing.assert_array_equal(part.history["loss"].values, full.history["loss"].values[:12])
    resumed = fit(prob, method=method, generations=3, popsize=6, seed=7, client="sync",
                  checkpoint=tmp_path / "cp.json", progress=False)
    assert not resumed.stopped and resumed.computed_generations[0] == 2
    np.testing.assert_array_equal(resumed.history["loss"].values, full.history["loss"].values)
    assert resumed.best == full.best
    # stopped before anything ran: an empty result, not an error
    stop_now = threading.Event()
    stop_now.set()
    empty = fit(prob, method=method, generations=3, popsize=6, seed=7, client="sync", progress=False,
                stop=stop_now)
    assert empty.stopped and empty.evaluations == 0 and np.isnan(empty.loss) and empty.best == {}
