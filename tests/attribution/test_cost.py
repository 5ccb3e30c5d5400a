"""``estimate_cost``: the time prediction schedules the sweeps as ``attribute`` runs them, grows
as the work does and divides by the rates it is given; the file size matches a saved graph."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
import torch

from circuitlab.attribution import attribute
from circuitlab.attribution import cost_rates as cr
from circuitlab.attribution.backward import FrozenBackward
from circuitlab.attribution.cost import estimate_cost, file_bytes, schedule
from circuitlab.attribution.cost_rates import REFERENCE
from circuitlab.attribution.memory import ModelShapes, TranscoderShapes, shapes_from_config
from circuitlab.attribution.memory_check import loaded_shapes
from circuitlab.cli import main

from conftest import build

MODEL = ModelShapes(30, 576, 9, 3, 64, 1536, 49152, 134_515_008, True)
TC = TranscoderShapes("plt", 30, 576, 4096, False, None)
IDS = [0] + [3 + i % 20 for i in range(47)]


def test_time_grows_with_the_prompt_and_the_rows() -> None:
    times = [estimate_cost(MODEL, TC, n, l0=19).total_seconds for n in (128, 512, 2048)]
    assert times[0] < times[1] < times[2]
    # The transposed pattern makes long prompts cost more than linearly per row.
    per_row = [estimate_cost(MODEL, TC, n, l0=19).seconds_per_row for n in (512, 2048)]
    assert per_row[1] > 4 * per_row[0]
    few = estimate_cost(MODEL, TC, 512, l0=19, max_feature_nodes=100)
    assert few.feature_rows == 100 and few.sweeps < estimate_cost(MODEL, TC, 512, l0=19).sweeps
    assert (
        few.seconds["feature rows"] < estimate_cost(MODEL, TC, 512, l0=19).seconds["feature rows"]
    )
    # A smaller sweep batch (the memory check's halving) means more sweeps, the same rows.
    halved = estimate_cost(MODEL, TC, 512, l0=19, sweep_batch=128)
    assert halved.sweeps > estimate_cost(MODEL, TC, 512, l0=19).sweeps
    assert halved.feature_rows == 7500 and halved.sweep_batch == 128


def test_time_divides_by_the_rates() -> None:
    fast = estimate_cost(MODEL, TC, 512, l0=19, rates=REFERENCE.scaled_to(10 * REFERENCE.matmul))
    slow = estimate_cost(MODEL, TC, 512, l0=19)
    assert slow.total_seconds == pytest.approx(10 * fast.total_seconds)
    assert fast.file_bytes == slow.file_bytes
    # Only the pattern rate slower: the pattern's share of the sweep grows with the prompt.
    pattern = replace(REFERENCE, pattern=REFERENCE.pattern / 2)
    ratios = [
        estimate_cost(MODEL, TC, n, l0=19, rates=pattern).total_seconds
        / estimate_cost(MODEL, TC, n, l0=19).total_seconds
        for n in (128, 2048)
    ]
    assert 1 < ratios[0] < ratios[1] < 2
    with pytest.raises(ValueError, match="at least 1"):
        estimate_cost(MODEL, TC, 0)


def _recorded_sweeps(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """``(rows, furthest position + 1, layers passed)`` of every sweep ``attribute`` runs."""
    seen: list[tuple[int, int, int]] = []
    rows = FrozenBackward.rows

    def recording(self, sources, layers, positions, vectors):  # noqa: ANN001, ANN202
        passed = int(layers.clamp(max=len(self.layers)).sum())
        seen.append((len(layers), int(positions.max()) + 1, passed))
        return rows(self, sources, layers, positions, vectors)

    monkeypatch.setattr(FrozenBackward, "rows", recording)
    return seen


@pytest.mark.parametrize("cap", [None, 40])
def test_schedule_matches_the_sweeps_attribute_runs(
    monkeypatch: pytest.MonkeyPatch, cap: int | None
) -> None:
    rm = build("llama", "plt", dtype=torch.float32, n_layers=3, d_model=32, d_transcoder=64)
    seen = _recorded_sweeps(monkeypatch)
    graph = attribute(rm, IDS, max_feature_nodes=cap, batch_size=8, update_interval=2)
    model, tc, _ = loaded_shapes(rm)
    n, n_active = len(IDS), graph.n_active
    logits, features = schedule(model, tc, n, n_active, graph.n_selected, graph.n_logits, 8, 16)
    predicted = logits + features
    # The same sweeps, each with the same number of rows; logit sweeps exactly.
    assert [s.rows for s in predicted] == [s[0] for s in seen]
    assert [(s.positions, s.layer_steps) for s in logits] == [s[1:] for s in seen[: len(logits)]]
    # Feature sweeps: the positions they reach in total, as the schedule assumes (every
    # active feature spread over the prompt; a capped choice near its end). Uncapped, the
    # rows are the active features, so the layers they pass follow from them too (under a
    # cap the depth is an assumption measured on SmolLM2, cost.SELECTED_DEPTH).
    measured = seen[len(logits) :]
    reach = sum(s.positions for s in features) / sum(s[1] for s in measured)
    assert 0.75 < reach < 1.25, reach
    if cap is None:
        steps = sum(s.layer_steps for s in features) / sum(s[2] for s in measured)
        assert 0.8 < steps < 1.25, steps
    # The estimate uses that schedule.
    est = estimate_cost(model, tc, n, max_feature_nodes=cap, max_n_logits=graph.n_logits,
                        batch_size=8, update_interval=2, n_active=n_active)  # fmt: skip
    assert est.sweeps == len(seen) and est.feature_rows == graph.n_selected


@pytest.mark.parametrize("cap", [None, 20])
def test_file_size_is_close_to_a_saved_graph(tmp_path: Path, cap: int | None) -> None:
    rm = build("llama", "plt", dtype=torch.float32, n_layers=3, d_model=32, d_transcoder=64)
    graph = attribute(rm, IDS, max_feature_nodes=cap)
    graph.save(tmp_path / "g.safetensors")
    measured = (tmp_path / "g.safetensors").stat().st_size
    model, tc, _ = loaded_shapes(rm)
    predicted = file_bytes(
        model, tc, len(IDS), graph.n_selected, graph.n_active, graph.n_logits, "float32"
    )
    assert 0.5 <= measured / predicted <= 2, (measured, predicted)


@pytest.fixture
def tc_dir(tmp_path: Path) -> Path:
    from circuitlab.models.tiny import tiny_model
    from circuitlab.transcoders import random_transcoder_set

    tiny_model("llama", n_layers=2, d_model=16).save_pretrained(tmp_path / "model")
    tc = random_transcoder_set(2, 16, 32, activation="jump_relu")
    tc.model_name = str(tmp_path / "model")
    tc.save(str(tmp_path / "tc"))
    return tmp_path / "tc"


def test_estimate_memory_prints_time_and_file_size(
    tc_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIRCUITLAB_CACHE", str(tmp_path / "cache"))
    argv = ["estimate-memory", "-t", str(tc_dir), "--n-tokens", "64"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "predicted time:" in out and "predicted graph file:" in out
    assert "rates (reference)" in out
    # --l0 takes eval-transcoders' JSON (its mean l0 over layers) as well as a number;
    # --gflops scales the reference rates to that matmul speed.
    (tmp_path / "eval.json").write_text(json.dumps({"l0": [3.0, 5.0], "fvu": [0.1, 0.2]}))
    assert main([*argv, "--l0", str(tmp_path / "eval.json"), "--json", "--gflops", "5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["assumptions"]["l0"] == 4.0 and report["rates"]["matmul"] == 5e9
    assert report["rates"]["read"] == pytest.approx(REFERENCE.read * 5e9 / REFERENCE.matmul)
    assert report["file_bytes"] > 0 and report["predicted_seconds"] > 0
    assert main([*argv, "--l0", str(tmp_path / "nothing.json")]) == 2
    assert "neither a number nor a file" in capsys.readouterr().err
    assert main([*argv, "--gflops", "0"]) == 2


def test_calibrate_saves_the_rates_that_later_estimates_use(
    tc_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIRCUITLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cr, "calibrate", partial(cr.calibrate, seconds=0.02))
    argv = ["estimate-memory", "-t", str(tc_dir), "--n-tokens", "64", "--json"]
    assert main([*argv, "--calibrate"]) == 0
    calibrated = json.loads(capsys.readouterr().out)["rates"]
    assert calibrated["machine"] == cr.machine_id() != "reference"
    assert (tmp_path / "cache" / cr.RATES_FILE).is_file()
    assert main(argv) == 0  # no flag: this machine's saved rates
    again = json.loads(capsys.readouterr().out)
    assert again["rates"] == calibrated
    # --gflops still means the reference rates, scaled
    assert main([*argv, "--gflops", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["rates"]["machine"].startswith("reference")
    with pytest.raises(SystemExit, match="2"):
        main([*argv, "--calibrate", "--gflops", "5"])
    assert "not allowed with" in capsys.readouterr().err


def test_shapes_of_a_config_feed_the_cost() -> None:
    cfg = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
           "intermediate_size": 128, "vocab_size": 100, "model_type": "llama"}  # fmt: skip
    model = shapes_from_config(cfg)
    tc = TranscoderShapes("clt", 2, 64, 32, True, 4)
    cost = estimate_cost(model, tc, 16)
    assert cost.file_bytes > 0 and all(v >= 0 for v in cost.seconds.values())
    assert cost.total_seconds > 0
