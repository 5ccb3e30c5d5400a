"""The activation cache: built once, keyed on content, read back without a model forward,
the same training result; epochs over a small cache; the CLI flag."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from circuitlab.cli import main
from circuitlab.models.tiny import tiny_model
from circuitlab.transcoders.training import TrainConfig, train_transcoders
from circuitlab.transcoders.training import trainer as trainer_mod

# the root tests/conftest.py (on sys.path), not tests/transcoders/conftest.py
from conftest import WORDS, tiny_tokenizer  # pyright: ignore[reportAttributeAccessIssue]

FAST: dict[str, Any] = dict(
    d_transcoder=32,
    k=3,
    batch_size=64,
    buffer_tokens=512,
    context=16,
    model_batch=16,
    log_every=5,
    lr=1e-2,
    activation="batchtopk",
    n_tokens=1280,
)


def _texts(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) for _ in range(n)]


def _counted_model() -> tuple[torch.nn.Module, list[int]]:
    hf = tiny_model("llama", dtype=torch.float32)
    calls = [0]
    hf.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))  # type: ignore[operator]
    return hf, calls  # type: ignore[return-value]


def _train(out: Path, texts: list[str], **kw: Any) -> tuple[Any, int]:
    hf, calls = _counted_model()
    cfg = TrainConfig(**{**FAST, **kw})
    tc = train_transcoders(hf, texts, out, cfg, tokenizer=tiny_tokenizer(), verbose=False)
    return tc, calls[0]


def _same(a: Any, b: Any) -> None:
    x = torch.randn(2, 7, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_a_second_run_reads_the_cache_without_the_model(tmp_path: Path) -> None:
    cache, texts = tmp_path / "cache", _texts()
    first, forwards = _train(tmp_path / "a", texts, cache_dir=str(cache))
    assert forwards > 0
    (entry,) = cache.iterdir()
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["tokens"] >= 1280 and sum(meta["shards"]) == meta["tokens"]
    # same model (rebuilt) and corpus, another output folder: no model forward, same result
    second, forwards = _train(tmp_path / "b", texts, cache_dir=str(cache))
    assert forwards == 0
    _same(first, second)
    # another hyper-parameter on the same activations: still no forward
    _, forwards = _train(tmp_path / "c", texts, cache_dir=str(cache), lr=3e-3, k=4)
    assert forwards == 0
    # another corpus is another key
    _, forwards = _train(tmp_path / "d", _texts(seed=1), cache_dir=str(cache))
    assert forwards > 0 and len(list(cache.iterdir())) == 2


def test_epochs_over_a_small_cache_and_growing_it(tmp_path: Path) -> None:
    cache, texts = tmp_path / "cache", _texts()
    _, forwards = _train(tmp_path / "a", texts, cache_dir=str(cache), cache_tokens=300)
    assert forwards > 0
    (entry,) = cache.iterdir()
    small = json.loads((entry / "meta.json").read_text())["tokens"]
    assert 300 <= small < 1280
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert m["steps"] == 1280 // 64  # four epochs and more over 300 tokens
    # a run needing more tokens appends shards to the same entry
    _, forwards = _train(tmp_path / "b", texts, cache_dir=str(cache), cache_tokens=1000)
    assert forwards > 0 and len(list(cache.iterdir())) == 1
    assert json.loads((entry / "meta.json").read_text())["tokens"] >= 1000


def test_cli_cache_activations(tmp_path: Path) -> None:
    hf = tiny_model("llama", dtype=torch.float32)
    hf.save_pretrained(tmp_path / "model")  # type: ignore[operator]
    tiny_tokenizer().save_pretrained(tmp_path / "model")
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(_texts(60)))
    args = ["train", "-m", str(tmp_path / "model"), "--corpus", str(corpus), "--quiet"]
    args += ["--activation", "topk", "--k", "4", "--d-transcoder", "16", "--tokens", "512"]
    args += ["--batch-size", "64", "--buffer-tokens", "256", "--context", "16"]
    args += ["--cache-activations", str(tmp_path / "cache")]
    assert main([*args, "-o", str(tmp_path / "a")]) == 0
    assert main([*args, "-o", str(tmp_path / "b")]) == 0
    a = (tmp_path / "a" / "transcoders" / "layer_0.safetensors").read_bytes()
    assert a == (tmp_path / "b" / "transcoders" / "layer_0.safetensors").read_bytes()
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_a_cached_run_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache, texts = tmp_path / "cache", _texts()
    kw: dict[str, Any] = dict(cache_dir=str(cache), checkpoint_every=5, cache_tokens=700)
    straight, _ = _train(tmp_path / "a", texts, **kw)
    real = trainer_mod._step
    calls = [0]

    def crashing(*args: Any, **kwargs: Any) -> None:
        calls[0] += 1
        if calls[0] == 13:  # the checkpoint of step 10 remains (2nd epoch, 3rd buffer)
            raise RuntimeError("crash")
        real(*args, **kwargs)

    monkeypatch.setattr(trainer_mod, "_step", crashing)
    with pytest.raises(RuntimeError, match="crash"):
        _train(tmp_path / "b", texts, **kw)
    monkeypatch.setattr(trainer_mod, "_step", real)
    resumed, forwards = _train(tmp_path / "b", texts, **kw)
    assert forwards == 0
    _same(straight, resumed)
    # a cached run's checkpoint is not resumed by a streamed run (other buffers)
    with pytest.raises(ValueError, match="--restart"):
        _train(tmp_path / "b", texts, checkpoint_every=5)
