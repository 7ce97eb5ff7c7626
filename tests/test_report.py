"""`neurotwin report`: a self-contained lab-meeting page of a twin."""
from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np
import pytest

from neurotwin_dash import catalog
from neurotwin_dash.cli import main
from neurotwin_dash.report import plot_region_matrix
from neurotwin_dash.simulate import simulate
from neurotwin_dash.twin import Twin


@pytest.fixture(scope="module")
def twin_file(tmp_path_factory):
    res = simulate("jansen_rit", "tvb76", duration_s=5.0, transient_s=1.0, seed=3, sample_rate_hz=250.0,
                   params={"coupling": 2.0})
    path = tmp_path_factory.mktemp("twin") / "twin.nc"
    Twin.from_result(res, name="sub01").save(path)
    return path


def test_report_is_one_self_contained_page_with_figures_parameters_and_provenance(twin_file, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", "--twin", str(twin_file), "--out", str(out)]) == 0
    page = out.read_text()
    for name in ("spectra", "band_powers", "fc", "topomap", "eeg_traces"):
        assert f"<figure id='fig-{name}'>" in page
    assert page.count("<svg") == 5
    assert "reproduced bit for bit" in page                      # the twin re-ran identically
    assert "<td>coupling</td><td>2</td>" in page and "seed 3" in page
    # nothing fetched from elsewhere: no external scripts, stylesheets or images
    assert not re.search(r"(src|href)=['\"]https?://", page)
    # projector-readable: body 18 px, every SVG text at ≥ 12 pt
    sizes = [float(s) for s in re.findall(r"font-size:\s*([\d.]+)px", page)]
    assert min(sizes) >= 14
    # SVG text is drawn as glyph paths scaled by (font size in pt) / 100
    svg_pt = [100 * float(s) for s in re.findall(r"scale\((0\.\d+) -0\.\d+\)", page)]
    assert len(svg_pt) > 50 and min(svg_pt) >= 12 - 1e-9


def test_report_refuses_to_replace_an_existing_page(twin_file, tmp_path):
    out = tmp_path / "report.html"
    out.write_text("keep me")
    assert main(["report", "--twin", str(twin_file), "--out", str(out)]) != 0
    assert out.read_text() == "keep me"
    assert main(["report", "--twin", str(tmp_path / "missing.nc"), "--out", str(tmp_path / "x.html")]) != 0


def test_single_node_report_has_spectra_and_band_powers_only(tmp_path):
    from neurotwin_dash.report import report_html
    res = simulate("jansen_rit", None, duration_s=4.0, transient_s=0.5, seed=0, sample_rate_hz=250.0)
    page = report_html(Twin.from_result(res), result=res)
    assert page.count("<svg") == 2 and "reproduced bit for bit" in page


def test_region_matrix_groups_interleaved_hemispheres():
    # AAL orders regions L, R, L, R, ...: drawn as is, every region would be its own hemisphere
    # run (a separator line and a tick label per region); grouped, there are two
    conn = catalog.load("hcp80")
    hemi = conn.ds["hemisphere"].values.astype(str)
    assert (hemi[:4] == ["L", "R", "L", "R"]).all()
    m = np.add.outer(np.arange(conn.n_regions), 1000 * np.arange(conn.n_regions)).astype(float)
    fig, ax = plt.subplots()
    order = plot_region_matrix(ax, m, conn, "t", "viridis", 0, m.max(), "x")
    drawn = ax.images[0].get_array()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["left", "right"]
    assert (hemi[order[:40]] == "L").all() and (hemi[order[40:]] == "R").all()
    assert (np.diff(order[:40]) > 0).all()                       # order within a hemisphere kept
    assert drawn[3, 5] == m[order[3], order[5]]
    assert len(ax.lines) == 2                                    # one separator: a row and a column line
    assert "grouped by hemisphere" in ax.get_xlabel()
    plt.close(fig)
