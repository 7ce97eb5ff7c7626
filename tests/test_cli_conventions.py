"""The command line behaves as users of git, pip and mne expect (README "Installing as a package")."""
from __future__ import annotations

import logging

import pytest
import xarray as xr
import yaml

import neurotwin_dash
from neurotwin_dash import catalog, cli


def _parsers():
    parser = cli.build_parser()
    return [parser, *cli._subparsers(parser)]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"neurotwin {neurotwin_dash.__version__}"


def test_every_default_is_shown_in_help():
    missing = []
    for p in _parsers():
        fmt = p._get_formatter()
        for action in p._actions:
            if action.option_strings and cli._has_default(action) and action.help is not None \
                    and action.help != "==SUPPRESS==" \
                    and "default" not in fmt._get_help_string(action).lower():
                missing.append(f"{p.prog} {action.option_strings[0]}")
    assert not missing, missing
    text = cli.build_parser()._subparsers._group_actions[0].choices["simulate"].format_help()
    assert "(default: 10.0)" in text and "default: jansen_rit" in text


def test_one_scheduler_option_name_everywhere():
    for p in _parsers():
        shown = p.format_help()
        assert "--dask-scheduler" not in shown, p.prog
    serve = cli.build_parser().parse_args(["serve", "--scheduler", "tcp://h:8786", "--dry-run"])
    assert serve.dask_scheduler == "tcp://h:8786"


def test_usage_errors_exit_2_before_any_work(tmp_path, capsys):
    assert cli.main(["simulate", "--out", str(tmp_path / "missing" / "x.nc")]) == 2
    assert "does not exist" in capsys.readouterr().err
    # --twin refuses what it would ignore, before reading the twin
    assert cli.main(["simulate", "--twin", str(tmp_path / "t.nc"), "--out", str(tmp_path / "o.nc"),
                     "--duration", "3", "--set", "p=100"]) == 2
    err = capsys.readouterr().err
    assert "remove --duration, --set" in err
    with pytest.raises(SystemExit) as exit_:          # argparse's own usage errors
        cli.main(["simulate", "--bogus"])
    assert exit_.value.code == 2


def test_sweep_checks_its_spec_before_starting_a_cluster(tmp_path, monkeypatch, capsys):
    from neurotwin_dash import cluster

    def no_cluster(*a, **k):
        raise AssertionError("a cluster was started before the inputs were checked")
    monkeypatch.setattr(cluster, "get_client", no_cluster)
    spec = dict(model="jansen_rit", connectome="none", duration_s=2.0, axes={"p": {"values": [999.0]}})
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(spec))
    assert cli.main(["sweep", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "s.zarr")]) == 2
    assert "999" in capsys.readouterr().err


def test_runtime_failures_exit_1(monkeypatch, capsys):
    def broken():
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(catalog, "table", broken)
    assert cli.main(["catalog", "list"]) == 1
    assert "RuntimeError: disk on fire" in capsys.readouterr().err


def test_quiet_and_verbose_set_the_log_level_before_or_after_the_command(capsys):
    cli.main(["-q", "catalog", "list"])
    assert logging.getLogger("neurotwin_dash").level == logging.WARNING
    cli.main(["catalog", "list", "-v"])
    assert logging.getLogger("neurotwin_dash").level == logging.DEBUG
    cli.main(["catalog", "list"])
    assert logging.getLogger("neurotwin_dash").level == logging.INFO


def test_no_progress_bar_off_a_terminal_and_sweep_of_one_node(tmp_path, capsys):
    out = tmp_path / "one.nc"
    assert cli.main(["simulate", "--connectome", "none", "--duration", "1", "--out", str(out)]) == 0
    assert "step/s" not in capsys.readouterr().err           # stderr is not a terminal here
    spec = dict(model="jansen_rit", connectome="none", duration_s=1.5, transient_s=0.5,
                sample_rate_hz=250.0, axes={"p": {"values": [120.0, 220.0]}})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert cli.main(["sweep", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "s.zarr"),
                     "--scheduler", "sync"]) == 0
    ds = xr.open_zarr(tmp_path / "s.zarr")
    assert ds.sizes["sample"] == 2 and not bool(ds["diverged"].any())
    assert "step/s" not in capsys.readouterr().err
