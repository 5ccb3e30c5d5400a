"""``estimate_cost``: the time and file-size predictions of ``estimate-memory`` grow as the
work does, follow the rate they are given, and the file size matches a saved graph."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from circuitlab.attribution import attribute
from circuitlab.attribution.cost import causal_share, estimate_cost, file_bytes
from circuitlab.attribution.memory import ModelShapes, TranscoderShapes, shapes_from_config
from circuitlab.attribution.memory_check import loaded_shapes
from circuitlab.cli import main

from conftest import build

MODEL = ModelShapes(30, 576, 9, 3, 64, 1536, 49152, 134_515_008, True)
TC = TranscoderShapes("plt", 30, 576, 4096, False, None)


def test_time_grows_with_the_prompt_and_the_rows_and_follows_the_rate() -> None:
    times = [estimate_cost(MODEL, TC, n, l0=19).total_seconds for n in (128, 512, 2048)]
    assert times[0] < times[1] < times[2]
    # The transposed attention makes long prompts cost more than linearly per row.
    per_row = [estimate_cost(MODEL, TC, n, l0=19).seconds_per_row(7500) for n in (512, 2048)]
    assert per_row[1] > 4 * per_row[0]
    few = estimate_cost(MODEL, TC, 512, l0=19, max_feature_nodes=100)
    assert (
        few.seconds["feature rows"] < estimate_cost(MODEL, TC, 512, l0=19).seconds["feature rows"]
    )
    fast = estimate_cost(MODEL, TC, 512, l0=19, flops_per_second=1e12)
    slow = estimate_cost(MODEL, TC, 512, l0=19, flops_per_second=1e11)
    assert slow.total_seconds == pytest.approx(10 * fast.total_seconds)
    with pytest.raises(ValueError, match="flops_per_second"):
        estimate_cost(MODEL, TC, 8, flops_per_second=0)


def test_causal_share_counts_the_blocks_computed() -> None:
    assert causal_share(100) == 1.0
    assert causal_share(512) == pytest.approx(0.75)
    assert causal_share(2048) == pytest.approx(9 / 16)


@pytest.mark.parametrize("cap", [None, 20])
def test_file_size_is_close_to_a_saved_graph(tmp_path: Path, cap: int | None) -> None:
    rm = build("llama", "plt", dtype=torch.float32, n_layers=3, d_model=32, d_transcoder=64)
    ids = [0] + [3 + i % 20 for i in range(47)]
    graph = attribute(rm, ids, max_feature_nodes=cap)
    graph.save(tmp_path / "g.safetensors")
    measured = (tmp_path / "g.safetensors").stat().st_size
    model, tc, _ = loaded_shapes(rm)
    predicted = file_bytes(
        model, tc, len(ids), graph.n_selected, graph.n_active, graph.n_logits, "float32"
    )
    assert 0.5 <= measured / predicted <= 2, (measured, predicted)


def test_estimate_memory_prints_time_and_file_size(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from circuitlab.models.tiny import tiny_model
    from circuitlab.transcoders import random_transcoder_set

    tiny_model("llama", n_layers=2, d_model=16).save_pretrained(tmp_path / "model")
    tc = random_transcoder_set(2, 16, 32, activation="jump_relu")
    tc.model_name = str(tmp_path / "model")
    tc.save(str(tmp_path / "tc"))
    argv = ["estimate-memory", "-t", str(tmp_path / "tc"), "--n-tokens", "64"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "predicted time:" in out and "predicted graph file:" in out
    # --l0 takes eval-transcoders' JSON (its mean l0 over layers) as well as a number.
    (tmp_path / "eval.json").write_text(json.dumps({"l0": [3.0, 5.0], "fvu": [0.1, 0.2]}))
    assert main([*argv, "--l0", str(tmp_path / "eval.json"), "--json", "--gflops", "5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["assumptions"]["l0"] == 4.0 and report["flops_per_second"] == 5e9
    assert report["file_bytes"] > 0 and report["predicted_seconds"] > 0
    assert main([*argv, "--l0", str(tmp_path / "nothing.json")]) == 2
    assert "neither a number nor a file" in capsys.readouterr().err


def test_shapes_of_a_config_feed_the_cost() -> None:
    cfg = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
           "intermediate_size": 128, "vocab_size": 100, "model_type": "llama"}  # fmt: skip
    model = shapes_from_config(cfg)
    tc = TranscoderShapes("clt", 2, 64, 32, True, 4)
    cost = estimate_cost(model, tc, 16)
    assert cost.file_bytes > 0 and all(v > 0 for v in cost.seconds.values())
