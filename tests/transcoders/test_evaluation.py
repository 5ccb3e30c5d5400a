"""Held-out evaluation: every figure against a plain-torch hand computation on a tiny model."""

from __future__ import annotations

import json
import math
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
import torch
from torch import nn

from circuitlab.cli import main
from circuitlab.replacement import ReplacementModel
from circuitlab.transcoders import (
    CrossLayerTranscoder,
    JumpReLU,
    ReLU,
    SingleLayerTranscoder,
    TranscoderSet,
)
from circuitlab.transcoders.evaluation import (
    ReconstructionStats,
    evaluate_transcoders,
    evaluate_windows,
    held_out_split,
)

# the root tests/conftest.py (on sys.path), not tests/transcoders/conftest.py
from conftest import FAMILIES, WORDS, build, save_to_disk, tiny_tokenizer  # pyright: ignore[reportAttributeAccessIssue]

Recon = Callable[[int, dict[int, torch.Tensor], torch.Tensor], torch.Tensor]


def _ids(seed: int = 0, batch: int = 3, pos: int = 9) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 17, (batch, pos), generator=g)
    ids[:, 0] = 0  # BOS
    return ids


def _ce(logits: torch.Tensor, ids: torch.Tensor) -> float:
    """Mean next-token loss of the predictions at positions 1 .. pos-2."""
    lp = logits[:, 1:-1].double().log_softmax(-1)
    return float(-lp.gather(-1, ids[:, 2:, None]).mean())


class _Hand:
    """The evaluation by hand: hooks on the Llama MLP modules (output = hook_mlp_out; input =
    mlp.hook_in, or with ``resid_mid`` the input of the pre-MLP norm), the transcoders written
    out as matrix products."""

    def __init__(self, rm: ReplacementModel, encode: Callable, recon: Recon, resid_mid=False):
        self.hf, self.encode, self.recon = rm.model, encode, recon
        blocks = rm.model.model.layers  # type: ignore[union-attr]
        self.mlps = [block.mlp for block in blocks]  # type: ignore[union-attr]
        self.norms = [block.post_attention_layernorm for block in blocks]  # type: ignore[union-attr]
        self.resid_mid = resid_mid

    def run(self, ids: torch.Tensor, replace=(), zero=()) -> tuple[torch.Tensor, dict, dict]:
        ins: dict[int, torch.Tensor] = {}
        outs: dict[int, torch.Tensor] = {}
        acts: dict[int, torch.Tensor] = {}

        def read(layer: int):
            def f(module: nn.Module, args: tuple) -> None:
                ins[layer] = args[0]

            return f

        def hook(layer: int):
            def f(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
                if not self.resid_mid:
                    ins[layer] = args[0]
                x = ins[layer]
                outs[layer] = out
                acts[layer] = self.encode(layer, x)
                if layer in replace:
                    new = self.recon(layer, acts, x)
                elif layer in zero:
                    new = torch.zeros_like(out)
                else:
                    return out
                return torch.cat([out[:, :1], new[:, 1:]], 1)  # BOS keeps its output

            return f

        handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(self.mlps)]
        if self.resid_mid:
            handles += [n.register_forward_pre_hook(read(i)) for i, n in enumerate(self.norms)]
        try:
            with torch.no_grad():
                logits = self.hf(input_ids=ids).logits  # type: ignore[operator]
        finally:
            for h in handles:
                h.remove()
        return logits, ins, outs


def _plt_hand(rm: ReplacementModel) -> _Hand:
    tc = rm.transcoders
    assert isinstance(tc, TranscoderSet)

    layers = [cast(SingleLayerTranscoder, t) for t in tc.layers]

    def encode(layer: int, x: torch.Tensor) -> torch.Tensor:
        t = layers[layer]
        pre = x @ t.W_enc.T + t.b_enc
        return pre * (pre > cast(JumpReLU, t.activation).threshold)

    def recon(layer: int, acts: dict[int, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        t = layers[layer]
        return acts[layer] @ t.W_dec + t.b_dec

    return _Hand(rm, encode, recon)


def _clt_hand(rm: ReplacementModel) -> _Hand:
    tc = rm.transcoders
    assert isinstance(tc, CrossLayerTranscoder) and tc.W_skip is not None
    skip = tc.W_skip

    def encode(layer: int, x: torch.Tensor) -> torch.Tensor:
        pre = x @ tc.W_enc[layer].T + tc.b_enc[layer]
        return pre * (pre > cast(JumpReLU, tc.activations[layer]).threshold)

    def recon(layer: int, acts: dict[int, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        out = tc.b_dec[layer] + x @ skip[layer].T
        for src in range(layer + 1):
            out = out + acts[src] @ tc.dec[src].full()[:, layer - src]
        return out

    return _Hand(rm, encode, recon, resid_mid=True)


def _expected(hand: _Hand, ids: torch.Tensor, n_layers: int, d_t: int) -> dict:
    logits, ins, outs = hand.run(ids)
    exp: dict = {"fvu": [], "nmse": [], "l0": [], "dead": []}
    acts = {i: hand.encode(i, ins[i]) for i in range(n_layers)}
    for i in range(n_layers):
        y = outs[i][:, 1:].reshape(-1, outs[i].shape[-1])
        y_hat = hand.recon(i, acts, ins[i])[:, 1:].reshape(y.shape)
        a = acts[i][:, 1:].reshape(-1, d_t)
        err = ((y - y_hat) ** 2).sum()
        exp["fvu"].append(float(err / ((y - y.mean(0)) ** 2).sum()))
        exp["nmse"].append(float(err / (y**2).sum()))
        exp["l0"].append(float((a != 0).sum(1).double().mean()))
        exp["dead"].append(int((~(a != 0).any(0)).sum()))
    clean = _ce(logits, ids)
    exp["clean"] = clean
    exp["repl"] = [_ce(hand.run(ids, replace={i})[0], ids) for i in range(n_layers)]
    exp["zero"] = [_ce(hand.run(ids, zero={i})[0], ids) for i in range(n_layers)]
    every = set(range(n_layers))
    exp["all_repl"] = _ce(hand.run(ids, replace=every)[0], ids)
    exp["all_zero"] = _ce(hand.run(ids, zero=every)[0], ids)
    return exp


@pytest.mark.parametrize("kind", ["plt", "clt_skip"])
def test_figures_match_hand_computation(kind: str) -> None:
    rm = build("llama", kind, n_layers=3)
    ids = _ids()
    hand = _plt_hand(rm) if kind == "plt" else _clt_hand(rm)
    exp = _expected(hand, ids, 3, rm.transcoders.d_transcoder)
    ev = evaluate_transcoders(rm, ids.split(2))  # two batches: sums span batches
    assert ev.n_tokens == 3 * 8
    for key in ("fvu", "nmse", "l0"):
        assert getattr(ev, key) == pytest.approx(exp[key], rel=1e-9), key
    assert ev.dead == exp["dead"]
    assert ev.dead_fraction == pytest.approx([d / 32 for d in exp["dead"]])
    assert ev.loss_clean == pytest.approx(exp["clean"], rel=1e-9)
    assert ev.loss_replaced == pytest.approx(exp["repl"], rel=1e-9)
    assert ev.loss_zero == pytest.approx(exp["zero"], rel=1e-9)
    assert ev.loss_all_replaced == pytest.approx(exp["all_repl"], rel=1e-9)
    assert ev.loss_all_zero == pytest.approx(exp["all_zero"], rel=1e-9)
    rec = [(z - r) / (z - exp["clean"]) for r, z in zip(exp["repl"], exp["zero"], strict=True)]
    assert ev.loss_recovered == pytest.approx(rec, rel=1e-7)
    all_rec = (exp["all_zero"] - exp["all_repl"]) / (exp["all_zero"] - exp["clean"])
    assert ev.loss_recovered_all == pytest.approx(all_rec, rel=1e-7)
    assert "all" in ev.table() and ev.to_dict()["overall"]["dead"] == sum(exp["dead"])


class _ReluMLP(nn.Module):
    """An MLP that *is* a ReLU transcoder, so that transcoder reconstructs it exactly."""

    def __init__(self, t: SingleLayerTranscoder):
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.t.W_enc.T + self.t.b_enc) @ self.t.W_dec + self.t.b_dec


def test_exact_transcoders_give_fvu_zero_and_full_recovery() -> None:
    rm = build("llama", "plt", activation="relu", n_layers=2, d_transcoder=24)
    tc = rm.transcoders
    assert isinstance(tc, TranscoderSet)
    g = torch.Generator().manual_seed(3)
    blocks = cast(nn.ModuleList, rm.model.model.layers)  # type: ignore[union-attr]
    for i, block in enumerate(blocks):
        t = cast(SingleLayerTranscoder, tc.layers[i])
        with torch.no_grad():  # larger weights, so that zeroing the MLP changes the loss
            t.W_dec_data.mul_(8.0)  # type: ignore[operator]
            t.b_enc.copy_(torch.rand(24, generator=g, dtype=torch.float64) * 0.2)
        assert isinstance(t.activation, ReLU)
        block.mlp = _ReluMLP(t)  # type: ignore[assignment]
    ev = evaluate_transcoders(rm, [_ids(1, batch=4)])
    assert ev.fvu == pytest.approx([0.0, 0.0], abs=1e-20)
    assert ev.nmse == pytest.approx([0.0, 0.0], abs=1e-20)
    assert ev.loss_recovered == pytest.approx([1.0, 1.0], abs=1e-9)
    assert ev.loss_recovered_all == pytest.approx(1.0, abs=1e-9)
    assert ev.loss_replaced == pytest.approx([ev.loss_clean] * 2, rel=1e-12)


def test_stats_pool_tokens_across_calls() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randn(10, 4, generator=g, dtype=torch.float64) + 3.0
    y_hat = y + 0.1 * torch.randn(10, 4, generator=g, dtype=torch.float64)
    acts = torch.zeros(10, 5)
    acts[:, 1] = 1.0
    acts[0, 3] = 2.0
    s = ReconstructionStats(1, 5)
    s.add(0, y[:6], y_hat[:6], acts[:6])
    s.add(0, y[6:], y_hat[6:], acts[6:])
    out = s.summary()
    assert out["fvu"][0] == pytest.approx(
        float(((y - y_hat) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())
    )
    assert out["l0"][0] == pytest.approx(1.1)
    assert out["dead"] == [3] and out["dead_fraction"] == [0.6]


def test_replacement_score_on_prompts() -> None:
    rm = build("llama", "plt")
    ev = evaluate_transcoders(rm, [_ids()], losses=False, score_prompts=[_ids()[0, :6]])
    assert ev.loss_clean is None and ev.loss_recovered is None
    assert len(ev.replacement_scores) == 1 and 0.0 <= ev.replacement_scores[0] <= 1.0
    assert not math.isnan(ev.overall()["fvu_mean"])  # type: ignore[arg-type]


def test_evaluate_windows_batches_and_cuts_the_score_prompts() -> None:
    """Windows in batches of 2 (the last one short) and the first window cut to 5 tokens as
    the one score prompt: the same figures as those batches and prompt given by hand."""
    rm = build("llama", "plt")
    windows = _ids(3, batch=5, pos=9)
    ev = evaluate_windows(rm, windows, batch_size=2, score_prompts=1, score_length=5)
    hand = evaluate_transcoders(
        rm, [windows[0:2], windows[2:4], windows[4:5]], score_prompts=[windows[0, :5]]
    )
    assert ev.n_tokens == 5 * 8
    assert ev.to_dict() == hand.to_dict()
    assert len(ev.replacement_scores) == 1
    other = evaluate_windows(rm, windows, batch_size=2, score_prompts=1, score_length=9)
    assert other.replacement_scores != ev.replacement_scores  # the cut is the one given


def test_held_out_split_takes_the_last_documents() -> None:
    tok = tiny_tokenizer()
    docs = [" ".join(["a"] * 5 + [w]) for w in ["b", "c", "d", "the", "of", "is"]]
    train, windows = held_out_split(docs, tok, context=5, n_tokens=10)
    # 3 windows of 4 tokens = 12 tokens: the last two documents (7 tokens each, EOS included)
    assert train == docs[:4]
    assert windows.shape == (3, 5) and bool((windows[:, 0] == tok.bos_token_id).all())
    assert windows[0, 1:].tolist() == tok(docs[4], add_special_tokens=False).input_ids[:4]
    with pytest.raises(ValueError, match="too short"):
        held_out_split(["a b"], tok, context=8, n_tokens=10)


def _save_tiny(tmp: Path) -> tuple[Path, Path, Path]:
    rm = build("llama", "plt", dtype=torch.float32)
    model_dir, tc_dir = save_to_disk(rm, tmp)
    corpus = tmp / "corpus.txt"
    rng = random.Random(0)
    corpus.write_text(
        "\n\n".join(
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) for _ in range(80)
        )
    )
    return model_dir, tc_dir, corpus


def test_cli_writes_table_json_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    model_dir, tc_dir, corpus = _save_tiny(tmp_path)
    args = ["eval-transcoders", "-t", str(tc_dir), "-m", str(model_dir), "--corpus", str(corpus)]
    args += ["--n-tokens", "200", "--context", "16", "--score-prompts", "1", "--quiet"]
    args += ["--json", str(tmp_path / "e.json"), "--plot", str(tmp_path / "e.png")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "loss_repl" in out and "replacement score of 1 prompts" in out
    record = json.loads((tmp_path / "e.json").read_text())
    assert record["n_tokens"] == 14 * 15 and record["held_out"] == "last documents"
    assert len(record["fvu"]) == 2 and len(record["loss_recovered"]) == 2
    assert record["overall"]["fvu_mean"] == pytest.approx(sum(record["fvu"]) / 2)
    assert (tmp_path / "e.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_refuses_a_png_without_matplotlib(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import raises ImportError
    args = ["eval-transcoders", "-t", str(tmp_path / "missing"), "--corpus", "x.txt"]
    assert main([*args, "--plot", str(tmp_path / "e.png")]) == 2
    assert "circuitlab[plots]" in capsys.readouterr().err


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_agrees_with_the_library_reconstruction(family: str) -> None:
    """FVU from ``Transcoders.forward`` on captured reads/writes; clean loss from a plain
    forward; replacing nothing would be the clean loss (each family's hook points)."""
    rm = build(family, "plt_skip")
    ids = _ids(2, batch=1, pos=8)
    ev = evaluate_transcoders(rm, [ids])
    _, cap = rm.capture(ids[0])
    reads, writes = cap.stacked_reads(), cap.stacked_writes()
    recon = rm.transcoders(reads)
    for layer in range(rm.n_layers):
        y, y_hat = writes[layer, 1:], recon[layer, 1:]
        fvu = float(((y - y_hat) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())
        assert ev.fvu[layer] == pytest.approx(fvu, rel=1e-9)
    with torch.no_grad():
        logits = rm.model(input_ids=ids).logits  # type: ignore[operator]
    assert ev.loss_clean == pytest.approx(_ce(logits, ids), rel=1e-9)
    assert ev.loss_all_zero != pytest.approx(ev.loss_clean)
