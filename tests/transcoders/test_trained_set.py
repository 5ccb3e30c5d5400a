"""A transcoder set trained once into the cache: built, evaluated on held-out text, reused.

The stand-in for SmolLM2's shipped set (``examples.smollm2_replacement_model``): a tiny random
Llama saved to disk, a tiny corpus, a few training steps, the same code path.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from circuitlab.models.tiny import tiny_model
from circuitlab.transcoders import load_transcoders
from circuitlab.transcoders.trained_set import (
    TrainedSetRecipe,
    quality_line,
    read_eval,
    trained_replacement_model,
    trained_transcoders_dir,
)
from circuitlab.transcoders.training import TrainConfig

# the root tests/conftest.py (on sys.path), not tests/transcoders/conftest.py
from conftest import WORDS, tiny_tokenizer  # pyright: ignore[reportAttributeAccessIssue]

CONFIG = TrainConfig(
    kind="plt",
    activation="batchtopk",
    d_transcoder=16,
    k=3,
    n_tokens=640,
    batch_size=64,
    buffer_tokens=256,
    context=16,
    model_batch=16,
    lr=1e-2,
    dead_window=128,
    auxk_alpha=1.0,
    k_aux=3,
    eval_every=5,
    eval_tokens=60,  # 4 windows of 15 tokens after BOS
)
RECIPE = TrainedSetRecipe(
    name="tiny-plt", config=CONFIG, eval_batch=2, score_prompts=1, score_length=8
)


def _texts() -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) for _ in range(200)]


@pytest.fixture
def model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CIRCUITLAB_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "model"
    tiny_model("llama", dtype=torch.float32).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def test_set_is_trained_and_evaluated_once_then_reused(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reads: list[int] = []

    def corpus() -> Iterator[str]:
        reads.append(1)
        yield from _texts()

    rm = trained_replacement_model(RECIPE, model_dir, corpus, model_name=str(model_dir))
    out = capsys.readouterr().out
    entry = tmp_path / "cache" / RECIPE.folder_name
    assert reads == [1]
    assert sorted(p.name for p in entry.iterdir()) == ["eval.json", "metrics.json", "transcoders"]
    assert not (tmp_path / "cache" / f".{entry.name}.training").exists()  # work folder removed

    # the evaluation: held-out windows that training never saw, every figure there
    record = read_eval(entry)
    final = json.loads((entry / "metrics.json").read_text())["final_held_out"]
    assert record["n_tokens"] == 60 and record["model"] == str(model_dir)
    torch.testing.assert_close(record["fvu"], final["fvu"], rtol=1e-4, atol=1e-6)
    assert len(record["loss_recovered"]) == 2 and record["loss_recovered_all"] is not None
    assert len(record["replacement_scores"]) == 1
    build = record["build"]
    assert {"train_cpu_s", "train_wall_s", "eval_cpu_s", "eval_wall_s"} <= set(build)
    assert build["train_cpu_s"] > 0 and build["eval_wall_s"] > 0  # milliseconds kept
    line = quality_line(record)
    assert line in out
    o = record["overall"]
    assert f"FVU mean {o['fvu_mean']:.3f}" in line and "all 2 layers replaced" in line

    # the model carries the cached transcoders
    saved = load_transcoders(str(entry / "transcoders"))
    x = torch.randn(5, 16)
    for layer in range(2):
        torch.testing.assert_close(rm.transcoders.encode(layer, x), saved.encode(layer, x))

    # asked again: the entry as it was, the corpus not even read, the quality printed again
    stamp = (entry / "eval.json").stat().st_mtime_ns

    def unread() -> Iterator[str]:
        raise AssertionError("the cached set was rebuilt")

    again = trained_replacement_model(RECIPE, model_dir, unread, model_name=str(model_dir))
    assert (entry / "eval.json").stat().st_mtime_ns == stamp
    assert line in capsys.readouterr().out
    assert trained_transcoders_dir(RECIPE, model_dir, unread, model_name="x") == entry
    torch.testing.assert_close(again.transcoders.encode(0, x), saved.encode(0, x))


def test_recipe_changes_get_their_own_folder() -> None:
    other = TrainedSetRecipe(name="tiny-plt", config=TrainConfig(**{**vars(CONFIG), "lr": 2e-2}))
    assert other.folder_name.startswith("tiny-plt-")
    assert other.folder_name != RECIPE.folder_name
    assert TrainedSetRecipe(name="tiny-plt", config=CONFIG).folder_name != RECIPE.folder_name


def test_recipe_without_held_out_text_is_refused() -> None:
    with pytest.raises(ValueError, match="eval_every > 0"):
        TrainedSetRecipe(name="x", config=TrainConfig(eval_every=0))
