"""``circuitlab demo`` runs the organism end to end and writes files the lab serves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from circuitlab.cli import main


def test_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "'Austin'" in out
    assert "Texas features at 'Dallas'" in out
    assert "target 'Sacramento'" in out
    assert "circuitlab serve --graph_file_dir" in out
    graph = json.loads((tmp_path / "graphs" / "organism-dallas.json").read_text())
    assert graph["metadata"]["slug"] == "organism-dallas"
    clerps = [n.get("clerp", "") for n in graph["nodes"]]
    assert any("Texas (state)" in c for c in clerps)
    assert (tmp_path / "features" / "index.json.gz").is_file()
    meta = json.loads((tmp_path / "graphs" / "graph-metadata.json").read_text())
    assert any(g["slug"] == "organism-dallas" for g in meta["graphs"])
