"""The CLI side of the memory check: ``attribute``/``batch`` refuse with flags that fit (and
``--no-memory-check`` runs anyway); ``estimate-memory`` warns when the peak exceeds the memory
available."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from circuitlab.attribution.memory_check import AVAILABLE_MEMORY_ENV
from circuitlab.attribution.spill_space import AVAILABLE_DISK_ENV
from circuitlab.cli import main

#: 41 tokens: its edge rows need more than its forward pass, so a small budget is refused
#: once the features are counted (a short prompt just gets fewer rows per sweep).
LONG_PROMPT = "the capital of Texas is " * 8


def test_attribute_refuses_with_the_numbers_and_flags_that_fit(
    tiny_dirs: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    _, tc = tiny_dirs
    out = tmp_path / "g.safetensors"
    argv = ["attribute", "-p", LONG_PROMPT, "-t", str(tc), "-o", str(out)]
    monkeypatch.setenv(AVAILABLE_MEMORY_ENV, "400KiB")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "not enough memory" in err and "400.0 KiB is available" in err
    assert "--max_feature_nodes" in err and "--no-memory-check" in err
    assert "check_memory=False" not in err and not out.exists()
    assert main([*argv, "--no-memory-check"]) == 0
    assert out.is_file()


def test_offload_disk_without_room_is_refused_with_flags(
    tiny_dirs: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    _, tc = tiny_dirs
    spill_dir = tmp_path / "tmp"
    spill_dir.mkdir()
    monkeypatch.setenv("TMPDIR", str(spill_dir))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    out = tmp_path / "g.safetensors"
    argv = ["attribute", "-p", "the capital of Texas is", "-t", str(tc), "-o", str(out)]
    monkeypatch.setenv(AVAILABLE_DISK_ENV, "1KiB")
    assert main([*argv, "--offload", "disk"]) == 2
    err = capsys.readouterr().err
    assert "not enough space for offload='disk'" in err and "--no-memory-check" in err
    assert "check_memory=False" not in err and not out.exists()
    assert main([*argv, "--offload", "disk", "--no-memory-check"]) == 0 and out.is_file()
    assert list(spill_dir.iterdir()) == []


def test_batch_passes_no_memory_check_on(
    tiny_dirs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pyarrow")
    _, tc = tiny_dirs
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "a", "prompt": LONG_PROMPT}) + "\n")
    monkeypatch.setenv(AVAILABLE_MEMORY_ENV, "400KiB")
    argv = ["batch", str(prompts), "--out", str(tmp_path / "run"), "-t", str(tc), "--quiet"]
    assert main(argv) == 1
    error = json.loads((tmp_path / "run" / "errors" / "a.json").read_text())
    assert "not enough memory" in json.dumps(error)
    assert main([*argv, "--no-memory-check"]) == 0


def test_estimate_memory_warns_when_the_peak_exceeds_available_memory(
    tiny_dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _, tc = tiny_dirs
    argv = ["estimate-memory", "-t", str(tc), "--n-tokens", "8"]
    assert main(argv) == 0
    assert "warning" not in capsys.readouterr().err
    monkeypatch.setenv(AVAILABLE_MEMORY_ENV, "1MiB")
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "predicted peak" in captured.out
    assert "warning: `attribute` would refuse these settings" in captured.err
    assert "1.0 MiB is available" in captured.err
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fits"] is False and report["available_bytes"] == 2**20


def test_estimate_memory_prints_the_spill_file_against_the_free_space(
    tiny_dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _, tc = tiny_dirs
    argv = ["estimate-memory", "-t", str(tc), "--n-tokens", "64", "--offload", "disk"]
    monkeypatch.setenv(AVAILABLE_DISK_ENV, "1GiB")
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    parts = report["parts"]
    need = parts["attention patterns in a mapped file"] + parts["edge rows in a mapped file"]
    assert report["spill_bytes"] == need > 0 and report["spill_room_bytes"] == 2**30
    monkeypatch.setenv(AVAILABLE_DISK_ENV, str(need - 1))
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "spill file (offload disk)" in captured.out
    assert "warning: the spill file needs about" in captured.err and "TMPDIR" in captured.err
    assert main(argv[:-2]) == 0  # in memory: no spill line
    assert "spill file" not in capsys.readouterr().out
    # the patterns re-read from disk when no memory is left beside the run for the page cache
    assert report["spill_patterns_reread"] is False  # this machine's RAM holds a few KiB
    monkeypatch.setenv(AVAILABLE_MEMORY_ENV, str(report["peak_bytes"]))
    assert main(argv) == 0
    assert "each sweep reads them back from disk" in capsys.readouterr().out
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["spill_patterns_reread"] is True


def test_estimate_memory_without_a_tokenizer_asks_for_n_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A folder saved without tokenizer files loads transformers' one-token placeholder; the
    prompt's length must not be counted with it."""
    from circuitlab.models.tiny import tiny_model
    from circuitlab.transcoders import random_transcoder_set

    tiny_model("gpt2", n_layers=2, d_model=16).save_pretrained(tmp_path / "model")
    tc = random_transcoder_set(2, 16, 32, activation="jump_relu")
    tc.model_name = str(tmp_path / "model")
    tc.save(str(tmp_path / "tc"))
    argv = ["estimate-memory", "-t", str(tmp_path / "tc"), "-p", "the capital of Texas is"]
    assert main(argv) == 2
    assert "no tokenizer files" in capsys.readouterr().err
    assert main([*argv[:3], "--n-tokens", "8"]) == 0
