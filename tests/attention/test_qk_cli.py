"""``circuitlab qk``: tables and JSON for a head, a sweep and the strongest heads; one-line
errors for bad requests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batch.conftest import tiny_dirs  # noqa: F401  (a fixture)
from circuitlab.cli import main

PROMPT = "the capital of state containing Dallas is"


def _run(dirs: tuple[Path, Path], *flags: str) -> int:
    model_dir, tc_dir = dirs
    return main(["qk", "-p", PROMPT, "-t", str(tc_dir), "-m", str(model_dir), *flags])


def test_one_score_is_printed_and_written(tiny_dirs, tmp_path: Path, capsys) -> None:  # noqa: F811
    out = tmp_path / "qk.json"
    flags = ["--layer", "1", "--head", "2", "--key", "3", "--json", str(out), "--json-top-k", "0"]
    assert _run(tiny_dirs, *flags) == 0
    text = capsys.readouterr().out
    assert "layer 1 head 2: query @7" in text and "top pairs" in text and "bias terms" in text
    record = json.loads(out.read_text())
    assert len(record["tokens"]) == 8
    (r,) = record["results"]
    assert (r["layer"], r["head"], r["query_pos"], r["key_pos"]) == (1, 2, 7, 3)
    parts = sum(v for *_, v in r["pairs"]) + sum(r["bias_terms"].values())
    assert parts == pytest.approx(r["total"], rel=1e-4, abs=1e-6)


def test_sweep_and_top_heads(tiny_dirs, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "sweep.json"
    assert _run(tiny_dirs, "--layer", "0", "--head", "1", "--all-keys", "--json", str(out)) == 0
    results = json.loads(out.read_text())["results"]
    assert [r["key_pos"] for r in results] == list(range(8))
    assert sum(r["attention"] for r in results) == pytest.approx(1.0, rel=1e-5)
    assert _run(tiny_dirs, "--top-heads", "2", "--query", "5", "--json", str(out)) == 0
    results = json.loads(out.read_text())["results"]
    assert len(results) == 2 and all(r["query_pos"] == 5 and r["key_pos"] >= 1 for r in results)
    assert results[0]["attention"] >= results[1]["attention"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--layer", "1"], "give --layer and --head together"),
        (["--layer", "1", "--head", "9"], "head=9 is out of range"),
        (["--layer", "1", "--head", "0", "--query", "2", "--key", "4"], "comes after"),
        (["--top-heads", "0"], "--top-heads must be at least 1"),
    ],
)
def test_bad_requests_are_one_line_errors(tiny_dirs, capsys, flags, message) -> None:  # noqa: F811
    assert _run(tiny_dirs, *flags) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert message in err.strip().splitlines()[-1]  # one line (after any loading progress)


def test_head_loadings_command(tiny_dirs, tmp_path: Path, capsys) -> None:  # noqa: F811
    model_dir, tc_dir = tiny_dirs
    graph_file = tmp_path / "g.safetensors"
    common = ["-t", str(tc_dir), "-m", str(model_dir)]
    assert main(["attribute", "-p", PROMPT, *common, "-o", str(graph_file)]) == 0
    from circuitlab.graph import load_graph
    from circuitlab.graph.export import node_ids

    graph = load_graph(graph_file)
    ids = node_ids(graph)
    logit = ids[graph.logit_node(0)]
    token = ids[graph.token_node(3)]
    out = tmp_path / "loadings.json"
    flags = ["--edge", token, logit, "--json", str(out)]
    assert main(["head-loadings", "-g", str(graph_file), *common, *flags]) == 0
    text = capsys.readouterr().out
    assert f"edge {token} -> {logit}" in text and "bypass" in text
    record = json.loads(out.read_text())
    assert record["layers"] == [0, 1]
    for heads, bypass in zip(record["heads"], record["bypass"], strict=True):
        assert sum(heads) + bypass == pytest.approx(record["edge"], rel=1e-5, abs=1e-7)
    bad = ["--edge", "7_7_7", logit]
    assert main(["head-loadings", "-g", str(graph_file), *common, *bad]) == 2
    assert "Unknown source node '7_7_7'" in capsys.readouterr().err
