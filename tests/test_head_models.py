"""Head models (docs/science.md §10): electrodes on the scalp, the sphere against an analytic
four-shell series, the offline template BEM, and bad input."""
import os
import socket

import mne
import numpy as np
import pytest

from neurotwin_dash.observe import forward, heads
from neurotwin_dash.stimulation import Montage, efield


# --- an independent four-shell solution (de Munck & Peters 1993; Zhang 1995) -------------------

def legendre(nmax, u):
    """P_n(u) and dP_n/du for n = 0..nmax."""
    P, dP = np.zeros(nmax + 1), np.zeros(nmax + 1)
    P[0], P[1], dP[1] = 1.0, u, 1.0
    for n in range(1, nmax):
        P[n + 1] = ((2 * n + 1) * u * P[n] - n * P[n - 1]) / (n + 1)
        dP[n + 1] = dP[n - 1] + (2 * n + 1) * P[n]
    return P, dP


def transfer(n, radii, sigmas):
    """Surface potential of degree n over the infinite-medium potential of that degree.

    In shell j the potential of degree n is A_j r^n + B_j r^-(n+1); in the source shell B is the
    dipole's own term (1). Potential and normal current are continuous at each interface and the
    normal current vanishes at the outer surface. Radii relative to the outer one.
    """
    def M(r, s):
        return np.array([[r ** n, r ** (-n - 1)], [s * n * r ** (n - 1), -s * (n + 1) * r ** (-n - 2)]])
    T = np.eye(2)
    for j in range(len(radii) - 1):
        T = np.linalg.solve(M(radii[j], sigmas[j + 1]), M(radii[j], sigmas[j])) @ T
    R = radii[-1]
    row = np.array([n * R ** (n - 1), -(n + 1) * R ** (-n - 2)]) @ T
    A, B = T @ np.array([-row[1] / row[0], 1.0])
    return (A * R ** n + B * R ** (-n - 1)) * R ** (n + 1)


def infinite_term(n, b, R, u, P, dP, pr, pe, sigma):
    """Degree-n term of p·∇_r0 (1/|r - r0|) / (4πσ) at |r| = R (r0 at radius b, cos angle u)."""
    return (b / R) ** (n - 1) / (4 * np.pi * sigma * R ** 2) * (n * P[n] * pr + dP[n] * (pe - u * pr))


def shell_potential(electrodes, r0, p, centre, radii, sigmas, nmax=600, f=None):
    """Potential (V) at electrodes on the outer sphere of a dipole p (A·m) at r0 in the inner shell."""
    R = radii[-1]
    f = [transfer(n, np.asarray(radii) / R, sigmas) for n in range(1, nmax + 1)] if f is None else f
    b = np.linalg.norm(r0 - centre)
    b0 = (r0 - centre) / b
    out = []
    for e in electrodes:
        rhat = (e - centre) / np.linalg.norm(e - centre)
        u = float(np.clip(rhat @ b0, -1.0, 1.0))
        P, dP = legendre(len(f) + 1, u)
        terms = np.array([f[n - 1] * infinite_term(n, b, R, u, P, dP, p @ b0, p @ rhat, sigmas[0])
                          for n in range(1, len(f) + 1)])
        assert abs(terms[-1]) < 1e-12 * abs(terms.sum()) + 1e-30      # the series has converged
        out.append(terms.sum())
    return np.array(out)


def test_the_series_reproduces_a_point_dipole_in_an_infinite_medium():
    """With every transfer factor 1 the series is the Legendre expansion of p·(r−r0)/(4πσ|r−r0|³)."""
    rng = np.random.default_rng(1)
    centre, R, sigma = np.zeros(3), 0.1, 0.33
    for b in (0.01, 0.05, 0.08):
        r0 = rng.standard_normal(3)
        r0 *= b / np.linalg.norm(r0)
        p = rng.standard_normal(3)
        el = rng.standard_normal((6, 3))
        el *= R / np.linalg.norm(el, axis=1, keepdims=True)
        d = el - r0
        exact = d @ p / (4 * np.pi * sigma * np.linalg.norm(d, axis=1) ** 3)
        series = shell_potential(el, r0, p, centre, [R], [sigma], nmax=400, f=[1.0] * 400)
        np.testing.assert_allclose(series, exact, rtol=1e-9)
    # a homogeneous sphere doubles-and-more the surface potential: f_n = (2n+1)/n
    assert transfer(3, [0.5, 1.0], [1.0, 1.0]) == pytest.approx(7 / 3)


@pytest.fixture(scope="module")
def sphere_fwd():
    return forward.forward_model("tvb76", "standard_1020")


def test_sphere_lead_field_matches_the_four_shell_series(sphere_fwd):
    c = np.asarray(sphere_fwd.attrs["sphere_r0_m"])
    radii, sig = sphere_fwd.attrs["sphere_radii_m"], sphere_fwd.attrs["sphere_sigmas_S_m"]
    assert sig == [0.33, 1.0, 0.004, 0.33]
    el = sphere_fwd["sensor_position"].values
    names = list(sphere_fwd.sensor.values)
    f = [transfer(n, np.asarray(radii) / radii[-1], sig) for n in range(1, 601)]
    rr, dirs = [], []
    # dipoles under T7, T8, O1, Fpz and Cz at depths 10-80 mm below the brain surface
    for ch, depth_mm in (("T7", 10), ("T7", 80), ("T8", 30), ("O1", 10), ("O1", 50), ("Fpz", 20),
                         ("Fpz", 80), ("Cz", 60)):
        u = el[names.index(ch)] - c
        u /= np.linalg.norm(u)
        rr.append(c + u * (radii[0] - depth_mm / 1000.0))
        tan = np.cross(u, [0.0, 0.0, 1.0] if abs(u[2]) < 0.9 else [1.0, 0.0, 0.0])
        dirs.append((u, tan / np.linalg.norm(tan)))
    G = forward.gain_at_positions(np.array(rr), "standard_1020").values
    errs = []
    for i, (pos, (rad, tan)) in enumerate(zip(rr, dirs)):
        for p in (rad, tan):
            exact = shell_potential(el, pos, p, c, radii, sig, f=f)
            errs.append(np.linalg.norm(G[:, i, :] @ p - exact) / np.linalg.norm(exact))
    print(f"max relative error {max(errs):.4f} over {len(errs)} dipoles")
    assert max(errs) <= 0.01, errs
    assert len(errs) >= 16


def test_electrodes_are_projected_onto_the_scalp_sphere(sphere_fwd):
    c = np.asarray(sphere_fwd.attrs["sphere_r0_m"])
    scalp = max(sphere_fwd.attrs["sphere_radii_m"])
    r = np.linalg.norm(sphere_fwd["sensor_position"].values - c, axis=1)
    assert np.abs(r - scalp).max() < 1e-4                           # < 0.1 mm
    # the reported distances are how far the template positions were from the scalp sphere
    info = forward.montage_info("standard_1020")
    raw = np.array([ch["loc"][:3] for ch in info["chs"]])
    np.testing.assert_allclose(sphere_fwd["electrode_moved_mm"].values,
                               np.abs(np.linalg.norm(raw - c, axis=1) - scalp) * 1000, atol=1e-9)
    assert float(sphere_fwd["electrode_moved_mm"].sel(sensor="T7")) > 10      # T7 sat inside the brain shell
    assert sphere_fwd.attrs["electrode_projection"] == "radially onto the scalp sphere"


def test_t7_t8_field_on_the_sphere_is_in_range_linear_and_reverses_with_polarity():
    fields = efield.electrode_fields("tvb76")
    assert fields.attrs["conductivity_S_m"] == [0.33, 1.65, 0.01, 0.43]   # the tES set is the default
    m = efield.montage_field(Montage.bipolar("T7", "T8", 1.0), fields)
    med = float(np.median(m["E_mag"].values))
    assert 0.09 <= med <= 0.14, med                                       # measured 0.117 V/m
    assert float(m["E_mag"].max()) < 0.3
    rev = efield.montage_field(Montage.bipolar("T8", "T7", 1.0), fields)
    np.testing.assert_allclose(rev["E"].values, -m["E"].values, atol=1e-12)
    two = efield.montage_field(Montage.bipolar("T7", "T8", 2.0), fields)
    np.testing.assert_allclose(two["E"].values, 2 * m["E"].values, rtol=1e-12, atol=1e-14)
    a = efield.montage_field(Montage.bipolar("F3", "F4", 1.0), fields)["E"].values
    b = efield.montage_field(Montage.bipolar("O1", "Fz", 1.0), fields)["E"].values
    both = efield.montage_field(Montage({"F3": 1.0, "F4": -1.0, "O1": 1.0, "Fz": -1.0}), fields)["E"].values
    np.testing.assert_allclose(both, a + b, atol=1e-12)


# --- the template BEM ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bem_cache(tmp_path_factory):
    """Build the template BEM once, from packaged files only (any network access fails)."""
    cache = tmp_path_factory.mktemp("neurotwin_cache")
    old_env, old_connect = os.environ.get("NEUROTWIN_CACHE"), socket.socket.connect

    def refuse(*args, **kwargs):
        raise AssertionError("network access while building the template head")

    os.environ["NEUROTWIN_CACHE"] = str(cache)
    socket.socket.connect = refuse
    try:
        sol = heads.template_bem(heads.CONDUCTIVITIES[("bem", "tes")])
        fwd = forward.forward_model("tvb76", "standard_1020", head="template_bem", conductivity="tes")
    finally:
        socket.socket.connect = old_connect
    yield cache, sol, fwd
    if old_env is None:
        os.environ.pop("NEUROTWIN_CACHE", None)
    else:
        os.environ["NEUROTWIN_CACHE"] = old_env


def test_template_bem_builds_offline_and_is_cached(bem_cache):
    cache, sol, fwd = bem_cache
    assert len(sol["surfs"]) == 3 and not sol["is_sphere"]
    files = list((cache / "bem").glob("template_bem_*-sol.fif"))
    assert len(files) == 1 and [p.name for p in (cache / "bem").iterdir()] == [files[0].name]   # no temp left
    again = heads.template_bem(heads.CONDUCTIVITIES[("bem", "tes")])        # read back, not rebuilt
    np.testing.assert_allclose(again["solution"], sol["solution"], rtol=1e-5, atol=1e-9)   # stored as float32
    # the derived outer skull lies between the inner skull and the scalp
    s = heads.template_surfaces()
    c = s["inner_skull"][0].mean(axis=0)
    r_in = np.linalg.norm(s["inner_skull"][0] - c, axis=1)
    r_out = np.linalg.norm(s["outer_skull"][0] - c, axis=1)
    assert np.all(r_out - r_in >= heads.MIN_LAYER_GAP_MM / 1000 - 1e-6)     # surfaces are float32
    assert np.all(r_out - r_in <= heads.MAX_SKULL_THICKNESS_MM / 1000 + 1e-6)


def test_template_bem_lead_field_electrodes_and_cortex(bem_cache):
    _, sol, fwd = bem_cache
    assert np.all(np.isfinite(fwd["gain"].values)) and np.abs(fwd["gain"].values).max() > 10
    assert fwd.attrs["orientation_source"] == "template_cortex" and fwd.attrs["placement"] == "cortex"
    # every electrode within 1 mm of the scalp mesh
    skin = [s for s in sol["surfs"] if s["id"] == mne.io.constants.FIFF.FIFFV_BEM_SURF_ID_HEAD][0]
    _, d = heads.closest_point_on_mesh(heads.head_to_mri(fwd["sensor_position"].values), skin["rr"], skin["tris"])
    assert d.max() < 1e-3
    # regions keep their hemisphere and their anterior-posterior order on the template cortex
    pos = fwd["position"]
    hemi = fwd["hemisphere"].values
    x = pos.sel(axis="x").values                      # medial regions sit on the midline (|x| < 2 mm)
    assert np.all(x[hemi == "R"] > -0.002) and np.all(x[hemi == "L"] < 0.002)
    assert np.median(x[hemi == "R"]) > 0.02 and np.median(x[hemi == "L"]) < -0.02
    for h in "lr":
        assert float(pos.sel(region=f"{h}V1", axis="y")) < float(pos.sel(region=f"{h}PFCPOL", axis="y")) - 0.08
    # V1 seen most over occipital electrodes
    L = fwd["gain"] - fwd["gain"].mean("sensor")
    top = list(np.abs(L.sel(region="lV1")).sortby(np.abs(L.sel(region="lV1")), ascending=False).sensor.values[:6])
    assert any(s.startswith(("O", "PO", "I")) for s in top), top


def test_template_bem_f3_f4_field_strength(bem_cache):
    fields = efield.electrode_fields("tvb76", head="template_bem")
    m = efield.montage_field(Montage.bipolar("F3", "F4", 1.0), fields)
    top = np.sort(m["E_mag"].values)[-5:]
    assert np.all((0.1 <= top) & (top <= 0.6)), top                # measured max 0.24 V/m per mA
    strongest = list(m.region.values[np.argsort(m["E_mag"].values)[-5:]])
    assert all("PFC" in r or "FEF" in r or "PMC" in r for r in strongest), strongest


def test_montage_designer_computes_on_the_template_head(bem_cache):
    from neurotwin_dash.ui.compute import montage_field_job
    from neurotwin_dash.ui.montage import MontageState
    state = MontageState(mode="sync")
    state.auto_run = False                       # only the spec is needed here, not the simulations
    state.param.update(head="template_bem", currents_mA={"F3": 1.0, "F4": -1.0})
    spec = state.spec()
    assert spec["head"] == "template_bem"
    res = montage_field_job({**spec, "render_3d": True})
    assert res.attrs["head"] == "template_bem" and "png_3d" not in res.attrs    # 3D view: sphere only
    fields = efield.electrode_fields("tvb76", head="template_bem")
    expected = efield.montage_field(Montage({"F3": 1.0, "F4": -1.0}), fields)["E_n"].values
    np.testing.assert_allclose(res["E_n"].values, expected, rtol=1e-12)


# --- bad input ----------------------------------------------------------------------------------

def test_bad_heads_and_far_electrodes_are_refused_and_nothing_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROTWIN_CACHE", str(tmp_path))
    with pytest.raises(forward.ForwardError, match="head 'cylinder' unknown; allowed: sphere, template_bem"):
        forward.leadfield("tvb76", "standard_1020", head="cylinder")
    with pytest.raises(forward.ForwardError, match="does not exist"):
        efield.electrode_fields("tvb76", head=str(tmp_path / "missing-bem-sol.fif"))
    m = mne.channels.make_standard_montage("standard_1020")
    pos = m.get_positions()
    ch = dict(pos["ch_pos"])
    ch["Cz"] = ch["Cz"] * 1.6                                         # ~55 mm above the scalp
    far = mne.channels.make_dig_montage(ch_pos=ch, nasion=pos["nasion"], lpa=pos["lpa"], rpa=pos["rpa"],
                                        coord_frame=pos["coord_frame"])
    with pytest.raises(forward.ForwardError, match=r"electrodes Cz \(\d+ mm\) lie more than 30 mm"):
        forward.forward_model("tvb76", far)
    with pytest.raises(forward.ForwardError, match="conductivity"):
        forward.forward_model("tvb76", "standard_1020", conductivity=(0.33, 1.0))
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_cli_head_option_names_the_bad_head(tmp_path, capsys):
    from neurotwin_dash.cli import main
    out = tmp_path / "m.json"
    assert main(["optimize-montage", "--target", "lPFCDL", "--head", "cylinder", "--out", str(out)]) == 2
    assert "head 'cylinder' unknown; allowed: sphere, template_bem" in capsys.readouterr().err
    assert main(["optimize-montage", "--target", "lPFCDL", "--head", str(tmp_path / "no-bem-sol.fif"),
                 "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()
