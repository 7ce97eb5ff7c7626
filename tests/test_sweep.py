"""Sweeps: samples, batching, the zarr store, resume, faults, CLI."""
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import xarray as xr
import yaml

from neurotwin_dash import sweep
from neurotwin_dash.cluster import get_client
from neurotwin_dash.params import ParamError
from neurotwin_dash.simulate import simulate

SHORT = dict(model="jansen_rit", connectome="tvb76", duration_s=1.5, transient_s=0.5,
             sample_rate_hz=250.0)


def _spec(**kw):
    base = dict(SHORT, axes={"coupling": {"values": [0.0, 8.0, 20.0]}, "p": {"values": [120.0, 220.0]}},
                batch_size=2, metrics=["std", {"name": "std", "reduce": "none", "as": "std_region"}])
    base.update(kw)
    return sweep.SweepSpec.from_dict(base)


@pytest.fixture(scope="module")
def client():
    return get_client(n_workers=2, quiet=True)


# --- samples --------------------------------------------------------------------------------

def test_grid_samples_enumerate_the_cartesian_product_first_axis_slowest():
    s = sweep.make_samples(_spec())
    assert s.sizes["sample"] == 6
    np.testing.assert_array_equal(s["coupling"].values, [0, 0, 8, 8, 20, 20])
    np.testing.assert_array_equal(s["p"].values, [120, 220] * 3)
    lin = sweep.make_samples(_spec(axes={"speed_m_s": {"low": 2.0, "high": 8.0, "num": 4},
                                         "noise_sd": {"low": 1.0, "high": 100.0, "num": 3, "log": True}}))
    np.testing.assert_allclose(np.unique(lin["speed_m_s"]), [2, 4, 6, 8])
    np.testing.assert_allclose(np.unique(lin["noise_sd"]), [1, 10, 100])


@pytest.mark.parametrize("sampling", ["sobol", "lhs"])
def test_space_filling_samples_put_one_point_in_each_stratum_of_every_axis(sampling):
    n = 16
    spec = _spec(sampling=sampling, n_samples=n,
                 axes={"coupling": {"low": 0.0, "high": 40.0}, "p": {"low": 100.0, "high": 300.0},
                       "speed_m_s": {}})       # empty axis: the declared bounds (0.5–100 m/s)
    s = sweep.make_samples(spec)
    for name, lo, hi in [("coupling", 0, 40), ("p", 100, 300), ("speed_m_s", 0.5, 100)]:
        u = (s[name].values - lo) / (hi - lo)
        assert np.all((u >= 0) & (u < 1))
        # Sobol (2^m points) and Latin hypercubes both fill each 1/n interval exactly once
        np.testing.assert_array_equal(np.sort(np.floor(u * n)), np.arange(n))
    again = sweep.make_samples(spec)
    xr.testing.assert_identical(s, again)              # seeded: the same design every time


def test_bad_sweep_specs_raise_naming_the_field():
    with pytest.raises(ParamError, match="unknown parameter 'coupl'.*known: .*coupling"):
        sweep.make_samples(_spec(axes={"coupl": {"values": [1.0]}}))
    with pytest.raises(ParamError, match=r"'p'.*outside the allowed range \[0, 350\]"):
        sweep.make_samples(_spec(axes={"p": {"values": [400.0]}}))
    with pytest.raises(sweep.SweepError, match="sampling 'halton' unknown"):
        _spec(sampling="halton")
    with pytest.raises(sweep.SweepError, match="n_samples must be a positive integer"):
        _spec(sampling="sobol")
    with pytest.raises(sweep.SweepError, match="both swept .* and fixed"):
        _spec(fixed={"p": 100.0})
    with pytest.raises(sweep.SweepError, match="unknown sweep spec keys"):
        sweep.SweepSpec.from_dict(dict(SHORT, axes={"p": [100.0]}, colour="red"))
    with pytest.raises(sweep.SweepError, match="metric 'nope' unknown"):
        sweep.run_sweep(_spec(metrics=["nope"]), "/nonexistent/never-created.zarr", client="sync")


def test_batch_slices_cover_all_samples_once():
    sl = sweep.batch_slices(7, 3)
    assert [(s.start, s.stop) for s in sl] == [(0, 3), (3, 6), (6, 7)]


# --- mapping sweep parameters onto simulate() -------------------------------------------

def test_region_subset_axis_sets_the_parameter_only_in_those_regions():
    spec = _spec(axes={"p": {"values": [150.0, 300.0], "regions": ["lV1", "rV1"]}}, fixed={"coupling": 5.0})
    kw = sweep.build_simulate_kwargs(spec, {"p": np.array([150.0, 300.0])})
    p = kw["params"]["p"]
    labels = kw["connectome"].labels
    i, j = labels.index("lV1"), labels.index("rV1")
    assert p.shape == (2, 76)
    np.testing.assert_array_equal(p[:, [i, j]], [[150, 150], [300, 300]])
    others = np.delete(p, [i, j], axis=1)
    assert np.all(others == 220.0)                     # the declared default elsewhere


def test_connectome_scale_is_the_same_model_as_scaling_the_coupling():
    spec = _spec(axes={"connectome_scale": {"values": [1.0, 2.0]}}, fixed={"coupling": 6.0})
    kw = sweep.build_simulate_kwargs(spec, {"connectome_scale": np.array([1.0, 2.0])})
    np.testing.assert_array_equal(kw["params"]["coupling"], [6.0, 12.0])
    a = simulate(**kw)
    b = simulate(**dict(kw, params={"coupling": np.array([6.0, 12.0])}))
    np.testing.assert_array_equal(a["v_pyr"].values, b["v_pyr"].values)


def test_stimulation_axes_build_one_drive_per_frequency_acting_only_on_its_members():
    spec = _spec(axes={"stim_amplitude": {"values": [0.0, 1.0]}, "stim_frequency_hz": {"values": [10.0, 40.0]}},
                 stimulation={"pattern": {"lV1": 2.0, "rV1": 1.0}, "lambda_mV_per_V_m": 0.25})
    s = sweep.make_samples(spec)
    batch = {k: s[k].values for k in s.data_vars}        # amp [0,0,1,1], freq [10,40,10,40]
    kw = sweep.build_simulate_kwargs(spec, batch)
    drives = kw["drive"]
    assert len(drives) == 2                              # amplitude-0 members need no drive
    labels = kw["connectome"].labels
    i, j = labels.index("lV1"), labels.index("rV1")
    for drv, member, f in zip(drives, [2, 3], [10.0, 40.0]):
        sp = np.asarray(drv.spatial)
        assert sp.shape == (4, 76)
        assert np.count_nonzero(sp.any(axis=1)) == 1 and sp[member].any()
        # pattern scaled to peak 1, times amplitude 1 V/m, times λ
        np.testing.assert_allclose(sp[member, [i, j]], [0.25, 0.125])
        assert drv.waveform(np.array([1 / (4 * f)]))[0] == pytest.approx(1.0)   # sin peak at T/4
    res = simulate(**kw)
    alone = simulate(**dict(kw, drive=None, params={**kw["params"]}))
    v, v0 = res["v_pyr"].values, alone["v_pyr"].values
    np.testing.assert_array_equal(v[:2], v0[:2])         # unstimulated members untouched
    assert np.abs(v[2:] - v0[2:]).max() > 1e-3           # stimulated members respond


def test_montage_stimulation_axis_scales_the_montage_field_and_enforces_limits():
    from neurotwin_dash.stimulation.efield import montage_field
    from neurotwin_dash.stimulation.montage import Montage, MontageError
    montage = Montage.bipolar("O1", "Fp2", 2.0)
    spec = _spec(axes={"stim_dose": {"values": [0.5, 1.0]}}, stimulation={"montage": montage.to_dict()})
    kw = sweep.build_simulate_kwargs(spec, {"stim_dose": np.array([0.5, 1.0])})
    en = montage_field(montage, connectome=kw["connectome"])["E_n"].values
    (drv,) = kw["drive"]
    np.testing.assert_allclose(np.asarray(drv.spatial), 0.2 * np.array([0.5, 1.0])[:, None] * en[None, :])
    assert 0.05 < np.abs(en).max() < 2.0                      # V/m for 2 mA: a scalp-tES field
    too_much = _spec(axes={"stim_dose": {"values": [1.5]}}, stimulation={"montage": montage.to_dict()})
    with pytest.raises(MontageError, match="mA"):
        sweep.build_simulate_kwargs(too_much, {"stim_dose": np.array([1.5])})


# --- running --------------------------------------------------------------------------------

def _serial_reference(spec):
    """Each sample simulated alone, metrics computed the obvious way."""
    s = sweep.make_samples(spec)
    out = []
    for i in range(s.sizes["sample"]):
        params = {k: float(s[k].values[i]) for k in s.data_vars}
        res = simulate(spec.model, spec.connectome, duration_s=spec.duration_s, dt_ms=spec.dt_ms,
                       params=params, seed=spec.seed, sample_rate_hz=spec.sample_rate_hz,
                       transient_s=spec.transient_s, noise_rng=spec.noise_rng)
        out.append(res["v_pyr"].isel(batch=0).std("time").values)
    return np.array(out)


def test_sweep_on_local_cluster_equals_each_sample_run_alone(client, tmp_path):
    spec = _spec()
    res = sweep.run_sweep(spec, tmp_path / "s.zarr", client=client, progress=False)
    assert res.computed == [0, 1, 2] and res.skipped == []
    ds = res.dataset.compute()
    ref = _serial_reference(spec)                      # (sample, region)
    np.testing.assert_allclose(ds["std_region"].values, ref, rtol=1e-12, atol=0)
    np.testing.assert_allclose(ds["std"].values, ref.mean(axis=1), rtol=1e-12)
    assert ds["std"].values.min() > 0.05               # these are real, active simulations
    assert np.all(ds["batch_done"].values == 1) and not ds["diverged"].any()
    np.testing.assert_array_equal(ds["coupling"].values, [0, 0, 8, 8, 20, 20])
    grid = sweep.as_grid(ds)
    assert grid["std"].dims == ("coupling", "p") and grid["std"].shape == (3, 2)
    # the same sweep again resumes with nothing to do
    again = sweep.run_sweep(spec, tmp_path / "s.zarr", client=client, progress=False)
    assert again.computed == [] and again.skipped == [0, 1, 2]


@sweep.register_simulator("test_sweep.simulate_with_divergence")   # specs name registered code only
def simulate_with_divergence(**kwargs):
    """The real simulator, with members whose coupling is 20 reported as diverged mid-run
    (as simulate does for NaN/Inf states: NaN after the divergence, ``diverged`` True)."""
    res = simulate(**kwargs)
    bad = np.asarray(kwargs["params"]["coupling"]) == 20.0
    v = res["v_pyr"].values.copy()
    v[bad, v.shape[1] // 2:] = np.nan
    res["v_pyr"] = (res["v_pyr"].dims, v)
    res["diverged"] = ("batch", bad)
    return res


def test_diverged_samples_are_recorded_not_dropped(tmp_path):
    spec = _spec(simulator="test_sweep.simulate_with_divergence", timeseries=True)
    ds = sweep.run_sweep(spec, tmp_path / "d.zarr", client="sync", progress=False).dataset.compute()
    assert ds.sizes["sample"] == 6
    np.testing.assert_array_equal(ds["diverged"].values, [0, 0, 0, 0, 1, 1])
    assert np.isnan(ds["std"].values[4:]).all() and np.isfinite(ds["std"].values[:4]).all()
    assert ds["v_pyr"].dims == ("sample", "time", "region") and ds.sizes["time"] == 250
    assert np.isnan(ds["v_pyr"].values[4:, -1]).all() and np.isfinite(ds["v_pyr"].values[:4]).all()


def test_metrics_of_one_batch_share_a_welch_spectrum_and_equal_the_metrics_alone(monkeypatch):
    spec = _spec(axes={"p": {"values": [150.0, 220.0]}},
                 metrics=["peak_frequency", "alpha_power", {"name": "alpha_power", "window_s": 1.0, "as": "alpha_1s"}])
    calls = []
    welch = sweep.spectra.welch
    monkeypatch.setattr(sweep.spectra, "welch", lambda da, **kw: calls.append(kw) or welch(da, **kw))
    ds = sweep.run_batch(spec, {"p": [150.0, 220.0]})
    assert calls == [{}, {"window_s": 1.0}]          # peak frequency and alpha power: one spectrum
    assert sweep._PSD_MEMO.get() is None             # nothing kept after the batch
    res = simulate(**sweep.build_simulate_kwargs(spec, {"p": [150.0, 220.0]}))
    np.testing.assert_array_equal(ds["peak_frequency"].values, sweep.metric_peak_frequency(res).values)
    np.testing.assert_array_equal(ds["alpha_power"].values, sweep.metric_alpha_power(res).values)
    np.testing.assert_array_equal(ds["alpha_1s"].values, sweep.metric_alpha_power(res, window_s=1.0).values)
    assert len(calls) == 5                           # outside a batch, each metric computes its own
    token = sweep._PSD_MEMO.set({})                  # temporaries made one after the other (equal ids
    try:                                             # once the first is freed) get their own spectra
        firsts = [sweep.metric_alpha_power(res.isel(region=[r]), reduce="none").values for r in (0, 1)]
    finally:
        sweep._PSD_MEMO.reset(token)
    for r, got in enumerate(firsts):
        np.testing.assert_array_equal(got, sweep.metric_alpha_power(res.isel(region=[r]), reduce="none").values)
    assert not np.array_equal(firsts[0], firsts[1])


def test_resume_refuses_a_store_made_by_another_spec(tmp_path):
    store = tmp_path / "r.zarr"
    sweep.run_sweep(_spec(axes={"p": {"values": [150.0]}}), store, client="sync", progress=False)
    with pytest.raises(sweep.SweepError, match="different sweep spec"):
        sweep.run_sweep(_spec(axes={"p": {"values": [160.0]}}), store, client="sync", progress=False)
    half = tmp_path / "half.zarr"          # a store killed while its metadata was being written
    half.mkdir()
    (half / ".zgroup").write_text('{"zarr_format": 2}')
    with pytest.raises(sweep.SweepError, match="cannot be read .* overwrite"):
        sweep.run_sweep(_spec(), half, client="sync", progress=False)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(sweep.SweepError, match="not a sweep store"):
        sweep.run_sweep(_spec(), tmp_path / "junk", client="sync", progress=False)


def test_a_spec_without_batch_size_takes_one_kernel_block_or_the_resumed_stores(tmp_path):
    bare = dict(SHORT, axes={"p": {"values": [150.0, 160.0, 170.0]}}, metrics=["std"])
    spec = sweep.SweepSpec.from_dict(bare)
    assert spec.batch_size is None and spec.with_batch_size() is not spec
    assert spec.with_batch_size().batch_size == 16                    # two float64 vectors of members
    assert sweep.SweepSpec.from_dict({**bare, "dtype": "float32"}).with_batch_size().batch_size == 32
    assert sweep.SweepSpec.from_dict({**bare, "model": "lanmm"}).with_batch_size().batch_size == 8
    assert spec.fingerprint() == sweep.SweepSpec.from_dict({**bare, "batch_size": 16}).fingerprint()
    # a new store gets the default and records it
    fresh = sweep.run_sweep(spec, tmp_path / "new.zarr", client="sync", progress=False)
    assert fresh.dataset.attrs["batch_size"] == 16 and fresh.n_batches == 1
    # a store made with another batch size (8, the default before) resumes from the same bare spec:
    # nothing recomputed, its batches kept
    old = tmp_path / "old.zarr"
    first = sweep.run_sweep(sweep.SweepSpec.from_dict({**bare, "batch_size": 2}), old, client="sync", progress=False)
    again = sweep.run_sweep(spec, old, client="sync", progress=False)
    assert again.computed == [] and again.skipped == first.computed == [0, 1]
    assert again.dataset.attrs["batch_size"] == 2
    np.testing.assert_array_equal(again.dataset["std"].values, fresh.dataset["std"].values)
    # overwrite starts afresh with the default
    over = sweep.run_sweep(spec, old, client="sync", progress=False, overwrite=True)
    assert over.dataset.attrs["batch_size"] == 16 and over.computed == [0]


def _fault_spec(**kw):
    # 8 batches of 3 members, each batch ~0.5 s of numba work
    return _spec(axes={"coupling": {"values": [0.0, 4.0, 8.0, 12.0]}, "p": {"low": 120.0, "high": 260.0, "num": 6}},
                 batch_size=3, duration_s=2.0, metrics=["std"], **kw)


def _reference_all(spec):
    s = sweep.make_samples(spec)
    return sweep.run_batch(spec, {k: s[k].values for k in s.data_vars})["std"].values


def test_sweep_completes_when_a_worker_process_is_killed_mid_sweep(client, tmp_path):
    spec = _fault_spec()
    killed = {}

    def kill_a_busy_worker():
        deadline = time.time() + 30
        while time.time() < deadline:
            busy = [w for w, tasks in client.processing().items() if tasks]
            if busy and os.path.exists(tmp_path / "k.zarr"):
                pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed["pid"] = pid
                return
            time.sleep(0.05)

    pids_before = set(client.run(os.getpid).values())
    t = threading.Thread(target=kill_a_busy_worker)
    t.start()
    res = sweep.run_sweep(spec, tmp_path / "k.zarr", client=client, progress=False)
    t.join()
    assert killed.get("pid") in pids_before
    assert res.computed == list(range(8))
    ds = res.dataset.compute()
    assert np.all(ds["batch_done"].values == 1)
    np.testing.assert_allclose(ds["std"].values, _reference_all(spec), rtol=1e-12)
    client.wait_for_workers(2, timeout=30)             # the nanny restarted the killed worker
    assert killed["pid"] not in set(client.run(os.getpid).values())


def test_killed_client_process_resumes_recomputing_no_completed_batch(client, tmp_path):
    spec = _fault_spec()
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec.to_dict()))
    store = tmp_path / "c.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-m", "neurotwin_dash.cli", "sweep", str(spec_path), "--out", str(store),
         "--workers", "1", "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 90
        done = []
        while time.time() < deadline:
            if os.path.exists(store):
                try:
                    done = sweep.sweep_status(store)["done"]
                except Exception:        # store being created right now
                    done = []
            if len(done) >= 2:
                break
            assert proc.poll() is None, "the sweep subprocess ended before it could be killed"
            time.sleep(0.05)
        # kill the client and the LocalCluster it started (its own process group)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    status = sweep.sweep_status(store)
    done_at_kill = status["done"]
    assert 2 <= len(done_at_kill) < 8, done_at_kill
    res = sweep.run_sweep(spec, store, client=client, progress=False)
    assert res.skipped == done_at_kill
    assert res.computed == status["pending"]           # nothing completed is recomputed
    assert len(res.computed) + len(res.skipped) == 8
    ds = res.dataset.compute()
    np.testing.assert_allclose(ds["std"].values, _reference_all(spec), rtol=1e-12)   # nothing lost


STOP_AFTER_TWO = threading.Event()
_calls = []


@sweep.register_simulator("test_sweep.simulate_then_stop")
def simulate_then_stop(**kwargs):
    """The real simulator; the second call sets STOP_AFTER_TWO (a user clicking Stop mid-sweep)."""
    _calls.append(1)
    if len(_calls) == 2:
        STOP_AFTER_TWO.set()
    return simulate(**kwargs)


def test_stop_event_ends_a_sync_sweep_between_batches_and_a_rerun_resumes(tmp_path):
    spec = _spec(simulator="test_sweep.simulate_then_stop")
    store = tmp_path / "stop.zarr"
    res = sweep.run_sweep(spec, store, client="sync", progress=False, stop=STOP_AFTER_TWO)
    assert res.stopped and res.computed == [0, 1] and res.n_batches == 3
    assert sweep.sweep_status(store)["pending"] == [2]
    again = sweep.run_sweep(spec, store, client="sync", progress=False)
    assert not again.stopped and again.skipped == [0, 1] and again.computed == [2]
    np.testing.assert_allclose(again.dataset["std_region"].values, _serial_reference(_spec()), rtol=1e-12)


def test_stop_event_cancels_queued_dask_batches_and_a_rerun_computes_only_the_rest(client, tmp_path):
    spec = _fault_spec()
    store = tmp_path / "stopd.zarr"
    stop = threading.Event()
    out = {}
    t = threading.Thread(target=lambda: out.setdefault(
        "res", sweep.run_sweep(spec, store, client=client, progress=False, stop=stop)))
    t.start()
    deadline = time.time() + 60
    while time.time() < deadline:
        if os.path.exists(store):
            try:
                if len(sweep.sweep_status(store)["done"]) >= 2:
                    break
            except Exception:        # store being created right now
                pass
        time.sleep(0.02)
    stop.set()
    t.join(30)
    assert not t.is_alive()
    res = out["res"]
    assert res.stopped and 2 <= len(res.computed) < 8
    deadline = time.time() + 10                          # the cancelled batches leave the workers
    while any(client.processing().values()) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(client.processing().values())
    status = sweep.sweep_status(store)
    assert status["done"] == res.computed
    again = sweep.run_sweep(spec, store, client=client, progress=False)
    assert again.computed == status["pending"] and again.skipped == res.computed and not again.stopped
    np.testing.assert_allclose(again.dataset["std"].values, _reference_all(spec), rtol=1e-12)


def test_cli_sweep_runs_a_yaml_spec_and_reports(tmp_path, capsys):
    from neurotwin_dash.cli import main
    spec = _spec(axes={"p": {"values": [120.0, 220.0, 300.0]}})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec.to_dict()))
    assert main(["sweep", str(path), "--out", str(tmp_path / "o.zarr"), "--scheduler", "sync",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "3 samples in 2 batches; computed 2, already done 0; diverged 0" in out
    assert main(["sweep", str(path), "--out", str(tmp_path / "o.zarr"), "--scheduler", "sync",
                 "--no-progress"]) == 0
    assert "computed 0, already done 2" in capsys.readouterr().out
    assert main(["sweep", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "x.zarr")]) == 2
    assert "does not exist" in capsys.readouterr().err
