"""``circuitlab circuit``: JSON, markdown and figure from a saved graph; --validate; bad flags."""

from __future__ import annotations

import json

import pytest

from circuitlab.attribution import attribute
from circuitlab.cli import main

from conftest import PROMPT, build, save_to_disk


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    rm = build("llama", "plt")
    root = tmp_path_factory.mktemp("tiny")
    model_dir, tc_dir = save_to_disk(rm, root)
    graph_path = root / "tiny.safetensors"
    attribute(rm, PROMPT, max_n_logits=3, desired_logit_prob=0.99).save(graph_path)
    return graph_path, model_dir, tc_dir


def test_circuit_writes_json_summary_and_figure(saved, tmp_path, capsys) -> None:
    graph_path, _, _ = saved
    out = tmp_path / "out"
    code = main(["circuit", str(graph_path), "--groups", "2", "--out", str(out), "--svg"])
    assert code == 0
    data = json.loads((out / "tiny.circuit.json").read_text())
    assert data["n_groups"] == 2 and len(data["supernodes"]) == 2
    assert set(data["scores"]) == {"replacement", "completeness"}
    assert (out / "tiny.circuit.md").read_text().startswith("# Circuit")
    assert (out / "tiny.circuit.svg").read_text().startswith("<svg")
    assert "wrote" in capsys.readouterr().out


def test_the_figure_is_a_png_with_matplotlib(saved, tmp_path) -> None:
    pytest.importorskip("matplotlib")  # circuitlab[plots]; without it the figure is SVG
    graph_path, _, _ = saved
    assert main(["circuit", str(graph_path), "--groups", "2", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "tiny.circuit.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_circuit_validate_adds_the_agreement(saved, tmp_path) -> None:
    graph_path, model_dir, tc_dir = saved
    args = ["circuit", str(graph_path), "-t", str(tc_dir), "-m", str(model_dir)]
    code = main([*args, "--groups", "2", "--validate", "--out", str(tmp_path), "--svg"])
    assert code == 0
    data = json.loads((tmp_path / "tiny.circuit.json").read_text())
    assert len(data["validation"]["effects"]) == 2
    assert "sign agreement" in (tmp_path / "tiny.circuit.md").read_text()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--groups", "100000"], "--groups 100000"),
        (["--groups", "0"], "--groups must be at least 1"),
        (["--validate"], "--validate needs"),
        (["--edge_threshold", "2"], "--edge_threshold must be between"),
    ],
)
def test_bad_flags_are_one_line_errors(saved, tmp_path, capsys, flags, message) -> None:
    graph_path, _, _ = saved
    assert main(["circuit", str(graph_path), "--out", str(tmp_path), *flags]) == 2
    assert message in capsys.readouterr().err
