"""``circuitlab serve`` / ``attribute`` graph-file flags: validation before any model loads.
(``show(graph)`` for notebooks: test_notebook.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from circuitlab.cli import main


def test_serve_refuses_a_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["serve", "--graph_file_dir", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_serve_needs_transcoders_to_trace(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["serve", "--graph_file_dir", str(tmp_path), "--model", "m"]) == 2
    assert "--transcoders" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        ([], "nothing would be saved"),
        (["--server", "--slug", "a"], "--server needs --slug and --graph_file_dir"),
        (["--slug", "../x", "--graph_file_dir", "g"], "bad slug"),
        (["--slug", "a", "--graph_file_dir", "g", "--node_threshold", "2"], "node_threshold"),
    ],
)
def test_attribute_checks_graph_file_flags_first(
    flags: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    assert main(["attribute", "-p", "x", "-t", "/does/not/matter", *flags]) == 2
    assert message in capsys.readouterr().err


def test_attribute_warns_when_only_a_slug_is_given(capsys: pytest.CaptureFixture) -> None:
    assert main(["attribute", "-p", "x", "-t", "/nope", "--slug", "a"]) == 2
    err = capsys.readouterr().err
    assert "need both --slug and --graph_file_dir" in err and "nothing would be saved" in err
