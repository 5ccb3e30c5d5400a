"""Feature dashboards on tiny models: real top examples, logits, frequencies, resume, CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from circuitlab.cli import main
from circuitlab.features import build as build_mod
from circuitlab.features.build import BuildSettings, build_dashboards, layer_activations
from circuitlab.features.corpus import token_windows
from circuitlab.features.logits import logit_effects
from circuitlab.features.stats import LayerStats
from circuitlab.features.store import read_feature, read_index
from circuitlab.models.session import Plan
from circuitlab.replacement import ReplacementModel

from conftest import FAMILIES, WORDS, build, save_to_disk

SETTINGS = BuildSettings(n_tokens=600, context=12, batch_size=4, checkpoint_every=3)


def _texts(n: int = 40, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 30))) for _ in range(n)]


def _model(kind: str = "plt") -> ReplacementModel:
    m = build("llama", kind, dtype=torch.float32, d_transcoder=24)
    tc = m.transcoders
    if kind == "plt":  # feature 0 of layer 0 can never fire
        tc.layers[0].b_enc.data[0] = -1e4  # type: ignore[index]
    return m


def _all_records(path: Path, n_layers: int, d_t: int) -> list[list[dict]]:
    return [[read_feature(path, layer, f) for f in range(d_t)] for layer in range(n_layers)]


def _brute_force(model: ReplacementModel, texts: list[str], s: BuildSettings) -> list[torch.Tensor]:
    assert model.tokenizer is not None
    windows = list(token_windows(texts, model.tokenizer, s.context))[: s.n_windows]
    return layer_activations(model, torch.stack(windows))


def test_top_examples_are_the_top_activations(tmp_path: Path) -> None:
    model, texts = _model(), _texts()
    build_dashboards(model, texts, tmp_path, SETTINGS, verbose=False)
    acts = _brute_force(model, texts, SETTINGS)
    n_tokens = acts[0].shape[0] * (SETTINGS.context - 1)
    k = SETTINGS.stats.top_k
    for layer, a in enumerate(acts):
        wmax = a.amax(1)  # [windows, d_t]
        for f in range(a.shape[-1]):
            rec = read_feature(tmp_path, layer, f)
            assert rec["activation_frequency"] == pytest.approx(
                float((a[..., f] > 0).sum()) / n_tokens
            )
            assert rec["act_max"] == pytest.approx(float(a[..., f].max()), rel=1e-5)
            fired = wmax[:, f] > 0
            if not fired.any():
                assert rec["examples_quantiles"] == [] and rec["act_min"] == 0.0
                continue
            top = rec["examples_quantiles"][0]
            assert top["quantile_name"] == "Top activations"
            got = [max(e["tokens_acts_list"]) for e in top["examples"]]
            want = wmax[:, f].sort(descending=True).values[: min(k, int(fired.sum()))]
            torch.testing.assert_close(torch.tensor(got), want, rtol=2e-3, atol=1e-4)
            for e in top["examples"]:
                assert len(e["tokens"]) == len(e["tokens_acts_list"]) == SETTINGS.context - 1
                assert e["tokens_acts_list"][e["train_token_ind"]] == max(e["tokens_acts_list"])
            maxima = [
                max(max(e["tokens_acts_list"]) for e in q["examples"])
                for q in rec["examples_quantiles"][1:]
            ]
            minima = [
                min(max(e["tokens_acts_list"]) for e in q["examples"])
                for q in rec["examples_quantiles"][1:]
            ]
            for lo, hi in zip(minima[:-1], maxima[1:], strict=True):
                assert hi <= lo * 1.002  # bands are ordered (float16 example values)


def test_a_feature_that_never_fires_gets_a_zero_record(tmp_path: Path) -> None:
    model = _model()
    build_dashboards(model, _texts(), tmp_path, SETTINGS, verbose=False)
    rec = read_feature(tmp_path, 0, 0)
    assert rec["activation_frequency"] == 0 and rec["examples_quantiles"] == []
    assert rec["act_max"] == 0 and rec["quantile_values"] == [] and sum(rec["histogram"]) == 0
    assert len(rec["top_logits"]) == len(rec["bottom_logits"]) == SETTINGS.n_logits
    assert {"transcoder_id", "layer", "index", "act_min"} <= set(rec)


def test_top_logits_follow_the_decoder_through_norm_and_unembedding(tmp_path: Path) -> None:
    model = _model()
    build_dashboards(model, _texts(), tmp_path, SETTINGS, verbose=False)
    tok = model.tokenizer
    assert tok is not None
    layer, f = 1, 5
    d = model.transcoders.decoder_rows(layer, torch.tensor([f]))[0, 0]
    w: torch.Tensor = model.model.model.norm.weight  # type: ignore[union-attr,assignment]
    eff = model.unembed_weight @ (d * w)
    torch.testing.assert_close(logit_effects(model, d[None])[0], eff)
    rec = read_feature(tmp_path, layer, f)
    assert rec["top_logits"] == [tok.decode([i]) for i in eff.topk(10).indices.tolist()]
    assert rec["bottom_logits"] == [tok.decode([i]) for i in (-eff).topk(10).indices.tolist()]


def test_resume_after_an_interruption_gives_the_same_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, texts = _model(), _texts()
    build_dashboards(model, texts, tmp_path / "straight", SETTINGS, verbose=False)
    calls = {"n": 0}
    real = LayerStats.update

    def crashing(self: LayerStats, acts: torch.Tensor, windows: torch.Tensor) -> None:
        calls["n"] += 1
        if calls["n"] == 2 * 8 + 1:  # in batch 9, after the checkpoint of batch 6
            raise KeyboardInterrupt
        real(self, acts, windows)

    monkeypatch.setattr(LayerStats, "update", crashing)
    with pytest.raises(KeyboardInterrupt):
        build_dashboards(model, texts, tmp_path / "resumed", SETTINGS, verbose=False)
    assert not (tmp_path / "resumed" / "features").exists()
    assert (tmp_path / "resumed" / build_mod.CHECKPOINT_DIR / build_mod.CHECKPOINT_NAME).is_file()
    monkeypatch.setattr(LayerStats, "update", real)
    out = build_dashboards(model, texts, tmp_path / "resumed", SETTINGS, verbose=False)
    assert '"resumed_from_window": 24' in (out / "build.json").read_text()
    assert not (tmp_path / "resumed" / build_mod.CHECKPOINT_DIR).exists()
    assert _all_records(tmp_path / "resumed", 2, 24) == _all_records(tmp_path / "straight", 2, 24)
    assert read_index(tmp_path / "resumed") == read_index(tmp_path / "straight")


def test_changed_settings_refuse_a_stale_checkpoint(tmp_path: Path) -> None:
    model, texts = _model(), _texts()
    ckpt = tmp_path / build_mod.CHECKPOINT_DIR / build_mod.CHECKPOINT_NAME
    state = build_mod._State([LayerStats(24) for _ in range(2)])
    build_mod._save_checkpoint(ckpt, {"model": "other"}, state)
    with pytest.raises(ValueError, match="--restart"):
        build_dashboards(model, texts, tmp_path, SETTINGS, verbose=False)
    build_dashboards(model, texts, tmp_path, SETTINGS, verbose=False, restart=True)
    with pytest.raises(FileExistsError, match="--overwrite"):
        build_dashboards(model, texts, tmp_path, SETTINGS, verbose=False)


def test_cli_builds_clt_dashboards(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = build("llama", "clt_skip", dtype=torch.float32, d_transcoder=16)
    save_to_disk(model, tmp_path)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": t}) for t in _texts(20)))
    args = ["features", "build", "-m", str(tmp_path / "model"), "-t", str(tmp_path / "tc")]
    args += ["--corpus", str(corpus), "-o", str(tmp_path / "dash"), "--n-tokens", "200"]
    args += ["--context", "10", "--quiet"]
    assert main(args) == 0
    assert "saved" in capsys.readouterr().out
    rec = read_feature(tmp_path / "dash", 1, 3)
    assert rec["layer"] == 1 and rec["index"] == 3
    assert main(["features", "show", str(tmp_path / "dash"), "1", "3"]) == 0
    assert '"index": 3' in capsys.readouterr().out
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["features", "show", str(tmp_path / "dash"), "7", "0"]) == 2


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["plt", "plt_resid_mid"])
def test_lean_forward_reads_what_the_hooked_session_reads(family: str, kind: str) -> None:
    model = build(family, kind)
    ids = torch.randint(3, 60, (2, 7), generator=torch.Generator().manual_seed(0))
    ids[:, 0] = 0
    acts = layer_activations(model, ids)
    _, cap = model.run(ids, Plan(record=True))
    assert cap is not None
    for layer in range(model.n_layers):
        want = model.transcoders.encode(layer, cap.reads[layer])
        want[:, 0] = 0
        torch.testing.assert_close(acts[layer], want.float())
