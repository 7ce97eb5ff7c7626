import numpy as np
import pytest

from neurotwin_dash.stimulation.montage import Limits, MontageError
from neurotwin_dash.stimulation.waveforms import (TACS, TDCS, Sampled, WaveformError, parse_waveform,
                                                  phased_tacs, simulation_times)


def test_tdcs_ramps_linearly_up_holds_and_ramps_down():
    w = TDCS(ramp_up_s=10, ramp_down_s=20, onset_s=5, duration_s=60)
    t = np.array([0, 4.99, 5, 10, 15, 30, 45, 55, 64.99, 65, 70])
    np.testing.assert_allclose(w(t), [0, 0, 0, 0.5, 1, 1, 1, 0.5, 0.0005, 0, 0], atol=1e-9)
    with pytest.raises(WaveformError, match=r"ramp_up_s \+ ramp_down_s = 30 s exceeds duration_s = 20"):
        TDCS(ramp_up_s=10, ramp_down_s=20, duration_s=20)


def test_tacs_on_the_simulation_clock_has_its_frequency_and_phase():
    dt_ms, dur = 0.1, 2.0
    w = TACS(40.0, phase_deg=90.0).sample(dur, dt_ms)
    assert w.sizes["time"] == 20000 and w.time.values[1] == pytest.approx(1e-4)
    assert w.values[0] == pytest.approx(1.0)            # sin(90°)
    spec = np.abs(np.fft.rfft(w.values))
    freqs = np.fft.rfftfreq(w.size, dt_ms / 1000)
    assert freqs[np.argmax(spec)] == pytest.approx(40.0)
    assert np.max(np.abs(w.values)) == pytest.approx(1.0, abs=1e-6)
    assert len(simulation_times(1.0, 0.25)) == 4000


def test_sums_and_scaling_add_pointwise():
    t = np.linspace(0, 1, 1001)
    w = TDCS(ramp_up_s=0, ramp_down_s=0) + 0.5 * TACS(10.0)
    np.testing.assert_allclose(w(t), 1 + 0.5 * np.sin(2 * np.pi * 10 * t), atol=1e-12)
    np.testing.assert_allclose((-w)(t), -w(t))


def test_parse_waveform_text_forms():
    w = parse_waveform("tacs:40Hz:phase=90:ramp=2s")
    assert isinstance(w, TACS) and w.frequency_hz == 40 and w.phase_deg == 90
    assert w.ramp_up_s == 2 and w.ramp_down_s == 2
    d = parse_waveform("tdcs:ramp_up=500ms:duration=60s")
    assert d.ramp_up_s == 0.5 and d.ramp_down_s == 10 and d.duration_s == 60
    s = parse_waveform("tdcs:ramp=0 + 0.5*tacs:f=10")
    np.testing.assert_allclose(s(np.array([0.025])), 1 + 0.5)
    with pytest.raises(WaveformError, match="tacs needs a frequency"):
        parse_waveform("tacs")
    with pytest.raises(WaveformError, match="kind 'trns' unknown"):
        parse_waveform("trns:100Hz")
    with pytest.raises(WaveformError, match="frequency_hz must be a positive"):
        parse_waveform("tacs:-4Hz")


def test_sampled_waveform_interpolates_and_is_zero_outside():
    w = Sampled([0.0, 1.0, 0.0], dt_ms=10.0)
    np.testing.assert_allclose(w(np.array([0.005, 0.01, 0.015, 0.05])), [0.5, 1.0, 0.5, 0.0])


def test_phased_tacs_components_reproduce_each_electrode_current():
    amps = {"F3": 1.0, "F4": 1.0, "Pz": -1.0, "Oz": -1.0}
    phases = {"F3": 0.0, "F4": 90.0, "Pz": 0.0, "Oz": 90.0}
    comps = phased_tacs(amps, phases, 10.0)
    assert len(comps) == 2
    t = np.linspace(0, 0.2, 401)
    for name in amps:
        total = sum(m.currents_mA.get(name, 0.0) * w(t) for m, w in comps)
        expected = amps[name] * np.sin(2 * np.pi * 10 * t + np.deg2rad(phases[name]))
        np.testing.assert_allclose(total, expected, atol=1e-9)
    # in-phase currents give one component
    assert len(phased_tacs({"F3": 1.0, "Pz": -1.0}, 0.0, 40.0)) == 1


def test_phased_tacs_rejects_currents_that_do_not_cancel_or_exceed_limits():
    with pytest.raises(MontageError, match="do not sum to zero at every instant"):
        phased_tacs({"F3": 1.0, "Pz": -1.0}, {"F3": 0.0, "Pz": 90.0}, 10.0)
    with pytest.raises(MontageError, match=r"electrode 'F3'.*max_current_mA"):
        phased_tacs({"F3": 2.5, "Pz": -2.5}, 0.0, 10.0)
    # three 2 mA anodes 120° apart cancel; their instantaneous injected total peaks at 4 mA
    amps = {"F3": 2.0, "F4": 2.0, "Pz": 2.0, "O1": -2.0, "O2": -2.0, "Oz": -2.0}
    phases = {"F3": 0, "F4": 120, "Pz": 240, "O1": 0, "O2": 120, "Oz": 240}
    with pytest.raises(MontageError, match=r"total injected current peaks at 4 mA.*max_total_mA = 3.9"):
        phased_tacs(amps, phases, 10.0, limits=Limits(max_total_mA=3.9))
    assert len(phased_tacs(amps, phases, 10.0)) == 2
