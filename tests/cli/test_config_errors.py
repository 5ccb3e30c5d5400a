"""A broken transcoder ``config.yaml`` gives one line naming the file, the line and the expected
layout, in every command that reads it (no YAML traceback)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from circuitlab.cli import main


@pytest.mark.parametrize("command", ["attribute", "estimate-memory"])
def test_broken_config_yaml_is_one_line_naming_file_and_line(
    command: str, tiny_dirs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    model, tc = tiny_dirs
    broken = tmp_path / "tc"
    shutil.copytree(tc, broken)
    config = broken / "config.yaml"
    config.write_text(config.read_text() + "transcoders: [layer_0.safetensors\n")
    extra = ["-p", "the capital", "-o", str(tmp_path / "g.safetensors")]
    if command == "estimate-memory":
        extra = ["--n-tokens", "8"]
    assert main([command, "-t", str(broken), "-m", str(model), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{config} line" in err and "not valid YAML" in err
    assert "feature_input_hook: mlp.hook_in" in err
