"""`neurotwin analyse run.nc --out metrics.nc` on a real (short) simulation."""
import numpy as np
import pytest
import xarray as xr

from neurotwin_dash.cli import main

simulate_mod = pytest.importorskip("neurotwin_dash.simulate")


def test_analyse_writes_the_standard_metrics_of_a_simulation(tmp_path, capsys):
    res = simulate_mod.simulate("jansen_rit", "tvb76", duration_s=5.0, sample_rate_hz=250.0, seed=2,
                                transient_s=1.0, params={"coupling": [0.0, 0.5]})
    run = tmp_path / "run.nc"
    res.to_netcdf(run)
    out = tmp_path / "metrics.nc"
    assert main(["analyse", str(run), "--out", str(out), "--montage", "starstim8", "--bold", "--tr", "1.0"]) == 0
    assert "wrote" in capsys.readouterr().out
    m = xr.open_dataset(out)
    for name in ("psd", "band_power", "relative_band_power", "alpha_peak_hz", "gamma_power",
                 "aperiodic_exponent", "fc", "plv_alpha", "aec_alpha", "bold_fc", "sensor_band_power"):
        assert name in m, name
    assert m["fc"].dims == ("batch", "region", "region2") and m.sizes["region"] == 76
    assert m["band_power"].dims == ("batch", "region", "band")
    assert list(m["sensor_band_power"].sensor.values)[:2] == ["P7", "P4"]
    # Jansen–Rit at default input: alpha peak near 10.5 Hz in most regions
    assert float(m["alpha_peak_hz"].median()) == pytest.approx(10.5, abs=0.75)
    rel = m["relative_band_power"].sel(band="alpha")
    assert float(rel.median()) > 0.3
    np.testing.assert_allclose(np.diagonal(m["fc"].values, axis1=1, axis2=2), 1.0, atol=1e-9)
    assert m.attrs["model"] == "jansen_rit"


def test_analyse_reports_a_missing_file_as_an_error(tmp_path, capsys):
    assert main(["analyse", str(tmp_path / "nope.nc"), "--out", str(tmp_path / "m.nc")]) == 2
    assert "does not exist" in capsys.readouterr().err
