"""Saves never clobber other directories and never leave a half-written set behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from circuitlab.transcoders import random_cross_layer_transcoder, random_transcoder_set
from circuitlab.transcoders.formats import circuit_tracer, load_circuit_tracer


def test_save_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        random_transcoder_set(2, 4, 8).save(str(target))
    assert (target / "notes.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_save_refuses_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        random_transcoder_set(2, 4, 8).save(str(target))


def test_save_fills_an_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    random_transcoder_set(2, 4, 8).save(str(tmp_path / "empty"))
    assert (tmp_path / "empty" / "config.yaml").is_file()


def test_overwrite_replaces_the_directory(tmp_path: Path) -> None:
    target = tmp_path / "set"
    random_transcoder_set(3, 4, 8).save(str(target))
    random_cross_layer_transcoder(2, 4, 8).save(str(target), overwrite=True)
    assert load_circuit_tracer(target).is_cross_layer
    assert not (target / "layer_0.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_interrupted_save_leaves_no_trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    real = circuit_tracer.save_file

    def failing_save(tensors: dict, path: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt
        real(tensors, path)

    monkeypatch.setattr(circuit_tracer, "save_file", failing_save)
    with pytest.raises(KeyboardInterrupt):
        random_transcoder_set(3, 4, 8).save(str(tmp_path / "new"))
    assert list(tmp_path.iterdir()) == []


def test_interrupted_overwrite_keeps_the_old_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "set"
    random_transcoder_set(3, 4, 8).save(str(target))
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def failing_save(tensors: dict, path: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(circuit_tracer, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        random_transcoder_set(2, 4, 8, seed=9).save(str(target), overwrite=True)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_mixed_activations_cannot_be_saved(tmp_path: Path) -> None:
    a = random_transcoder_set(2, 4, 8, activation="relu")
    b = random_transcoder_set(2, 4, 8, activation="topk", k=2)
    a.layers[1].activation = b.layers[1].activation  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="one activation"):
        a.save(str(tmp_path / "x"))
