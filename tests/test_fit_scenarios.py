"""Alzheimer's scenario: the dense PV→P2 loss path (hyperexcitable, then collapse) and 40 Hz tACS
effects with 95 % CIs over noise seeds."""
import numpy as np
import pytest

from neurotwin_dash.cluster import get_client
from neurotwin_dash.fit.scenarios import (DENSE_C7, ScenarioConfig, alzheimer_scenario, plot_scenario,
                                          restoration)
from neurotwin_dash.stimulation.effects import SHAM_VERDICT


@pytest.fixture(scope="module")
def scenario():
    client = get_client(n_workers=2, quiet=True)
    cfg = ScenarioConfig(duration_s=3.0, transient_s=0.5)          # 9 C7 values x 5 seeds
    return alzheimer_scenario(cfg, doses=(1.0,), amplitudes_mV=(0.1, 1.0), dose_stages=("declining",),
                              client=client)


def test_gamma_rises_above_healthy_then_collapses_along_the_dense_path(scenario):
    prog, summ = scenario["progression"], scenario["summary"]
    assert prog.sizes == {"c7": 9, "seed": 5}
    np.testing.assert_array_equal(summ["c7"].values, DENSE_C7)
    assert np.all(summ["ci_low"] <= summ["mean"]) and np.all(summ["mean"] <= summ["ci_high"])
    g = summ["mean"].sel(measure="gamma_power").values
    print("gamma (mV²) along C7", DENSE_C7, ":", np.round(g, 4), "stages:", list(summ["stage"].values))
    # the early stage is hyperexcitable: the maximum is above healthy, with a CI (paired by seed)
    a = summ.attrs
    assert a["gamma_max_ratio"] > 1.2 and a["gamma_max_c7"] in (500.0, 450.0, 400.0)
    k = list(DENSE_C7).index(a["gamma_max_c7"])
    assert summ["stage"].values[k] == "hyperexcitable" and float(summ["gamma_vs_healthy_ci_low"][k]) > 0
    # ... then gamma collapses: below 1 % of healthy at C7 = 140 (upper CI bound)
    assert summ["stage"].values[-1] == "collapsed"
    assert float(summ["ci_high"].sel(measure="gamma_power", c7=140.0)) < 0.01 * g[0]
    # the stages follow the curve in order
    order = {"healthy": 0, "hyperexcitable": 1, "declining": 2, "collapsed": 3}
    assert np.all(np.diff([order[s] for s in summ["stage"].values]) >= 0)
    assert scenario["stages"]["hyperexcitable"] == a["gamma_max_c7"] and scenario["stages"]["collapsed"] == 140.0
    # E/I: disinhibited P2 fires more; healthy rhythms where they belong
    rate = summ["mean"].sel(measure="p2_rate").values
    assert rate[-1] > 3 * rate[0]
    assert 38.0 < float(summ["mean"].sel(measure="gamma_peak_hz", c7=550.0)) < 42.0
    assert 9.0 < float(summ["mean"].sel(measure="alpha_peak_hz", c7=550.0)) < 12.0
    # the peak drifts up to the band edge while gamma declines, but most of the loss is real
    assert float(summ["mean"].sel(measure="gamma_peak_hz", c7=300.0)) > 45.0
    share = float(summ["band_edge_share"].sel(c7=300.0))
    assert 0 <= share < 0.2


def test_tacs_search_stays_within_limits_and_ranks_by_the_lower_ci_bound(scenario):
    s = scenario["search"]
    assert s.sizes["candidate"] == 4 and s.attrs["n_seeds"] == 5     # 4 montages x 1 dose
    assert float(s["max_electrode_mA"].max()) <= 2.0 + 1e-9
    assert float(s["total_injected_mA"].max()) <= 4.0 + 1e-9
    lo = s["ci_low"].sel(outcome="band_power").values
    assert s.attrs["best"] == int(np.argmax(lo))
    np.testing.assert_allclose(s["restoration"], restoration(s["stim"].sel(outcome="band_power"),
                                                             s.attrs["gamma_stage"], s.attrs["gamma_healthy"]))
    # fields of scalp tES at ≤ 4 mA: ≤ ~0.5 V/m in the targets, i.e. ≤ 0.1 mV soma shift at λ
    assert 0.05 < float(s["target_E_n_V_m"].max()) < 1.0
    assert float(s["target_shift_mV"].max()) == pytest.approx(
        s.attrs["lambda_mV_per_V_m"] * float(abs(s["target_E_n_V_m"]).max()), rel=0.35)
    # the model's answer: safe doses restore < 5 % of the lost gamma (upper CI bound) ...
    assert float(s["restoration_ci_high"].max()) < 0.05
    # ... but the target P2 locks to the waveform detectably
    plv = s.sel(outcome="plv")
    assert (plv["ci_low"] > 0).sum() >= 3
    for k in range(4):
        print(s["montage"].values[k], "gamma:", str(s["verdict"].sel(outcome="band_power").values[k]),
              "| PLV:", str(plv["verdict"].values[k]), float(plv["effect"][k]))


def test_dose_response_thresholds_per_outcome(scenario, tmp_path):
    d = scenario["dose"]
    assert list(d["stage"].values) == ["declining"] and d.attrs["n_seeds"] == 5
    one = d.sel(stage="declining", amplitude_mV=1.0)
    assert all(v != SHAM_VERDICT for v in one["verdict"].values)       # 1 mV moves every outcome
    thr = d["threshold_mV"].sel(stage="declining")
    assert float(thr.sel(outcome="plv")) <= 1.0
    np.testing.assert_allclose(d["threshold_V_m"], d["threshold_mV"] / d.attrs["lambda_mV_per_V_m"])
    np.testing.assert_allclose(d["field_needed_V_m"], d["amplitude_mV"] / d.attrs["lambda_mV_per_V_m"])
    # the threshold is the first amplitude whose CI excludes 0
    for o in d["outcome"].values:
        ex = d["excludes_zero"].sel(stage="declining", outcome=o).values
        expect = d["amplitude_mV"].values[np.argmax(ex)] if ex.any() else np.nan
        np.testing.assert_equal(float(thr.sel(outcome=o)), expect)
    print("thresholds (mV):", thr.to_series().to_dict())
    fig = plot_scenario(scenario, tmp_path / "ad.png")
    assert (tmp_path / "ad.png").stat().st_size > 20_000
    assert len(fig.axes) == 12
