"""The data catalog: listing, loading, and clear errors."""
import subprocess
import sys

import numpy as np
import pytest

from neurotwin_dash import catalog
from neurotwin_dash.catalog import CatalogError


def test_catalog_lists_at_least_five_real_connectomes_with_region_counts():
    conns = catalog.names("connectome")
    assert len(conns) >= 5
    for name in conns:
        assert catalog.describe(name)["regions"] > 0


@pytest.mark.parametrize("name", ["tvb66", "tvb68", "tvb76", "tvb96", "tvb192", "hcp80"])
def test_loaded_connectome_matches_its_catalog_region_count(name):
    conn = catalog.load(name)
    assert conn.n_regions == catalog.describe(name)["regions"]
    assert np.count_nonzero(conn.weights) > conn.n_regions  # a network, not an empty matrix
    assert conn.tract_lengths.max() > 50  # mm


def test_cli_catalog_list_prints_the_table():
    out = subprocess.run([sys.executable, "-m", "neurotwin_dash.cli", "catalog", "list"],
                         capture_output=True, text=True, check=True).stdout
    for name, n in [("tvb76", "76"), ("tvb68", "68"), ("tvb192", "192"), ("hcp80", "80")]:
        line = next(l for l in out.splitlines() if l.startswith(name + " "))
        assert f" {n} " in line and "yes" in line


def test_unknown_dataset_error_lists_known_names():
    with pytest.raises(CatalogError, match=r"unknown dataset 'tvb77'; known datasets: tvb76, .*hcp80"):
        catalog.load("tvb77")


def test_cli_reports_unknown_dataset_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "neurotwin_dash.cli", "catalog", "show", "nope"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown dataset 'nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_package_error_names_the_package_to_install(monkeypatch):
    entry = dict(catalog.describe("tvb76"), package="tvb-data-not-installed")
    monkeypatch.setitem(catalog.entries(), "tvb76", entry)
    with pytest.raises(CatalogError, match="pip install tvb-data-not-installed"):
        catalog.load("tvb76")


def test_hcp_empirical_fc_has_seven_subjects_and_a_group_mean():
    ds = catalog.load("hcp80_fc")
    assert ds.sizes["subject"] == 7 and ds.sizes["region"] == 80
    np.testing.assert_allclose(np.diag(ds["fc_group"].values), 1.0)
    np.testing.assert_allclose(ds["fc_group"].values, ds["fc"].mean("subject").values)
    assert ds["bold"].shape == (7, 80, 1200)
    assert list(ds["region"].values) == catalog.load("hcp80").labels


@pytest.mark.parametrize("name,n", [("standard_1020", 90), ("standard_1005", 339), ("biosemi64", 64), ("starstim8", 8),
                                    ("starstim20", 20), ("starstim32", 32)])
def test_montages_load_with_their_channel_counts(name, n):
    montage = catalog.load(name)
    assert len(montage.ch_names) == n
    pos = montage.get_positions()["ch_pos"]
    radii = np.linalg.norm(np.array(list(pos.values())), axis=1)
    assert np.all((radii > 0.05) & (radii < 0.15))  # metres, on a head


def test_starstim_subset_sits_where_its_10_10_electrodes_sit_on_the_full_cap():
    import mne
    full = mne.channels.make_standard_montage(catalog.describe("starstim20")["base"])
    info_full = mne.create_info(full.ch_names, 1000.0, "eeg")
    info_full.set_montage(full)
    sub = catalog.load("starstim20")
    info_sub = mne.create_info(sub.ch_names, 1000.0, "eeg")
    info_sub.set_montage(sub)
    for ch in ("Oz", "Fz", "T7"):
        a = info_sub["chs"][info_sub.ch_names.index(ch)]["loc"][:3]
        b = info_full["chs"][info_full.ch_names.index(ch)]["loc"][:3]
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_standard_montages_have_no_two_electrodes_at_one_position():
    for name in ("standard_1020", "standard_1005"):
        montage = catalog.load(name)
        assert "T7" in montage.ch_names and "T3" not in montage.ch_names
        xyz = np.array(list(montage.get_positions()["ch_pos"].values()))
        d = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1) + np.eye(len(xyz))
        assert d.min() > 1e-3
