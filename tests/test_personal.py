"""Personal twins: per-subject catalog entries, split-half evaluation, baselines, twin round trip."""
import json
import subprocess
import sys

import numpy as np
import pytest

from neurotwin_dash import catalog
from neurotwin_dash.fit import personal as P
from neurotwin_dash.twin import Twin, read_metadata

HCP = ["101309", "102311", "102816", "131217", "211619", "213522", "377451"]
GW = ["NAP_001", "NAP_002", "NAP_007", "NAP_009", "NAP_013"]


def test_twelve_subject_entries_load_with_own_matrices_bold_and_labels():
    names = catalog.names("subject")
    assert names == [f"hcp:{s}" for s in HCP] + [f"gw:{s}" for s in GW]
    first_labels, weights = None, []
    for name in names:
        ds = catalog.load(name)
        e = catalog.describe(name)
        n, frames = e["regions"], e["frames"]
        assert ds["weights"].shape == ds["tract_lengths"].shape == (n, n) == (94, 94)
        assert ds["bold"].shape == (94, frames) and ds["centres"].shape == (94, 3)
        for v in ("weights", "tract_lengths", "bold", "centres"):
            assert np.isfinite(ds[v].values).all(), (name, v)
        w = ds["weights"].values
        np.testing.assert_array_equal(w, w.T)                       # gw symmetrised, hcp as shipped
        assert (w >= 0).all() and np.count_nonzero(w) > 0.9 * 94 * 93
        assert ds.attrs["tr_s"] == (0.72 if name.startswith("hcp") else 2.0)
        labels = [str(s) for s in ds["region"].values]
        assert len(set(labels)) == 94 and labels[0] == "Precentral_L" and labels[80] == "Thalamus_L"
        first_labels = first_labels or labels
        assert labels == first_labels
        weights.append(w / w.max())
    # each subject has its own connectome (not the group matrix)
    assert min(np.abs(a - b).max() for i, a in enumerate(weights) for b in weights[i + 1:]) > 0.01
    assert catalog.load("gw:NAP_001").attrs["symmetrised"] == 1


def test_split_half_fc_comes_from_the_subjects_own_two_halves():
    bold = catalog.load("hcp:102311")["bold"].values
    half = P.split_subject("hcp:102311")
    assert half.frames == 600 and half.tr_s == 0.72
    np.testing.assert_array_equal(half.train, bold[:, :600])
    np.testing.assert_array_equal(half.test, bold[:, 600:])
    np.testing.assert_allclose(half.fc_test, np.corrcoef(bold[:, 600:]), atol=1e-12)
    np.testing.assert_allclose(half.fc_train, np.corrcoef(bold[:, :600]), atol=1e-12)
    # the halves are different samples of the same subject: similar, not identical
    r = np.corrcoef(half.fc_train[np.triu_indices(94, 1)], half.fc_test[np.triu_indices(94, 1)])[0, 1]
    assert 0.9 < r < 0.99
    gw = P.split_subject("gw:NAP_001")
    assert gw.frames == 177 and gw.tr_s == 2.0


def test_split_refuses_bold_shorter_than_two_hundred_frames():
    with pytest.raises(P.PersonalError, match=r"199 frames; .* at least 200 \(2 × 100 TRs"):
        P.split_halves(np.ones((94, 199)))
    a, b = P.split_halves(np.arange(2 * 201).reshape(2, 201))
    assert a.shape == b.shape == (2, 100)


def test_unknown_subject_lists_the_available_ones():
    with pytest.raises(P.PersonalError, match=r"subject 'hcp:999' unknown; available subjects: hcp:101309, .*gw:NAP_013"):
        P.load_subject("hcp:999")
    proc = subprocess.run([sys.executable, "-m", "neurotwin_dash.cli", "personalize", "--subject", "hcp:999",
                           "--out", "unused"], capture_output=True, text=True)
    assert proc.returncode == 2 and "available subjects: hcp:101309" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_baselines_are_fitted_on_the_first_half_and_scored_on_the_second():
    ds = catalog.load("hcp:101309")
    w = ds["weights"].values
    half = P.split_subject("hcp:101309")
    other = {s: P.fc_matrix(catalog.load(s)["bold"].values) for s in ("hcp:102311", "hcp:102816")}
    lin_g = P.fit_linear(w, half.fc_train, per_region=False)
    lin = P.fit_linear(w, half.fc_train, per_region=True, maxiter=150)
    fcs = P.baseline_fcs(w, half, list(other.values()), linear_global=lin_g, linear_regional=lin)
    scores = P.baselines(w, half, list(other.values()), linear_global=lin_g, linear_regional=lin)
    iu = np.triu_indices(94, 1)
    for name, fc in fcs.items():          # every score is against the held-out half
        assert scores[name]["r"] == pytest.approx(np.corrcoef(fc[iu], half.fc_test[iu])[0, 1], abs=1e-12)
    logsc = np.log(w / w.max() + 1e-4)
    assert scores["log_sc"]["r"] == pytest.approx(np.corrcoef(logsc[iu], half.fc_test[iu])[0, 1], abs=1e-12)
    np.testing.assert_allclose(fcs["group_others"], np.mean(list(other.values()), axis=0))
    # the regression and the linear models only see the first half: a changed second half changes
    # no prediction
    swapped = P.SplitHalf(half.subject, half.tr_s, half.train, half.train[:, ::-1].copy())
    again = P.baseline_fcs(w, swapped, linear_global=lin_g, linear_regional=lin)
    np.testing.assert_array_equal(again["regression"], fcs["regression"])
    # per-region noise variances are what makes the linear model personal (SCIENCE: 0.50 → 0.84)
    assert lin.r_train > lin_g.r_train + 0.2
    assert scores["linear_regional"]["r"] > scores["linear_global"]["r"] + 0.15
    assert scores["linear_regional"]["r"] > 0.8
    ws = w / np.max(np.abs(np.linalg.eigvals(w)))
    assert P.heldout_scores(P.linear_fc(ws, lin.gain, lin.noise_var), half)["r"] == \
        pytest.approx(scores["linear_regional"]["r"])


def test_quick_personalize_writes_a_twin_that_reloads_and_reproduces_its_run(tmp_path):
    st = P.PersonalSettings.quick()
    others = {"hcp:102311": P.fc_matrix(catalog.load("hcp:102311")["bold"].values)}
    out = P.personalize("hcp:101309", st, others_fc=others)
    paths = P.write_personal(out, tmp_path / "hcp_101309")
    assert sorted(p.name for p in paths.values()) == sorted(P.OUTPUT_FILES)
    meta = read_metadata(paths["twin.nc"])
    conn = P.subject_connectome(catalog.load("hcp:101309"))
    assert meta["fit"]["subject"] == "hcp:101309"
    assert meta["fit"]["connectome_hash"] == conn.content_hash() == meta["connectome"]["content_hash"]
    assert set(meta["fit"]["baselines"]) == {"log_sc", "strength", "regression", "linear_global",
                                             "linear_regional", "group_others"}
    assert meta["fit"]["data"]["frames_per_half"] == 120
    h = meta["fit"]["heldout"]
    assert -1 < h["r"] < 1 and 0 <= h["fcd_ks"] <= 1 and np.isfinite(h["mean_fc_error"])
    twin = Twin.load(paths["twin.nc"])
    np.testing.assert_array_equal(twin.connectome.weights, conn.weights)
    assert twin.params["noise_sd"].shape == (94,) and twin.params["x_ext"].shape == (94,)
    assert twin.verify()                                    # bit for bit
    summary = json.loads(paths["scores.json"].read_text())
    assert summary["heldout"]["r"] == pytest.approx(out["scores"]["r"])
    with pytest.raises(Exception, match="--overwrite"):
        P.write_personal(out, tmp_path / "hcp_101309")
    # a loop over subjects resumes: a finished subject folder is read back, not fitted again
    logs = []
    again = P.personalize_all(["hcp:101309"], tmp_path, st, log=logs.append)
    assert "read back" in logs[0] and again["subjects"]["hcp:101309"]["heldout"] == summary["heldout"]


def test_identifiability_ranks_each_twin_among_all_held_out_subjects():
    rng = np.random.default_rng(0)
    base = {s: np.corrcoef(rng.standard_normal((12, 40))) for s in "abcd"}
    held = {s: 0.9 * m + 0.1 * np.corrcoef(rng.standard_normal((12, 40))) for s, m in base.items()}
    twins = {"a": base["a"], "b": base["c"]}                 # twin b looks like subject c
    mat = P.identifiability(twins, held)
    assert mat.shape == (2, 4) and list(mat["subject"].values) == list("abcd")
    iu = np.triu_indices(12, 1)
    assert float(mat.sel(twin="b", subject="d")) == pytest.approx(
        np.corrcoef(base["c"][iu], held["d"][iu])[0, 1])
    assert P.own_ranks(mat) == {"a": 1, "b": 2}


def test_personalize_cli_passes_node_coupling_and_robustness_criterion_to_the_fit(tmp_path, monkeypatch):
    from neurotwin_dash import cli
    seen = {}

    def fake(subject, settings, **kw):
        seen["subject"], seen["settings"] = subject, settings
        raise SystemExit(0)                      # stop before writing: only the mapping is under test

    monkeypatch.setattr(P, "personalize", fake)
    with pytest.raises(SystemExit):
        cli.main(["personalize", "--subject", "gw:NAP_013", "--out", str(tmp_path / "t"), "--coupling", "effective",
                  "--robust-criterion", "bound", "--regime", "excitatory"])
    st = seen["settings"]
    assert seen["subject"] == "gw:NAP_013"
    assert (st.coupling, st.robust_criterion, st.regime, st.refit_weights) == ("effective", "bound", "excitatory", True)
    assert not (tmp_path / "t").exists()
