"""Twin export/import: one file reproduces a personalised run bit for bit."""
import json

import numpy as np
import yaml
import pytest
import xarray as xr

from neurotwin_dash import catalog
from neurotwin_dash.simulate import Drive, simulate
from neurotwin_dash.twin import Twin, TwinError, read_metadata, result_hash

RUN = dict(model="jansen_rit", duration_s=1.5, transient_s=0.5, sample_rate_hz=250.0)


def test_twin_of_a_stimulated_catalog_run_reproduces_member_bit_for_bit(tmp_path):
    conn = catalog.load("tvb76")
    i = conn.index("lV1")
    spatial = np.zeros((2, 76))
    spatial[:, i] = [0.0, 0.3]                                  # mV; member 1 stimulated
    drive = Drive(spatial=spatial, waveform=lambda t: np.sin(2 * np.pi * 40.0 * t))
    p_region = np.full(76, 200.0)
    p_region[i] = 250.0
    res = simulate(connectome="tvb76", params={"coupling": [4.0, 9.0], "C": 140.0, "p": p_region},
                   seed=[3, 4], drive=drive, record=["v_pyr", "rate_out"], **RUN)
    twin = Twin.from_result(res, drive=drive, member=1, montage={"currents_mA": {"O1": 1.0, "Cz": -1.0}},
                            name="subject-01")
    assert twin.params["coupling"] == 9.0 and twin.simulation["seed"] == 4
    np.testing.assert_array_equal(twin.params["p"], p_region)
    path = twin.save(tmp_path / "twin.nc")
    back = Twin.load(path)
    again = back.simulate()
    for v in ("v_pyr", "rate_out"):
        np.testing.assert_array_equal(again[v].isel(batch=0).values, res[v].isel(batch=1).values)
    assert back.verify(again)
    meta = read_metadata(path)
    assert meta["connectome"] == {"kind": "catalog", "name": "tvb76", "content_hash": conn.content_hash()}
    assert meta["montage"]["currents_mA"] == {"O1": 1.0, "Cz": -1.0}
    assert meta["provenance"]["project_version"] and "numba" in meta["provenance"]["packages"]
    assert meta["provenance"]["output_sha256"] == result_hash(res.isel(batch=[1]))
    # the unstimulated member is a different twin: its run differs
    other = Twin.from_result(res, drive=drive, member=0)
    assert not np.array_equal(other.simulate()["v_pyr"].values, again["v_pyr"].values)


def test_twin_of_a_fit_embeds_an_edited_connectome_and_keeps_scores(tmp_path):
    from neurotwin_dash.fit.objectives import AlphaPeakError, Objective
    from neurotwin_dash.fit.optimizers import FitProblem, FreeParam, fit
    conn = catalog.load("tvb76").lesion_region("rV1")
    prob = FitProblem(model="jansen_rit", connectome=conn, free=[FreeParam("p", 150.0, 280.0)],
                      objective=Objective([AlphaPeakError(target_hz=10.5, window_s=1.0)]),
                      fixed={"coupling": 5.0}, **{k: v for k, v in RUN.items() if k != "model"})
    fr = fit(prob, method="de", generations=1, popsize=4, seed=0, client="sync", progress=False)
    twin = Twin.from_fit(prob, fr, name="fitted")
    path = twin.save(tmp_path / "fitted.zarr")
    back = Twin.load(path)
    assert back.connectome.content_hash() == conn.content_hash()
    assert back.fit["values"]["p"] == pytest.approx(fr.best["p"])
    assert back.fit["scores"]["alpha_peak_hz"] == pytest.approx(fr.scores["alpha_peak_hz"])
    assert back.fit["objective"][0]["term"] == "AlphaPeakError"
    out = back.simulate()
    ref = simulate(**prob.simulate_kwargs(fr.best_unit[None, :]))
    np.testing.assert_array_equal(out["v_pyr"].values, ref["v_pyr"].values)
    assert back.verify(out)


def test_loading_refuses_a_twin_whose_catalog_connectome_changed(tmp_path):
    res = simulate(connectome="tvb76", **RUN)
    path = Twin.from_result(res).save(tmp_path / "t.nc")
    ds = xr.load_dataset(path, engine="h5netcdf")
    meta = json.loads(ds.attrs["neurotwin"])
    meta["connectome"]["content_hash"] = "0" * 64
    ds.attrs["neurotwin"] = json.dumps(meta)
    ds.to_netcdf(tmp_path / "tampered.nc", engine="h5netcdf")
    with pytest.raises(TwinError, match="content hash .* the twin expects 000000"):
        Twin.load(tmp_path / "tampered.nc")
    with pytest.raises(TwinError, match="use a .nc"):
        Twin.from_result(res).save(tmp_path / "t.txt")
    with pytest.raises(TwinError, match="member 3 outside the batch"):
        Twin.from_result(res, member=3)


def test_cli_export_then_simulate_twin_reproduces_and_says_so(tmp_path, capsys):
    from neurotwin_dash.cli import main
    twin_path = tmp_path / "cli_twin.nc"
    assert main(["export", "--out", str(twin_path), "--model", "jansen_rit", "--connectome", "tvb76",
                 "--duration", "1.0", "--sample-rate", "250", "--set", "p=180", "--seed", "5",
                 "--name", "cli"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert Twin.load(twin_path).params["p"] == 180.0
    out = tmp_path / "rerun.nc"
    assert main(["simulate", "--twin", str(twin_path), "--out", str(out), "--no-progress"]) == 0
    assert "reproduces the exported run bit for bit" in capsys.readouterr().out
    ref = simulate("jansen_rit", "tvb76", duration_s=1.0, sample_rate_hz=250.0, params={"p": 180.0}, seed=5)
    np.testing.assert_array_equal(xr.load_dataset(out)["v_pyr"].values, ref["v_pyr"].values)


def test_cli_fit_writes_history_result_and_a_reproducible_twin(tmp_path, capsys):
    from neurotwin_dash.cli import main
    spec = tmp_path / "fit.yaml"
    spec.write_text(
        "problem: custom\nmodel: jansen_rit\nconnectome: null\nduration_s: 1.5\ntransient_s: 0.5\n"
        "sample_rate_hz: 250\nfree:\n  - {name: p, low: 120, high: 300}\n"
        "objective:\n  - {term: AlphaPeakError, target_hz: 9.0, window_s: 0.5, band: [5, 14]}\n"
        "method: de\ngenerations: 1\npopsize: 5\nseed: 0\n")
    out = tmp_path / "fitdir"
    assert main(["fit", str(spec), "--out", str(out), "--scheduler", "sync", "--no-progress"]) == 0
    assert "10 evaluations, 2 generation(s)" in capsys.readouterr().out   # 5 initial + 5
    summary = json.loads((out / "result.json").read_text())
    assert 120 <= summary["best"]["p"] <= 300 and "alpha_peak_hz" in summary["scores"]
    assert xr.load_dataset(out / "history.nc").sizes["evaluation"] == 10
    twin = Twin.load(out / "twin.nc")
    assert twin.verify()
    assert main(["export", "--fit", str(out), "--out", str(tmp_path / "again.zarr")]) == 0


def test_counter_noise_fit_spec_gives_a_twin_that_reproduces_with_that_generator(tmp_path):
    from neurotwin_dash.cli import main
    from neurotwin_dash.fit.specs import problem_from_spec
    text = ("problem: custom\nmodel: jansen_rit\nconnectome: null\nduration_s: 1.5\ntransient_s: 0.5\n"
            "sample_rate_hz: 250\nnoise_rng: counter\nfree:\n  - {name: p, low: 120, high: 300}\n"
            "objective:\n  - {term: AlphaPeakError, target_hz: 9.0, window_s: 0.5, band: [5, 14]}\n"
            "method: de\ngenerations: 1\npopsize: 4\nseed: 0\n")
    spec = tmp_path / "fit.yaml"
    spec.write_text(text)
    assert problem_from_spec(yaml.safe_load(text)).noise_rng == "counter"
    out = tmp_path / "fitdir"
    assert main(["fit", str(spec), "--out", str(out), "--scheduler", "sync", "--no-progress"]) == 0
    twin = Twin.load(out / "twin.nc")
    assert twin.simulation["noise_rng"] == "counter" and twin.verify()
    with pytest.raises(Exception, match="noise_rng"):
        problem_from_spec(yaml.safe_load(text.replace("noise_rng: counter", "noise_rng: philox")))


def test_twin_keeps_the_initial_state_mode_of_a_network_run(tmp_path):
    res = simulate(connectome="tvb76", params={"coupling": 2.0}, seed=5, initial="zeros", **RUN)
    assert res.attrs["initial"] == "zeros"
    twin = Twin.from_result(res)
    back = Twin.load(twin.save(tmp_path / "zeros.nc"))
    assert back.simulation["initial"] == "zeros"
    np.testing.assert_array_equal(back.simulate()["v_pyr"].values, res["v_pyr"].values)
    # the default (random) start is a different run, so the mode must travel with the twin
    assert not np.array_equal(simulate(connectome="tvb76", params={"coupling": 2.0}, seed=5, **RUN)["v_pyr"].values,
                              res["v_pyr"].values)
    given = simulate(connectome="tvb76", params={"coupling": 2.0}, seed=5,
                     initial=np.zeros(6), **RUN)
    with pytest.raises(TwinError, match="initial: the run started from a user-given state array"):
        Twin.from_result(given)
