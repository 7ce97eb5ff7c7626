import numpy as np
import pytest
import xarray as xr

from neurotwin_dash.params import ParamError
from neurotwin_dash.simulate import simulate
from neurotwin_dash.stimulation.coupling import STIM_PARAMS, tes_drives
from neurotwin_dash.stimulation.efield import electrode_fields, montage_field
from neurotwin_dash.stimulation.montage import Montage, MontageError
from neurotwin_dash.stimulation.waveforms import TACS, TDCS, phased_tacs

MONTAGE = Montage.bipolar("T7", "T8", 2.0)


@pytest.fixture(scope="module")
def fields():
    return electrode_fields("tvb76")


@pytest.fixture(scope="module")
def En(fields):
    return montage_field(MONTAGE, fields)["E_n"].values


def test_drive_is_lambda_times_normal_field(fields, En):
    (d,) = tes_drives(MONTAGE, "tacs:40Hz", fields=fields, lambda_mV_per_V_m=0.25)
    assert d.target == "membrane" and d.unit == "mV"
    np.testing.assert_allclose(d.spatial.values, 0.25 * En)
    assert float(d.waveform(np.array([1 / 160]))[0]) == pytest.approx(1.0)
    (db,) = tes_drives(MONTAGE, TDCS(), fields=fields, dose=[0.0, 0.5, 1.0])
    assert db.spatial.dims == ("batch", "region")
    np.testing.assert_allclose(db.spatial.values, STIM_PARAMS["stim_lambda_mV_per_V_m"].default
                               * np.array([0.0, 0.5, 1.0])[:, None] * En[None])


def test_drive_inputs_are_validated(fields):
    with pytest.raises(ParamError, match=r"stim_lambda_mV_per_V_m.*= 1.5 is outside the allowed range \[0, 1\]"):
        tes_drives(MONTAGE, "tdcs", fields=fields, lambda_mV_per_V_m=1.5)
    with pytest.raises(MontageError, match=r"dose 1.5: electrode 'T7'.*max_current_mA = 2"):
        tes_drives(MONTAGE, "tdcs", fields=fields, dose=[0.5, 1.5])
    with pytest.raises(ValueError, match="waveform"):
        tes_drives(MONTAGE, None, fields=fields)


def test_phased_tacs_and_imported_fields_become_drives(fields, En):
    comps = phased_tacs({"T7": 1.0, "T8": -1.0, "F3": 1.0, "P4": -1.0},
                        {"T7": 0.0, "T8": 0.0, "F3": 90.0, "P4": 90.0}, 40.0)
    drives = tes_drives(comps, fields=fields)
    assert len(drives) == 2
    imported = xr.DataArray(En, dims=("region",), coords={"region": fields["region"].values})
    (d,) = tes_drives(imported, "tdcs:ramp=0", lambda_mV_per_V_m=0.1)
    np.testing.assert_allclose(d.spatial.values, 0.1 * En)


def _amp_at(x, fs, f0):
    """|Fourier coefficient| at f0 along axis 1 (time)."""
    n = x.shape[1]
    t = np.arange(n) / fs
    return np.abs(np.tensordot(np.exp(-2j * np.pi * f0 * t), x, axes=(0, 1))) * 2 / n


def test_40hz_tacs_raises_40hz_power_in_stimulated_regions_in_proportion_to_dose(fields, En):
    (d,) = tes_drives(MONTAGE, TACS(40.0), fields=fields, dose=[0.0, 0.5, 1.0])
    res = simulate("jansen_rit", "tvb76", duration_s=4.0, dt_ms=0.1, transient_s=1.0, seed=3,
                   params={"coupling": np.full(3, 2.0)}, drive=d)
    v = res["v_pyr"].values                                   # (batch, time, region)
    fs = res.attrs["sample_rate_hz"]
    # common random numbers: stim - sham isolates the driven response
    resp = _amp_at(v[1:] - v[:1], fs, 40.0)                    # (2, region)
    ratio = resp[1] / resp[0]
    np.testing.assert_allclose(np.median(ratio), 2.0, rtol=0.05)
    stim = np.argsort(-np.abs(En))[:10]
    weak = np.argsort(np.abs(En))[:10]
    # the network spreads the response, but the strongly stimulated regions lead (≈ 3x here)
    assert resp[1, stim].mean() > 2.2 * resp[1, weak].mean()
    # 40 Hz power of the recorded signal grows with dose in the stimulated regions
    power = _amp_at(v - v.mean(axis=1, keepdims=True), fs, 40.0)[:, stim] ** 2
    assert power[0].mean() < power[1].mean() < power[2].mean()
    assert power[2].mean() > 1.05 * power[0].mean()


def test_40hz_response_is_proportional_to_En_without_network_coupling(fields, En):
    (d,) = tes_drives(MONTAGE, TACS(40.0), fields=fields, dose=[0.0, 1.0])
    res = simulate("jansen_rit", "tvb76", duration_s=2.0, dt_ms=0.1, transient_s=0.5, seed=4,
                   params={"coupling": np.zeros(2)}, drive=d)
    v = res["v_pyr"].values
    resp = _amp_at(v[1:] - v[:1], res.attrs["sample_rate_hz"], 40.0)[0]
    assert np.corrcoef(resp, np.abs(En))[0, 1] > 0.98


def test_tdcs_shifts_soma_potential_and_rate_with_the_sign_of_En(fields, En):
    lam = 1.0
    (d,) = tes_drives(MONTAGE, TDCS(ramp_up_s=0.2, ramp_down_s=0.0), fields=fields, dose=[0.0, 1.0, -1.0],
                      lambda_mV_per_V_m=lam)
    res = simulate("jansen_rit", "tvb76", duration_s=3.0, dt_ms=0.1, transient_s=1.0, seed=5,
                   params={"coupling": np.full(3, 2.0)}, drive=d, record=["v_pyr", "rate_out"])
    # regions where the local field dominates over what the network carries in from the others
    big = np.abs(En) > 0.3 * np.abs(En).max()
    assert big.sum() >= 8
    shift = lam * np.array([0.0, 1.0, -1.0])[:, None] * En[None]     # imposed soma shift on the plateau
    soma = res["v_pyr"].values.mean(axis=1) + shift
    rate = res["rate_out"].values.mean(axis=1)
    for k, sign in ((1, 1.0), (2, -1.0)):
        assert np.all(np.sign(soma[k] - soma[0])[big] == sign * np.sign(En[big]))
        assert np.all(np.sign(rate[k] - rate[0])[big] == sign * np.sign(En[big]))
    assert np.corrcoef(rate[1] - rate[0], En)[0, 1] > 0.9
    # Jansen-Rit's PSP output v_pyr moves the other way (recruited feedback inhibition)
    assert np.corrcoef(res["v_pyr"].values.mean(axis=1)[1] - res["v_pyr"].values.mean(axis=1)[0], En)[0, 1] < -0.9
