"""Every number neurotwin-dash writes carries CF-style units; every dataset declares Conventions.

Walks the outputs of ``neurotwin simulate`` (netCDF and zarr, with a swept parameter),
``neurotwin analyse`` (with PAC and sensor band powers) and ``neurotwin sweep`` as a user reads them
back from disk.
"""
from __future__ import annotations

import pytest
import xarray as xr
import yaml

from neurotwin_dash.cli import main
from neurotwin_dash.units import CONVENTIONS, missing_units


def _read(path):
    return xr.open_zarr(path) if str(path).endswith(".zarr") else xr.open_dataset(path)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("units")
    sim, zsim, metrics = d / "sim.nc", d / "sim.zarr", d / "metrics.nc"
    common = ["--duration", "5", "--sample-rate", "250", "--set", "coupling=1,3", "--no-progress"]
    assert main(["simulate", *common, "--out", str(sim)]) == 0
    assert main(["simulate", "--connectome", "none", "--duration", "1", "--no-progress",
                 "--out", str(zsim)]) == 0
    assert main(["analyse", str(sim), "--out", str(metrics), "--pac-surrogates", "2",
                 "--montage", "standard_1020"]) == 0
    spec = dict(model="jansen_rit", connectome="tvb76", duration_s=1.5, transient_s=0.5,
                sample_rate_hz=250.0, axes={"p": {"values": [120.0, 220.0]}, "speed_m_s": {"values": [5.0]}})
    (d / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(d / "spec.yaml"), "--out", str(d / "sweep.zarr"), "--scheduler", "sync",
                 "--no-progress"]) == 0
    return {"simulate": sim, "simulate zarr": zsim, "analyse": metrics, "sweep": d / "sweep.zarr"}


@pytest.mark.parametrize("which", ["simulate", "simulate zarr", "analyse", "sweep"])
def test_every_written_number_has_units(outputs, which):
    ds = _read(outputs[which])
    assert missing_units(ds) == [], f"{which}: no units on {missing_units(ds)}"
    assert ds.attrs["Conventions"] == CONVENTIONS


def test_units_follow_the_signal(outputs):
    """Spectra of a signal in mV are in mV^2/Hz (not the '1/Hz' of a unit lost on the way)."""
    sim, met = _read(outputs["simulate"]), _read(outputs["analyse"])
    assert sim["v_pyr"].attrs["units"] == "mV" and sim["coupling"].attrs["units"] == "1"
    assert met["psd"].attrs["units"] == "mV^2/Hz"
    assert met["band_power"].attrs["units"] == "mV^2" and met["gamma_power"].attrs["units"] == "mV^2"
    assert met["relative_band_power"].attrs["units"] == "1"
    assert met["frequency"].attrs["units"] == "Hz" and met["band_low_hz"].attrs["units"] == "Hz"
    assert met["sensor_band_power"].attrs["units"] == "V^2"
    sw = _read(outputs["sweep"])
    assert sw["p"].attrs["units"] == "1/s" and sw["speed_m_s"].attrs["units"] == "m/s"
