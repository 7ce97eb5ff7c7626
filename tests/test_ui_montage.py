"""Montage designer state and plots in plain Python (sync jobs, no browser)."""
from __future__ import annotations

import numpy as np
import pytest

from neurotwin_dash.stimulation import efield
from neurotwin_dash.stimulation.montage import Montage
from neurotwin_dash.ui.field3d import render_surface_png
from neurotwin_dash.ui.montage import MontageDesigner, MontageState


@pytest.fixture(scope="module")
def designer():
    s = MontageState(mode="sync")
    s.auto_run = False
    s.duration_s = 1.0
    d = MontageDesigner(state=s)
    s.run_field()
    assert s.field_runner.error == ""
    return d


def test_field_of_the_default_montage_matches_the_library(designer):
    s = designer.state
    res = s.field_runner.result
    ref = efield.montage_field(Montage({"F3": 2.0, "Fp2": -2.0}, layout="standard_1020"), connectome="tvb76")
    np.testing.assert_allclose(res["E_n"].values, ref["E_n"].values, rtol=1e-12)
    cur = dict(zip(res["electrode"].values, res["current_mA"].values))
    assert cur["F3"] == 2.0 and cur["Fp2"] == -2.0 and sum(abs(v) for v in cur.values()) == 4.0
    # the plots show it: field map values and the two active electrodes
    assert np.allclose(designer.field_map.source.data["power"], res["E_n"].values)
    assert sorted(designer.electrodes.active.data["name"]) == ["F3", "Fp2"]
    assert res.attrs["backend_3d"] in ("pyvista", "matplotlib") and res.attrs["png_3d"][:4] == b"\x89PNG"


def test_downloads_give_a_montage_that_reloads_and_the_field_as_netcdf(designer, tmp_path):
    import xarray as xr
    path = tmp_path / "montage.json"
    path.write_bytes(designer._montage_file().getvalue())
    m = Montage.load(path)
    assert m.currents_mA == designer.state.montage().currents_mA
    field = xr.load_dataset(designer._result_file(designer.state.field_runner), engine="h5netcdf")
    np.testing.assert_allclose(field["E_n"].values, designer.state.field_runner.result["E_n"].values)


def test_over_limit_currents_show_inline_errors_and_keep_the_last_valid_montage(designer):
    s = designer.state
    n_done = s.field_runner.n_done
    designer.current.set_text("3")                     # over the 2 mA per-electrode limit
    assert "outside the allowed range [-2, 2] mA" in designer.current.error
    designer.electrode.value = "C3"
    designer._set_current()
    assert designer.input_error.visible and "current at electrode = 3" in designer.input_error.object
    assert s.currents_mA == {"F3": 2.0, "Fp2": -2.0}
    designer.current.set_text("2")                     # within the per-electrode limit ...
    designer._set_current()                            # ... but the total injected becomes 4 mA + 2
    designer.electrode.value = "Cz"
    designer.current.set_text("-2")
    s.currents_mA = {"F3": 2.0, "C3": 2.0, "Fp2": -2.0, "Cz": -2.0, "P3": 1.0, "Oz": -1.0}
    assert "exceeds the limit max_total_mA = 4 mA" in s.error
    assert designer.montage_error.visible and "Montage not valid" in designer.montage_error.object
    assert s.field_runner.n_done == n_done              # nothing computed for an invalid montage
    designer.electrode.value = "XY9"
    designer.current.set_text("1")
    designer._set_current()
    assert "'XY9' is not in layout" in designer.input_error.object
    s.currents_mA = {"F3": 2.0, "Fp2": -2.0}
    assert s.error == "" and not designer.montage_error.visible


def test_optimization_returns_a_valid_montage_that_hits_the_target(designer):
    s = designer.state
    s.targets = ["lPFCDL"]
    s.optimize()
    assert s.opt_runner.error == ""
    m = s.montage()                                    # the state now holds the optimized currents
    assert len(m.active_electrodes) <= s.max_electrodes
    assert m.total_injected_mA <= s.max_total_mA + 1e-6
    metrics = s.opt_runner.result["metrics"]
    assert metrics["argmax_region"] == "lPFCDL" and 0.3 < metrics["target_En"] < 0.6
    s.currents_mA = {"F3": 2.0, "Fp2": -2.0}


def test_effect_compares_the_same_noise_with_and_without_stimulation(designer):
    s = designer.state
    s.targets = ["lPFCDL"]
    s.stim_params.stim_lambda_mV_per_V_m = 0.0        # no coupling: both conditions identical
    s.run_effect()
    res0 = s.effect_runner.result
    np.testing.assert_allclose(res0["band_power"].values[0], res0["band_power"].values[1])
    # identical pairs: every effect is exactly 0 with a zero-width CI, i.e. indistinguishable from sham
    assert res0.attrs["n_seeds"] == 5
    np.testing.assert_array_equal(res0["effect"].values, 0.0)
    assert set(res0["verdict"].values) == {"indistinguishable from sham"}
    s.stim_params.stim_lambda_mV_per_V_m = 1.0
    s.run_effect()
    res = s.effect_runner.result
    assert s.effect_runner.error == ""
    np.testing.assert_allclose(res["band_power"].values[0], res0["band_power"].values[0])   # sham unchanged
    assert not np.allclose(res["band_power"].values[1], res["band_power"].values[0])
    i = list(res["region"].values).index("lPFCDL")
    assert res.attrs["relative_change_targets"] == pytest.approx(
        res["band_power"].values[1, i] / res["band_power"].values[0, i] - 1)
    # λ = 1 mV per V/m at 2 mA: the 40 Hz drive locks the target's P2 to the waveform, surely
    plv = res.sel(outcome="plv")
    assert float(plv["ci_low"]) > 0.1 and str(plv["verdict"].values) == "above sham"
    e = res.sel(outcome="band_power")
    assert float(e["ci_low"]) <= float(e["effect"]) <= float(e["ci_high"])
    assert float(e["effect"]) == pytest.approx(float(e["stim"] - e["sham"]), rel=1e-9)
    designer._show_effect(res)
    assert designer.sham_map.mapper.low == designer.stim_map.mapper.low      # one colour scale
    text = designer.effect_text.object
    assert "%" in text and " ± " in text and "5 seeds" in text and "95 % CI" in text


def test_static_3d_fallback_draws_the_same_surface():
    surf = efield.cortex_surface("tvb76")
    v, tri = surf["vertices"].values, surf["triangles"].values
    png, backend = render_surface_png(v, tri, v[:, 0], backend="matplotlib")
    assert backend == "matplotlib" and png[:4] == b"\x89PNG" and len(png) > 10_000
    with pytest.raises(ValueError, match="backend 'vtk' unknown"):
        render_surface_png(v, tri, v[:, 0], backend="vtk")
