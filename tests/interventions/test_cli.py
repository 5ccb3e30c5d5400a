"""``circuitlab intervene`` and ``circuitlab generate`` on a tiny model saved to disk."""

from __future__ import annotations

import json

import pytest

from circuitlab.cli import main

from conftest import build, save_to_disk


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model_dir, tc_dir = save_to_disk(build("llama", "plt"), tmp_path_factory.mktemp("tiny"))
    return ["-m", str(model_dir), "-t", str(tc_dir), "--dtype", "float64"]


def test_intervene_prints_the_target_and_top_k_before_and_after(saved, capsys) -> None:
    code = main(
        [
            "intervene",
            *saved,
            "-p",
            "the capital of Texas is",
            "--scale",
            "0",
            "1:",
            "3,4",
            "-4",
            "--ablate-error",
            "1",
            "2",
            "--target",
            "Austin",
            "--top-k",
            "3",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "target 'Austin': logit" in out and "2 intervention(s)" in out
    assert len(out.strip().splitlines()) == 2 + 1 + 3


def test_generate_prints_plain_and_steered_continuations(saved, capsys, tmp_path) -> None:
    graph = tmp_path / "g.json"
    graph.write_text(json.dumps({"qParams": {"supernodes": [["S", "0_3_1", "1_-1_2"]]}}))
    code = main(
        [
            "generate",
            *saved,
            "-p",
            "the capital of",
            "-n",
            "3",
            "--graph-json",
            str(graph),
            "--supernode",
            "S",
            "--node-scale",
            "-2",
            "--constrained-layers",
            "all",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "plain:" in out and "steered:" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["intervene", "-p", "x", "--ablate", "0", "1", "2"], "no model: pass -t"),
        (["intervene", "-p", "x"], "no interventions given"),
        (["intervene", "-p", "x", "--ablate", "0", "one", "2"], "POS must be an integer"),
        (["generate", "-p", "x", "--supernode", "S"], "pass --graph-json"),
    ],
)
def test_cli_errors_are_one_line(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_an_intervention_past_the_prompt_is_a_one_line_error(saved, capsys) -> None:
    assert main(["intervene", *saved, "-p", "the capital", "--ablate", "0", "9", "1"]) == 2
    assert "position 9 is past the end of the prompt" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags",
    [
        ["--set", "0", "1", "2", "nan"],
        ["--scale", "0", "1", "2", "inf"],
        ["--nodes", "0_1_2", "--node-value", "nan"],
    ],
)
def test_non_finite_values_are_refused(saved, flags: list[str], capsys) -> None:
    assert main(["intervene", *saved, "-p", "the capital", *flags]) == 2
    err = capsys.readouterr().err
    assert "not a finite number" in err and len(err.strip().splitlines()) == 1
