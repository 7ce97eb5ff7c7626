"""Alzheimer's scenario: PV→P2 loss lowers gamma monotonically; 40 Hz tACS search within limits."""
import numpy as np
import pytest

from neurotwin_dash.cluster import get_client
from neurotwin_dash.fit.scenarios import (AD_PATH, ScenarioConfig, alzheimer_scenario, plot_scenario,
                                          restoration)


@pytest.fixture(scope="module")
def scenario():
    client = get_client(n_workers=2, quiet=True)
    cfg = ScenarioConfig(duration_s=6.0, transient_s=2.0)
    return alzheimer_scenario(cfg, stage="MCI", doses=(0.5, 1.0), amplitudes_mV=(0.1, 1.0), client=client)


def test_gamma_falls_monotonically_and_excitation_rises_along_the_ad_path(scenario):
    prog = scenario["progression"]
    assert list(prog["stage"].values) == ["healthy", "MCI", "AD"]
    np.testing.assert_array_equal(prog["C7"].values, [AD_PATH[s] for s in ("healthy", "MCI", "AD")])
    g = prog["gamma_power"].isel(seed=0).values
    print("gamma healthy/MCI/AD:", g, "P2 rate:", prog["p2_rate"].isel(seed=0).values)
    assert g[0] > 1.5 * g[1] > 0 and g[1] > 100 * g[2]          # SCIENCE.md §3: 2.9 / 1.7 / 0.001
    rate = prog["p2_rate"].isel(seed=0).values
    assert rate[0] < rate[1] < rate[2]                           # disinhibited P2 fires more (E/I)
    assert 38.0 < float(prog["gamma_peak_hz"].isel(seed=0, stage=0)) < 42.0   # healthy gamma ~40 Hz
    assert 9.0 < float(prog["alpha_peak_hz"].isel(seed=0, stage=0)) < 12.0


def test_tacs_search_stays_within_stimulator_limits_and_reports_restoration(scenario):
    s = scenario["search"]
    assert s.sizes["candidate"] == 8                              # 4 montages x 2 doses
    assert float(s["max_electrode_mA"].max()) <= 2.0 + 1e-9
    assert float(s["total_injected_mA"].max()) <= 4.0 + 1e-9
    np.testing.assert_allclose(s["restoration"], restoration(s["gamma_power"], s.attrs["gamma_stage"],
                                                             s.attrs["gamma_healthy"]))
    best = s.attrs["best"]
    assert s["restoration"].values[best] == pytest.approx(s["restoration"].max())
    # fields of scalp tES at ≤ 4 mA: ≤ ~0.5 V/m in the targets, i.e. ≤ 0.1 mV soma shift at λ = 0.2
    assert 0.05 < float(s["target_E_n_V_m"].max()) < 1.0
    assert float(s["target_shift_mV"].max()) == pytest.approx(0.2 * float(s["target_E_n_V_m"].max()), rel=0.35)
    print(f"best safe 40 Hz tACS: {s.attrs['best_montage']} x{s.attrs['best_dose']}: restores "
          f"{100 * s.attrs['best_restoration']:.1f} % of lost gamma")


def test_dose_response_shows_the_polarisation_needed_to_restore_half_the_gamma(scenario, tmp_path):
    d = scenario["dose"]
    r = d["restoration"].values
    print("restoration at", d["amplitude_mV"].values, "mV:", r)
    assert abs(r[0]) < 0.1                                       # 0.1 mV (a strong safe montage): none
    assert r[-1] >= 0.5                                          # 1 mV entrains P2 at 40 Hz
    assert d.attrs["half_restoration_mV"] == 1.0
    np.testing.assert_allclose(d["field_needed_V_m"], d["amplitude_mV"] / 0.2)
    fig = plot_scenario(scenario, tmp_path / "ad.png")
    assert (tmp_path / "ad.png").stat().st_size > 10_000
    assert len(fig.axes) == 3
