"""Personal effective connectivity (fit_effective): fitted on the first half only, better than the
one-gain + regional-noise SAR model there, and exactly the zero-frequency response of a twin."""
import numpy as np
import pytest

from neurotwin_dash import catalog
from neurotwin_dash.fit import personal as P
from neurotwin_dash.twin import Twin


@pytest.fixture(scope="module")
def fitted():
    ds = catalog.load("gw:NAP_013")
    w = ds["weights"].values
    half = P.split_subject("gw:NAP_013")
    ec = P.fit_effective(w, half.train, penalties=(0.1,), maxiter=150)
    return w, half, ec


def test_effective_connectivity_fits_the_first_half_better_than_the_sar_model_and_predicts_the_second(fitted):
    w, half, ec = fitted
    lin = P.fit_linear(w, half.fc_train)
    fc = P.effective_fc(w, ec)
    assert ec.r_train == pytest.approx(P.heldout_scores(fc, P.SplitHalf("x", 2.0, half.test, half.train))["r"],
                                       abs=1e-9)
    # a wrong gradient would not climb: the extra per-edge freedom must raise the first-half r
    assert ec.r_train > lin.r_train + 0.05  # full budget: 0.61 → 0.76
    # and it generalises (measured 0.716 → 0.771 with the full budget; 150 iterations here: 0.73)
    sar = P.heldout_scores(P.baseline_fcs(w, half, linear_regional=lin)["linear_regional"], half)["r"]
    assert P.heldout_scores(fc, half)["r"] > sar + 0.01
    # symmetric, on the SC support, within its bounds; penalty chosen among the offered ones
    np.testing.assert_array_equal(ec.log_ratio, ec.log_ratio.T)
    assert np.all(ec.log_ratio[w == 0] == 0) and np.abs(ec.log_ratio).max() <= 5.0
    assert ec.penalty == 0.1 and set(ec.cv) == {0.1} and 0.5 < ec.cv[0.1] < ec.r_train
    a = ec.coupling(w)
    assert np.max(np.linalg.eigvalsh(a)) < 0.99


@pytest.mark.parametrize("regime", ["alpha", "excitatory"])
def test_twin_on_the_effective_weights_has_the_effective_model_as_zero_frequency_response(fitted, regime):
    w, _, ec = fitted
    e, lin = ec.linear(w)
    assert np.max(np.abs(np.linalg.eigvalsh(e))) == pytest.approx(1.0)
    target = P.effective_fc(w, ec)
    x_star = P.REGIMES[regime].x_grid[1]
    p = P.twin_from_linear(e, lin, 0.01, x_star, regime)
    fc = P.linearized_fc(e, p["coupling"], p["x_ext"], p["noise_sd"], x_star, regime)
    np.testing.assert_allclose(fc, target, atol=1e-9)
    # the structural weights with the same gain and noise are a different model
    ps = P.twin_from_linear(w, lin, 0.01, x_star, regime)
    sc = P.linearized_fc(w / np.max(np.abs(np.linalg.eigvals(w))), ps["coupling"], ps["x_ext"], ps["noise_sd"],
                         x_star, regime)
    assert np.nanmax(np.abs(sc - target)) > 0.05


def test_fit_effective_refuses_short_or_misshapen_bold_and_bad_penalties():
    w = catalog.load("gw:NAP_013")["weights"].values
    with pytest.raises(P.PersonalError, match=r"bold_train must be \(94, ≥ 40 frames\)"):
        P.fit_effective(w, np.ones((94, 30)))
    with pytest.raises(P.PersonalError, match="penalties"):
        P.fit_effective(w, np.random.default_rng(0).normal(size=(94, 60)), penalties=(-1.0,))


def test_quick_personalize_with_effective_coupling_writes_a_twin_on_the_effective_weights(tmp_path, monkeypatch):
    st = P.PersonalSettings.quick()
    st.coupling, st.ec_maxiter = "effective", 25
    others = {"gw:NAP_001": P.fc_matrix(catalog.load("gw:NAP_001")["bold"].values)}
    seen = []                                       # the FC the gain margin is chosen on
    real = P.gain_margin
    monkeypatch.setattr(P, "gain_margin", lambda w, lin, fc, *a: seen.append(np.array(fc)) or real(w, lin, fc, *a))
    out = P.personalize("gw:NAP_013", st, others_fc=others)
    assert len(seen) == 1 and np.array_equal(seen[0], out["half"].fc_train)        # first half only
    assert not np.allclose(seen[0], out["half"].fc_test)
    paths = P.write_personal(out, tmp_path / "nap013")
    twin = Twin.load(paths["twin.nc"])
    ds = catalog.load("gw:NAP_013")
    meta = twin.fit
    assert meta["coupling"] == "effective" and meta["sc_hash"] == P.subject_connectome(ds).content_hash()
    assert meta["connectome_hash"] == twin.connectome.content_hash() != meta["sc_hash"]
    w = twin.connectome.weights
    np.testing.assert_allclose(w, w.T)                              # symmetric effective weights
    assert np.all((w > 0) == (ds["weights"].values > 0))           # on the SC support
    assert np.max(np.abs(np.linalg.eigvalsh(w))) == pytest.approx(1.0)
    np.testing.assert_array_equal(twin.connectome.tract_lengths, ds["tract_lengths"].values)  # own delays
    assert "linear_effective" in meta["baselines"] and -1 < meta["heldout"]["r"] < 1
    # the gain margin (default on for the effective twin), chosen on the first half
    m = meta["effective"]["margin"]
    assert m["limit"] == st.robust_drop == 0.05 and (m["met"] or m["cap"] == min(st.gain_caps))
    assert m["drop"] == pytest.approx(meta["linear"]["operating_point_drops"][f"{meta['linear']['operating_point']:g}"])
    assert m["cap"] is None or meta["linear"]["gain"] <= m["cap"] + 1e-12
    assert twin.verify()                                            # bit for bit


def test_unknown_coupling_is_refused():
    st = P.PersonalSettings.quick()
    st.coupling = "learned"
    with pytest.raises(P.PersonalError, match="coupling must be 'structural' or 'effective'"):
        P.personalize("gw:NAP_013", st, others_fc={})


def test_gain_margin_is_chosen_on_the_first_half_and_flattens_the_linearised_twin(fitted):
    w, half, ec = fitted
    e, lin = ec.linear(w)
    fc1 = half.fc_train
    lin_c, xs, drops, rec = P.gain_margin(e, lin, fc1, limit=0.05)
    caps = sorted(P.GAIN_CAPS, reverse=True)
    assert rec["limit"] == 0.05 and list(rec["tried"])[0] == "none"
    # the caps are tried largest first and stop at the first that meets the limit (or the smallest)
    tried = [float(k) for k in list(rec["tried"])[1:]]
    assert tried == caps[:len(tried)]
    assert rec["met"] == (rec["drop"] <= 0.05)
    assert rec["met"] or rec["cap"] == min(P.GAIN_CAPS)
    if rec["cap"] is None:
        assert lin_c is lin and rec["tried"]["none"]["drop"] <= 0.05
    else:
        assert rec["tried"]["none"]["drop"] > 0.05 and lin_c.gain <= rec["cap"] + 1e-12
        assert all(v["drop"] > 0.05 for k, v in rec["tried"].items() if k not in ("none", f"{rec['cap']:g}"))
    # the recorded drop is the chosen linearised twin's first-half drop at ±5 % coupling, at its x*
    p = P.twin_from_linear(e, lin_c, 1.0, xs)
    rs = [P._r(P.linearized_fc(e, p["coupling"] * f, p["x_ext"], p["noise_sd"], xs), fc1) for f in (0.95, 1, 1.05)]
    assert rec["drop"] == pytest.approx(rs[1] - min(rs), abs=1e-9) == pytest.approx(drops[xs], abs=1e-9)
    # only the first half is used: the same call on the same data gives the same choice
    assert P.gain_margin(e, lin, fc1, limit=0.05)[3] == rec
    # a limit nothing can miss keeps the uncapped fit; one nothing can meet takes the smallest cap
    assert P.gain_margin(e, lin, fc1, limit=1.0)[3]["cap"] is None
    worst = P.gain_margin(e, lin, fc1, caps=(0.95, 0.9), limit=-1.0)[3]
    assert worst["cap"] == 0.9 and not worst["met"] and set(worst["tried"]) == {"none", "0.95", "0.9"}


def test_simulated_robustness_check_reads_only_the_first_half_and_tries_the_candidates_in_order(monkeypatch):
    import copy
    import dataclasses
    st = P.PersonalSettings.quick()
    st.coupling, st.ec_maxiter = "effective", 25
    others = {"gw:NAP_001": P.fc_matrix(catalog.load("gw:NAP_001")["bold"].values)}
    seen = {}
    real = P.robust_selection

    def spy(*args):
        seen["args"], seen["margin"] = args, copy.deepcopy(args[4])
        return real(*args)
    monkeypatch.setattr(P, "robust_selection", spy)
    out = P.personalize("gw:NAP_013", st, others_fc=others)
    meta = out["twin"].fit
    m = meta["effective"]["margin"]
    tries = m["simulated"]
    assert tries[0]["source"] == "fit" and tries[0]["coupling"] == pytest.approx(seen["args"][9]["coupling"])
    last = tries[-1]                                   # the twin is the last candidate simulated
    assert m["met_simulated"] == (last["train_drop"] <= st.robust_drop)
    assert all(t["train_drop"] > st.robust_drop for t in tries[:-1])
    assert out["scores"]["train_r"] == pytest.approx(last["train_r"], abs=1e-12)
    assert meta["values"]["coupling"] == pytest.approx(last["coupling"])
    assert m["cap"] == last["cap"] and meta["linear"]["gain"] == pytest.approx(last["gain"])
    assert out["twin"].verify()                        # bit for bit, the chosen candidate's run
    # every try records the data-free bound (default criterion: the first-half drop); it bounds the
    # drop against the first half and, for the chosen twin, against the held-out half
    assert m["criterion"] == "first_half" and all(t["bound"] >= t["train_drop"] - 1e-12 for t in tries)
    assert last["bound"] >= out["scores"]["robustness_drop"] - 1e-12
    # a limit nothing meets walks every candidate in order: the fit, the linear mapping's coupling,
    # then each smaller cap; the same choices when the held-out half is garbage (never read)
    args = list(seen["args"])
    args[3] = dataclasses.replace(args[3], robust_drop=-1.0)
    runs = []
    for half in (args[2], dataclasses.replace(args[2], test=np.full_like(args[2].test, np.nan))):
        margin = copy.deepcopy(seen["margin"])
        real(*args[:2], half, args[3], margin, *args[5:])
        runs.append(margin)
    assert runs[0]["simulated"] == runs[1]["simulated"]
    assert all(t["bound"] >= t["train_drop"] - 1e-12 for t in runs[0]["simulated"])
    cap0 = seen["margin"]["cap"]
    smaller = [c for c in sorted(st.gain_caps, reverse=True) if cap0 is None or c < cap0]
    assert [t["source"] for t in runs[0]["simulated"]] == ["fit", "linear mapping"] + ["cap"] * len(smaller)
    assert [t["cap"] for t in runs[0]["simulated"][2:]] == smaller
    assert runs[0]["cap"] == (smaller[-1] if smaller else cap0) and not runs[0]["met_simulated"]
    lm = runs[0]["simulated"][1]
    assert lm["cap"] == cap0 and lm["coupling"] == pytest.approx(P.coupling_for_gain(lm["gain"], lm["x_star"], st.regime))


def _sym(v, n):
    """Symmetric FC-like matrix (unit diagonal) with upper triangle ``v``."""
    m = np.zeros((n, n))
    m[np.triu_indices(n, 1)] = v
    return m + m.T + np.eye(n)


def test_drop_bound_bounds_the_r_drop_against_any_target_and_is_attained():
    rng = np.random.default_rng(7)
    n = 20
    k = n * (n - 1) // 2
    for _ in range(30):
        a = rng.normal(size=k)
        bs = [a + rng.uniform(0.01, 1.0) * rng.normal(size=k) for _ in range(2)]
        fa, fbs = _sym(a, n), [_sym(b, n) for b in bs]
        bound = P.drop_bound(fa, fbs)
        assert bound == pytest.approx(max(np.sqrt(2 * (1 - P._r(fa, fb))) for fb in fbs), abs=1e-12)
        unit = [(v - v.mean()) / np.linalg.norm(v - v.mean()) for v in [a] + bs]
        worst = max(unit[1:], key=lambda u: np.linalg.norm(unit[0] - u))
        targets = [rng.normal(size=k) for _ in range(50)]                       # unrelated FCs
        targets += [a + s * rng.normal(size=k) for s in (0.1, 0.5, 2.0)]       # FCs the twin fits
        targets += [unit[0] - worst]                                            # the worst case
        drops = [P._r(fa, _sym(h, n)) - min(P._r(fb, _sym(h, n)) for fb in fbs) for h in targets]
        assert max(drops) <= bound + 1e-12
        assert drops[-1] == pytest.approx(bound, abs=1e-9)                      # the bound is tight
    assert P.drop_bound(fa, []) == 0.0 and P.drop_bound(fa, [fa]) == pytest.approx(0.0, abs=1e-7)


def test_bound_criterion_picks_the_first_candidate_whose_bound_meets_the_limit(monkeypatch):
    """Synthetic runs (no simulation): the fitted twin's ±5 % FCs move orthogonally to the first-half
    FC, so its first-half drop is small while its bound (the drop against some other FC) is not."""
    import types
    rng = np.random.default_rng(3)
    n = 30
    k = n * (n - 1) // 2

    def centred(v):
        return v - v.mean()
    h = centred(rng.normal(size=k))                              # first-half FC
    a = centred(h + rng.normal(size=k))                          # twin FC at 1 × K, r ≈ 0.7 with h
    u = centred(rng.normal(size=k))
    e_h = h / np.linalg.norm(h)
    e_a = centred(a - (a @ e_h) * e_h)
    e_a /= np.linalg.norm(e_a)
    for b in (e_h, e_a):                                         # u ⟂ h, a (and the constant)
        u -= (u @ b) * b
    u /= np.linalg.norm(u)
    scales = [0.2, 0.1, 0.03, 0.02, 0.015, 0.01, 0.005]          # ±5 % change per candidate, × ‖a‖
    runs = [(None, None, None, [_sym(a + sgn * s * np.linalg.norm(a) * u, n) if sgn else _sym(a, n)
                                for sgn in (-1, 0, 1)]) for s in scales]
    fc1 = _sym(h, n)
    bounds = [P.drop_bound(r[3][1], [r[3][0], r[3][2]]) for r in runs]
    first_half = [P._r(r[3][1], fc1) - min(P._r(fc, fc1) for fc in r[3]) for r in runs]
    limit = 0.05
    assert bounds[0] > bounds[1] > limit >= bounds[2] and first_half[0] < limit   # the premise

    class Problem:
        duration_s = 60.0

        def encode(self, values):
            return np.array([values["coupling"]])
    calls = iter(runs[1:])
    monkeypatch.setattr(P, "_factor_run", lambda *a, **kw: next(calls))
    monkeypatch.setattr(P, "fit_linear", lambda w, fc, per_region=True, max_gain=None:
                        P.LinearFit(gain=max_gain, noise_var=np.ones(n), r_train=0.5))
    monkeypatch.setattr(P, "choose_operating_point", lambda *a, **kw: (0.25, {0.25: 0.01}))
    monkeypatch.setattr(P, "_personal_problem", lambda *a, **kw: Problem())
    half = types.SimpleNamespace(fc_train=fc1, tr_s=1.0)     # no held-out half to read
    st = P.PersonalSettings(coupling="effective", robust_criterion="bound")
    lin = P.LinearFit(gain=0.97, noise_var=np.ones(n), r_train=0.5)
    margin = {"limit": limit, "cap": None, "drop": 0.01, "met": True}
    args = (np.eye(n), None, half, st, margin, lin, 0.25, {0.25: 0.01}, Problem(), {"coupling": 1.0}, runs[0],
            np.array([0.95, 1.0, 1.05]), 60.0)
    out = P.robust_selection(*args)
    tries = margin["simulated"]
    assert [t["bound"] for t in tries] == pytest.approx(bounds[:3], abs=1e-12)
    assert [t["source"] for t in tries] == ["fit", "linear mapping", "cap"] and tries[2]["cap"] == max(P.GAIN_CAPS)
    assert out[5] is runs[2] and margin["cap"] == max(P.GAIN_CAPS) and margin["met_simulated"]
    assert margin["criterion"] == "bound"
    assert [t["train_drop"] for t in tries] == pytest.approx(first_half[:3], abs=1e-12)
    # the default criterion stops at the fitted twin: its first-half drop is within the limit
    calls = iter(runs[1:])
    margin = {"limit": limit, "cap": None, "drop": 0.01, "met": True}
    P.robust_selection(*args[:3], P.PersonalSettings(coupling="effective"), margin, *args[5:])
    assert len(margin["simulated"]) == 1 and margin["criterion"] == "first_half" and margin["met_simulated"]
    assert margin["simulated"][0]["bound"] == pytest.approx(bounds[0], abs=1e-12)


def test_unknown_robust_criterion_is_refused():
    with pytest.raises(P.PersonalError, match=r"robust_criterion must be one of 'first_half', 'bound', got 'held_out'"):
        P.PersonalSettings(robust_criterion="held_out")
    st = P.PersonalSettings.quick()
    st.robust_criterion = "second_half"                 # set after construction: refused before any work
    with pytest.raises(P.PersonalError, match="robust_criterion must be one of"):
        P.personalize("gw:NAP_013", st, others_fc={})


def test_effective_objective_gradient_matches_finite_differences():
    # a small network (12 regions, a sparse symmetric SC) so every derivative can be checked
    rng = np.random.default_rng(3)
    n = 12
    w = rng.uniform(0.1, 1.0, (n, n)) * (rng.uniform(size=(n, n)) < 0.6)
    w = np.triu(w, 1) + np.triu(w, 1).T
    w = P._spectral(w)
    m = len(np.nonzero(np.triu(w > 0, 1))[0])
    x = rng.normal(size=(n, 200))
    fc = np.corrcoef(x + 0.5 * x[rng.permutation(n)])
    theta = np.concatenate([[0.7], 0.3 * rng.normal(size=n), 0.4 * rng.normal(size=m)])
    f, grad = P._effective_objective(theta, w, fc, 0.1)
    h = 1e-6
    num = np.array([(P._effective_objective(theta + h * np.eye(len(theta))[k], w, fc, 0.1)[0]
                     - P._effective_objective(theta - h * np.eye(len(theta))[k], w, fc, 0.1)[0]) / (2 * h)
                    for k in range(len(theta))])
    np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-8)
    # the gain is the spectral radius of A whatever Δ is
    g, d, delta = P._ec_unpack(theta, w)
    fit = P.EffectiveFit(g, d / d.mean(), delta, 0.1, 0.0, {})
    assert np.max(np.abs(np.linalg.eigvalsh(fit.coupling(w)))) == pytest.approx(0.7)


def test_refit_under_a_cap_keeps_the_gain_below_it_and_fits_better_than_capping_the_noise_alone(fitted):
    w, half, ec = fitted
    fc1 = half.fc_train
    capped = P.refit_effective(w, fc1, ec, 0.7, maxiter=150)
    assert capped.gain <= 0.7 + 1e-12 and capped.max_gain == 0.7 and capped.penalty == ec.penalty
    assert np.max(np.abs(np.linalg.eigvalsh(capped.coupling(w)))) <= 0.7 + 1e-9
    np.testing.assert_array_equal(capped.log_ratio, capped.log_ratio.T)
    assert np.all(capped.log_ratio[w == 0] == 0)
    assert capped.r_train == pytest.approx(P._r(P.effective_fc(w, capped), fc1), abs=1e-12)
    # the weights' pattern makes up for the lower gain: better on the first half than the same
    # cap with the uncapped weights kept and only the noise variances refitted
    e, _ = ec.linear(w)
    noise_only = P.fit_linear(e, fc1, max_gain=0.7)
    assert capped.r_train > noise_only.r_train + 0.01
    with pytest.raises(P.PersonalError, match=r"max_gain must be in \(0, 1\)"):
        P.refit_effective(w, fc1, ec, 1.0)


def test_linearized_bound_bounds_the_linearised_drop_against_any_fc_and_drives_the_bound_margin(fitted):
    w, half, ec = fitted
    e, lin = ec.linear(w)
    xs = P.OPERATING_POINT
    bound = P.linearized_bound(e, lin, xs)
    p = P.twin_from_linear(e, lin, 1.0, xs)
    fcs = [P.linearized_fc(e, p["coupling"] * f, p["x_ext"], p["noise_sd"], xs) for f in (0.95, 1, 1.05)]
    for target in (half.fc_train, half.fc_test, fcs[1], np.eye(94) + 0.1):
        rs = [P._r(fc, target) for fc in fcs]
        assert rs[1] - min(rs) <= bound + 1e-12
    # with criterion="bound" the caps are walked until the linearised bound is within the limit
    fits = {}

    def refit(cap):
        fits[cap] = P.refit_effective(w, half.fc_train, ec, cap, maxiter=60)
        return fits[cap].linear(w)

    lin_c, x_c, _, rec = P.gain_margin(e, lin, half.fc_train, caps=(0.9, 0.7), limit=0.05, refit=refit,
                                       criterion="bound")
    assert all("bound" in v for v in rec["tried"].values())
    assert rec["met"] == (rec["bound"] <= 0.05)
    if rec["cap"] is not None:
        assert rec["tried"]["none"]["bound"] > 0.05 and lin_c.gain == pytest.approx(fits[rec["cap"]].gain)
        assert rec["bound"] == pytest.approx(P.linearized_bound(fits[rec["cap"]].linear(w)[0], lin_c, x_c), abs=1e-12)
    with pytest.raises(P.PersonalError, match="robust_criterion"):
        P.gain_margin(e, lin, half.fc_train, criterion="held_out")
