"""Resume keys hold the transcoders' and model's content: new weights at the same path are
re-traced; the same files elsewhere, or a temporary file beside them, change nothing."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from circuitlab.batch import LoadSpec, TraceSettings, read_prompts, run_batch
from circuitlab.batch.fingerprint import load_fingerprint
from circuitlab.graph import load_graph
from circuitlab.models.tiny import tiny_model
from circuitlab.transcoders import random_transcoder_set

SETTINGS = TraceSettings(max_n_logits=3, batch_size=32, max_feature_nodes=64)


@pytest.fixture
def dirs(tiny_dirs: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the tiny model and transcoders; ``model_name`` relative, as
    ``circuitlab train`` writes it."""
    model, tc = tmp_path / "model", tmp_path / "tc"
    shutil.copytree(tiny_dirs[0], model)
    shutil.copytree(tiny_dirs[1], tc)
    config = (tc / "config.yaml").read_text().replace(str(tiny_dirs[0]), "../model")
    (tc / "config.yaml").write_text(config)
    return model, tc


def _prompts(tmp_path: Path) -> list[Any]:
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"id": "a", "prompt": "the capital of Texas is"}\n{"prompt": "a b c d"}\n')
    return read_prompts(path)


def test_new_transcoder_weights_at_the_same_path_are_retraced(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    _, tc_dir = dirs
    records, out = _prompts(tmp_path), tmp_path / "out"
    load = LoadSpec(str(tc_dir))
    first = run_batch(records, out, load, SETTINGS)
    assert first.traced == 2
    old = load_graph(out / "graphs" / "a.safetensors")

    new = random_transcoder_set(2, 16, 32, activation="jump_relu", seed=7)
    new.model_name = "../model"
    new.save(str(tc_dir), overwrite=True)  # the same path, other weights
    again = run_batch(records, out, load, SETTINGS)
    assert (again.skipped, again.traced) == (0, 2)
    retraced = load_graph(out / "graphs" / "a.safetensors")
    fresh_out = tmp_path / "fresh"
    run_batch(records, fresh_out, load, SETTINGS)
    fresh = load_graph(fresh_out / "graphs" / "a.safetensors")
    assert torch.equal(retraced.active_features, fresh.active_features)
    assert not torch.equal(retraced.activation_values, old.activation_values)
    assert run_batch(records, out, load, SETTINGS).skipped == 2  # unchanged: skipped


def test_new_model_weights_change_the_key(dirs: tuple[Path, Path]) -> None:
    model_dir, tc_dir = dirs
    before = load_fingerprint(LoadSpec(str(tc_dir)))  # the model named by model_name
    assert before == load_fingerprint(LoadSpec(str(tc_dir), model=str(model_dir)))
    other: Any = tiny_model("llama", n_layers=2, d_model=16, seed=3)
    other.save_pretrained(model_dir)
    after = load_fingerprint(LoadSpec(str(tc_dir)))
    assert after["model"] != before["model"] and after["transcoders"] == before["transcoders"]


def test_same_files_elsewhere_and_temporaries_keep_the_key(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    model_dir, tc_dir = dirs
    load = LoadSpec(str(tc_dir), model=str(model_dir))
    key = load_fingerprint(load)
    (tc_dir / ".layer_0.safetensors.123.x.circuitlab.tmp").write_bytes(b"partial")
    moved = tmp_path / "moved"
    shutil.copytree(tc_dir, moved / "tc")
    shutil.copytree(model_dir, moved / "model")
    assert load_fingerprint(LoadSpec(str(moved / "tc"), model=str(moved / "model"))) == key
    assert load_fingerprint(load) == key
