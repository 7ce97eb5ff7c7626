"""Every Python block of the README runs as written, each on its own (imports and inputs included).

A block that needs what only the user has (their recordings, a SLURM cluster, a running scheduler)
or that runs for tens of minutes is marked on the line before it with
``<!-- readme-test: skip -- REASON -->``; the reason is required. YAML blocks are sweep specs and are
parsed as such.
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pytest
import yaml

matplotlib.use("Agg")   # blocks that plot must not open windows

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"(?:^<!-- readme-test: skip -- (?P<reason>[^\n]*?) -->\n)?^```(?P<lang>\w*)\n(?P<code>.*?)^```",
                   re.M | re.S)


def _blocks(lang: str):
    text = README.read_text(encoding="utf-8")
    out = []
    for m in BLOCK.finditer(text):
        if m.group("lang") == lang:
            line = text[:m.start("code")].count("\n") + 1
            out.append(pytest.param(m.group("code"), m.group("reason"), id=f"line{line}"))
    return out


def test_skip_markers_give_a_reason_and_most_blocks_run():
    text = README.read_text(encoding="utf-8")
    markers = re.findall(r"<!-- readme-test: skip(.*?)-->", text)
    assert all(re.match(r" -- \S", m) for m in markers), markers
    python = _blocks("python")
    run = [p for p in python if p.values[1] is None]
    assert len(python) >= 10 and len(run) >= len(python) // 2, (len(python), len(run))


@pytest.mark.parametrize("code,reason", _blocks("python"))
def test_python_block_runs_on_its_own(code, reason, tmp_path, monkeypatch):
    compile(code, "README.md", "exec")            # even a skipped block must be valid Python
    if reason:
        pytest.skip(reason)
    monkeypatch.chdir(tmp_path)                    # blocks that write files write them here
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})   # fresh namespace per block


@pytest.mark.parametrize("code,reason", _blocks("yaml"))
def test_yaml_block_is_a_valid_sweep_spec(code, reason):
    from neurotwin_dash.sweep import SweepSpec, make_samples
    spec = SweepSpec.from_dict(yaml.safe_load(code))
    assert make_samples(spec).sizes["sample"] == spec.n_samples
