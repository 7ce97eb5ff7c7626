import numpy as np
import pytest

from neurotwin_dash.stimulation.efield import (FieldError, bipolar_over, electrode_fields, field_summary,
                                               montage_field, scalp_electrodes)
from neurotwin_dash.stimulation.montage import Montage


@pytest.fixture(scope="module")
def fields():
    return electrode_fields("tvb76")


def test_field_is_linear_in_current_and_superposes(fields):
    a = montage_field(Montage.bipolar("F3", "Cz", 1.0), fields)
    b = montage_field(Montage.bipolar("Cz", "O2", 1.0), fields)
    ab = montage_field(Montage.bipolar("F3", "O2", 1.0), fields)
    np.testing.assert_allclose(ab["E"].values, a["E"].values + b["E"].values, atol=1e-12)
    double = montage_field(Montage.bipolar("F3", "O2", 2.0), fields)
    np.testing.assert_allclose(double["E"].values, 2 * ab["E"].values, rtol=1e-12)
    np.testing.assert_allclose(double["E_n"].values, 2 * ab["E_n"].values, rtol=1e-12)
    # a four-electrode montage is the sum of its pairs
    m = Montage({"F3": 1.0, "F4": 0.5, "P3": -0.75, "P4": -0.75})
    pairs = [Montage.bipolar("F3", "P3", 0.75), Montage.bipolar("F3", "P4", 0.25),
             Montage.bipolar("F4", "P4", 0.5)]
    total = sum(montage_field(p, fields)["E"].values for p in pairs)
    np.testing.assert_allclose(montage_field(m, fields)["E"].values, total, atol=1e-12)


def test_reversing_currents_flips_the_field(fields):
    m = Montage({"C3": 1.5, "Fp2": -1.0, "Oz": -0.5})
    f, r = montage_field(m, fields), montage_field(m.reversed(), fields)
    np.testing.assert_allclose(r["E"].values, -f["E"].values, atol=1e-12)
    np.testing.assert_allclose(r["E_n"].values, -f["E_n"].values, atol=1e-12)
    np.testing.assert_allclose(r["E_mag"].values, f["E_mag"].values, atol=1e-12)


def test_current_flows_from_anode_to_cathode(fields):
    # T7 (left) anode, T8 (right) cathode: the field points right (+x) through the head
    E = montage_field(Montage.bipolar("T7", "T8", 1.0), fields)["E"]
    assert float(E.sel(axis="x").mean()) > 0.1
    assert float(E.sel(axis="x").mean()) > 5 * abs(float(E.sel(axis="y").mean()))
    # occipital anode, frontal cathode: the field points anterior (+y)
    E = montage_field(Montage.bipolar("Oz", "Fpz", 1.0), fields)["E"]
    assert float(E.sel(axis="y").mean()) > 0.05


def test_anode_over_a_superficial_region_depolarises_it(fields):
    for target in ("lPFCDL", "rS1", "lPMCDL", "rM1"):
        m = bipolar_over([target], fields, current_mA=1.0)
        s = field_summary(montage_field(m, fields), [target])
        assert s["target_En"] > 0.1, (target, m, s)
        assert montage_field(m.reversed(), fields)["E_n"].sel(region=target) < -0.1


def test_strongest_field_lies_between_or_under_the_electrodes(fields):
    pos = fields["position"].values
    for a, b in [("T7", "T8"), ("F3", "P3"), ("Fp1", "O2"), ("F4", "F8")]:
        mag = montage_field(Montage.bipolar(a, b, 1.0), fields)["E_mag"].values
        pa = fields["electrode_position"].sel(electrode=a).values
        pb = fields["electrode_position"].sel(electrode=b).values
        ab = pb - pa
        t = np.clip((pos - pa) @ ab / (ab @ ab), 0, 1)
        dist = np.linalg.norm(pos - (pa + t[:, None] * ab), axis=1)
        i = int(mag.argmax())
        # the peak region is among the 15 % of regions closest to the electrode-to-electrode segment
        assert (dist < dist[i]).mean() < 0.15, (a, b, fields["region"].values[i])


def test_magnitudes_match_the_documented_sphere_head(fields):
    # the tES conductivities of docs/science.md §7 by default; electrodes on the scalp sphere
    assert fields.attrs["sphere_sigmas_S_m"] == [0.33, 1.65, 0.01, 0.43]
    mag = montage_field(Montage.bipolar("T7", "T8", 1.0), fields)["E_mag"].values
    assert 0.09 < np.median(mag) < 0.14         # measured 0.117 V/m per mA
    assert 0.15 < mag.max() < 0.3               # measured 0.221 (0.331 with electrodes left inside the head)


def test_normals_point_into_cortex(fields):
    n = fields["normal"]
    # lateral right-hemisphere cortex: inward = toward the left (x < 0)
    assert float(n.sel(region="rS1", axis="x")) < -0.3 and float(n.sel(region="rM1", axis="x")) < -0.3
    # medial right-hemisphere cortex faces the midline: inward = toward the right (x > 0)
    assert float(n.sel(region="rPCM", axis="x")) > 0.5 and float(n.sel(region="rV1", axis="x")) > 0.5
    np.testing.assert_allclose(np.linalg.norm(n.values, axis=1), 1.0, atol=1e-9)


def test_montage_electrodes_outside_the_layout_are_rejected(fields):
    with pytest.raises(FieldError, match=r"electrodes \['AFF1h'\] are not in the field matrix's layout"):
        montage_field(Montage.bipolar("AFF1h", "Cz", 1.0), fields)
    # without a precomputed matrix the 10-05 layout is used
    f = montage_field(Montage.bipolar("AFF1h", "Cz", 1.0))
    assert f.attrs["layout"] == "standard_1005" and float(f["E_mag"].max()) > 0.05
    assert "Iz" not in scalp_electrodes(fields["electrode"].values)


def test_cortex_surface_field_agrees_with_the_region_field(fields):
    from neurotwin_dash.stimulation.efield import montage_surface_field, surface_fields
    sf = surface_fields("tvb76")
    assert sf.sizes["vertex"] == 16384 and sf.sizes["electrode"] == fields.sizes["electrode"]
    m = Montage.bipolar("T7", "T8", 1.0)
    s = montage_surface_field(m, sf)
    r = montage_field(m, fields)
    per_region = s["E"].groupby(s["vertex_region"]).mean().sel(vertex_region=r["region"].values).values
    for k in range(3):
        assert np.corrcoef(per_region[:, k], r["E"].values[:, k])[0, 1] > 0.95
    # linear in current, and the anode side's cortex is depolarised on average
    s2 = montage_surface_field(m.scaled(2.0), sf)
    np.testing.assert_allclose(s2["E_n"].values, 2 * s["E_n"].values, rtol=1e-5, atol=1e-7)
    left = sf["position"].sel(axis="x").values < -0.05
    assert s["E_n"].values[left].mean() > 0.02
