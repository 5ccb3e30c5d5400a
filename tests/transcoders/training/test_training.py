"""Training on tiny models: FVU falls, TopK keeps k, dead features, CLTs, exact resume, CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from circuitlab.cli import main
from circuitlab.models.tiny import tiny_model
from circuitlab.replacement import ReplacementModel
from circuitlab.transcoders import CrossLayerTranscoder, TranscoderSet, load_transcoders
from circuitlab.transcoders.evaluation import evaluate_transcoders, held_out_split
from circuitlab.transcoders.training import TrainableTranscoders, TrainConfig, train_transcoders
from circuitlab.transcoders.training import trainer as trainer_mod
from circuitlab.transcoders.training.activations import mlp_io

# the root tests/conftest.py (on sys.path), not tests/transcoders/conftest.py
from conftest import WORDS, tiny_tokenizer  # pyright: ignore[reportAttributeAccessIssue]

FAST = dict(
    d_transcoder=32,
    k=3,
    n_tokens=2000,
    batch_size=64,
    buffer_tokens=512,
    context=16,
    model_batch=16,
    log_every=5,
    lr=1e-2,
)


def _texts(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) for _ in range(n)]


def _train(tmp: Path, **kw: object) -> tuple[object, dict]:
    hf = tiny_model("llama", dtype=torch.float32)
    cfg = TrainConfig(**{**FAST, **kw})  # type: ignore[arg-type]
    tc = train_transcoders(hf, _texts(), tmp, cfg, tokenizer=tiny_tokenizer(), verbose=False)
    return tc, json.loads((tmp / "metrics.json").read_text())


def test_training_reduces_fvu(tmp_path: Path) -> None:
    tc, m = _train(tmp_path, activation="jump_relu")
    first, last = m["history"][0], m["final"]
    assert m["done"] and m["steps"] == 2000 // 64
    for a, b in zip(first["fvu"], last["fvu"], strict=True):
        assert b < 0.8 * a
    assert isinstance(tc, TranscoderSet)
    assert (tmp_path / "transcoders" / "config.yaml").is_file()
    assert (tmp_path / "checkpoint.pt").is_file()  # kept: extend, export


def test_topk_l0_equals_k(tmp_path: Path) -> None:
    tc, m = _train(tmp_path, activation="topk", n_tokens=640)
    assert all(v == pytest.approx(3.0) for h in m["history"] for v in h["l0"])
    loaded = load_transcoders(str(tmp_path / "transcoders"))
    x = torch.randn(20, 16)
    for layer in range(2):
        assert ((loaded.encode(layer, x) > 0).sum(-1) <= 3).all()
        torch.testing.assert_close(loaded.encode(layer, x), tc.encode(layer, x))  # type: ignore[attr-defined]


def test_dead_features_are_those_silent_for_the_window() -> None:
    metrics = trainer_mod._Metrics(n_layers=1, d_transcoder=4)
    y = torch.randn(1, 5, 3)
    acts = torch.zeros(1, 5, 4)
    acts[0, 0, 0] = 1.0
    metrics.add(y, y, acts, tokens=5)  # feature 0 fires at token count 5
    assert metrics.dead(tokens=5, window=100).tolist() == [3]  # fewer tokens than the window
    acts = torch.zeros(1, 5, 4)
    acts[0, 2, 1] = 2.0
    metrics.add(y, y, acts, tokens=200)  # feature 1 fires at 200
    assert metrics.dead(tokens=200, window=100).tolist() == [3]  # 0 is silent since 5
    assert metrics.dead(tokens=200, window=196).tolist() == [2]
    assert metrics.summary(200, 100)["l0"] == [pytest.approx(0.2)]


@pytest.mark.parametrize("kind", ["plt", "clt"])
def test_saved_transcoders_equal_the_trained_module(kind: str) -> None:
    """Folding the normalisation into the weights changes nothing, skip included."""
    g = torch.Generator().manual_seed(0)
    tt = TrainableTranscoders(3, 8, 12, kind=kind, activation="jump_relu", skip=True)
    with torch.no_grad():
        for p in tt.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
        tt.in_scale.copy_(torch.tensor([0.5, 2.0, 3.0]))
        tt.out_scale.copy_(torch.tensor([4.0, 0.25, 1.5]))
    tt.clamp_()
    x = torch.randn(3, 10, 8, generator=g)
    with torch.no_grad():
        xn = x / tt.in_scale[:, None, None]
        want = tt.decode(tt.encode(xn), xn) * tt.out_scale[:, None, None]
    tc = tt.to_transcoders(input_hook="mlp.hook_in", output_hook="hook_mlp_out")
    assert isinstance(tc, CrossLayerTranscoder if kind == "clt" else TranscoderSet)
    torch.testing.assert_close(tc(x), want, rtol=1e-4, atol=1e-5)


def test_clt_training_runs_and_saves_a_clt(tmp_path: Path) -> None:
    tc, m = _train(tmp_path, kind="clt", activation="relu", skip=True, n_tokens=1280)
    assert isinstance(tc, CrossLayerTranscoder) and tc.input_hook == "hook_resid_mid"
    assert m["final"]["fvu"][1] < m["history"][0]["fvu"][1]
    loaded = load_transcoders(str(tmp_path / "transcoders"))
    assert isinstance(loaded, CrossLayerTranscoder)
    hf = tiny_model("llama", dtype=torch.float32)
    x, _ = mlp_io(hf, _adapter(), torch.tensor([[0, 5, 9, 3]]), "hook_resid_mid", "hook_mlp_out")
    torch.testing.assert_close(loaded(x[:, 0]), tc(x[:, 0]))  # type: ignore[operator]


def _adapter():  # noqa: ANN202
    from circuitlab.models.adapters import adapter_for

    return adapter_for("llama")


def test_resume_continues_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kw = dict(activation="jump_relu", n_tokens=1920, checkpoint_every=8)
    straight, _ = _train(tmp_path / "a", **kw)
    real = trainer_mod._step
    calls = {"n": 0}

    def crashing(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 20:  # after the checkpoint taken when the 2nd buffer drained (16 steps)
            raise KeyboardInterrupt
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(trainer_mod, "_step", crashing)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "b", **kw)
    assert (tmp_path / "b" / "checkpoint.pt").is_file()
    assert not (tmp_path / "b" / "transcoders").exists()
    monkeypatch.setattr(trainer_mod, "_step", real)
    with pytest.raises(ValueError, match="--restart"):
        _train(tmp_path / "b", **{**kw, "lr": 5e-2})
    resumed, m = _train(tmp_path / "b", **kw)
    assert m["steps"] == 30
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):  # type: ignore[attr-defined]
        torch.testing.assert_close(a, b)


def test_cli_trains_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hf = tiny_model("llama", dtype=torch.float32)
    hf.save_pretrained(tmp_path / "model")  # type: ignore[operator]
    tiny_tokenizer().save_pretrained(tmp_path / "model")
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(_texts(60)))
    args = ["train", "-m", str(tmp_path / "model"), "--corpus", str(corpus), "-o"]
    args += [str(tmp_path / "out"), "--activation", "topk", "--k", "4", "--d-transcoder", "16"]
    args += ["--tokens", "512", "--batch-size", "64", "--buffer-tokens", "256", "--context", "16"]
    assert main([*args, "--eval-every", "4", "--eval-tokens", "60", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "layer  fvu" in out and "saved" in out and "held-out (60 tokens" in out
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert [e["step"] for e in metrics["held_out"]] == [4, 8]
    # model_name is relative to the transcoders' folder (no training machine's absolute path)
    config = (tmp_path / "out" / "transcoders" / "config.yaml").read_text()
    assert "model_name: ../../model" in config and str(tmp_path) not in config
    tc = load_transcoders(str(tmp_path / "out" / "transcoders"))
    assert getattr(tc, "model_name", None) == str((tmp_path / "model").resolve())
    assert main([*args[:-2], "--k", "99", "--quiet"]) == 2
    assert "--k 99" in capsys.readouterr().err


def test_eval_every_records_held_out_metrics(tmp_path: Path) -> None:
    texts = _texts()
    kw = dict(activation="relu", eval_every=10, eval_tokens=150)
    tc, m = _train(tmp_path, **kw)
    steps = [e["step"] for e in m["held_out"]]
    assert steps == [10, 20, 30, 31] and m["final_held_out"] == m["held_out"][-1]
    for e in m["held_out"]:
        assert len(e["fvu"]) == 2 and len(e["dead"]) == 2 and len(e["dead_fraction"]) == 2
        assert all(0 <= f <= 1 for f in e["dead_fraction"])
    assert sum(m["held_out"][-1]["fvu"]) < sum(m["held_out"][0]["fvu"])
    # the same figures as eval-transcoders computes on the saved transcoders, same windows
    _, windows = held_out_split(texts, tiny_tokenizer(), 16, 150)
    assert isinstance(tc, TranscoderSet)
    hf = tiny_model("llama", dtype=torch.float32)
    rm = ReplacementModel.from_pretrained(hf, tc, tokenizer=tiny_tokenizer())
    ev = evaluate_transcoders(rm, [windows], losses=False)
    final = m["final_held_out"]
    assert ev.fvu == pytest.approx(final["fvu"], rel=1e-4)
    assert ev.l0 == pytest.approx(final["l0"], rel=1e-6) and ev.dead == final["dead"]


def test_eval_every_holds_out_the_last_documents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []
    real = trainer_mod.ActivationBuffer

    def spy(model, adapter, tokenizer, texts, **kw):  # type: ignore[no-untyped-def]
        texts = list(texts)
        seen.append(texts)
        return real(model, adapter, tokenizer, texts, **kw)

    monkeypatch.setattr(trainer_mod, "ActivationBuffer", spy)
    texts = _texts()
    hf = tiny_model("llama", dtype=torch.float32)
    cfg = TrainConfig(**{**FAST, "n_tokens": 128, "eval_every": 1, "eval_tokens": 150})  # type: ignore[arg-type]
    train_transcoders(hf, texts, tmp_path, cfg, tokenizer=tiny_tokenizer(), verbose=False)
    n_train = len(seen[0])
    assert 0 < n_train < len(texts) and seen[0] == texts[:n_train]
