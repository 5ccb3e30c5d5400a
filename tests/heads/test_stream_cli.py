"""JSON streams, presets and the ``circuitlab heads`` command."""

from __future__ import annotations

import json

import pytest
import torch

from circuitlab.cli import main
from circuitlab.heads import (
    PRESETS,
    LabModel,
    Target,
    get_preset,
    patch_sweep,
    path_patch,
    stream_analysis,
    stream_patching,
    stream_path_patching,
)
from circuitlab.models.tiny import tiny_model

from .builders import CORRUPTED, PROMPT, tiny_lab
from conftest import tiny_tokenizer


def test_analysis_streams_json_layer_by_layer():
    lab = tiny_lab("gemma3", n_layers=3)
    events = list(stream_analysis(lab, PROMPT, Target(3, 4)))
    assert [e["event"] for e in events] == ["start", "layer", "layer", "layer", "done"]
    assert [e["layer"] for e in events[1:-1]] == [0, 1, 2]
    head = events[1]["heads"][0]
    assert len(head["pattern"]) == len(PROMPT) and head["class"]
    json.dumps(events, allow_nan=False)  # NaN scores are sent as null
    total = sum(h["dla"] for e in events[1:-1] for h in e["heads"])
    total += sum(e["mlp_dla"] + e["attn_bias_dla"] for e in events[1:-1])
    total += events[-1]["dla_embed"] + events[-1]["dla_const"]
    assert total == pytest.approx(events[-1]["logit"], abs=1e-3)


def test_patching_streams_each_layer_once_per_kind():
    lab = tiny_lab("qwen3")
    events = list(stream_patching(lab, PROMPT, CORRUPTED, Target(3, 4), batch_size=5))
    patches = [(e["kind"], e["layer"]) for e in events if e["event"] == "patch"]
    assert patches == [(k, layer) for k in ("head", "resid", "mlp") for layer in (0, 1)]
    json.dumps(events, allow_nan=False)
    res = patch_sweep(lab, PROMPT, CORRUPTED, Target(3, 4), kind="resid")
    resid1 = next(e for e in events if e.get("kind") == "resid" and e["layer"] == 1)
    assert resid1["values"] == [round(v, 4) for v in res.recovery[1].tolist()]


@pytest.mark.parametrize(("receivers", "batch_size"), [("logits", 3), ([(2, 1)], 5), ([(1, 0)], 1)])
def test_path_patching_streams_each_sender_layer_once(receivers, batch_size):
    lab = tiny_lab("llama", n_layers=3)
    events = list(
        stream_path_patching(
            lab, PROMPT, CORRUPTED, Target(3, 4), receivers=receivers, batch_size=batch_size
        )
    )
    assert [e["event"] for e in events] == ["start", "path", "path", "path", "done"]
    assert [e["layer"] for e in events[1:-1]] == [0, 1, 2]
    json.dumps(events, allow_nan=False)
    want = path_patch(lab, PROMPT, CORRUPTED, Target(3, 4), receivers=receivers)
    assert [e["values"] for e in events[1:-1]] == [
        [round(v, 4) for v in row] for row in want.recovery.tolist()
    ]
    assert [e["metric"] for e in events[1:-1]] == [
        [round(v, 4) for v in row] for row in want.metric.tolist()
    ]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_equal_length_prompts_with_roles(name):
    preset = get_preset(name)
    pp = preset.build(None)
    assert pp.clean != pp.corrupted and pp.answer != pp.wrong
    assert len(pp.clean.split()) == len(pp.corrupted.split())
    assert preset.roles and preset.circuit
    for role in preset.roles:
        assert 0 <= role.depth[0] < role.depth[1] <= 1


@pytest.fixture
def tiny_dir(tmp_path):
    model = tiny_model("llama", n_layers=2, vocab=32)
    model.save_pretrained(tmp_path)  # type: ignore[operator]
    tiny_tokenizer().save_pretrained(tmp_path)
    return tmp_path


def test_cli_analyses_and_patches_a_local_model(tiny_dir, tmp_path, capsys):
    out = tmp_path / "events.jsonl"
    code = main(
        [
            "heads", "-m", str(tiny_dir), "-p", "the capital of France is",
            "--corrupted", "the capital of Texas is", "--answer", "Paris", "--wrong", "Austin",
            "--patch", "head,resid", "--json", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "direct logit attribution" in text and "patching" in text
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(e["event"] == "done" for e in events) == 2


def test_cli_errors_are_one_line(tiny_dir, capsys):
    assert main(["heads", "-m", str(tiny_dir)]) == 2
    assert "exactly one of" in capsys.readouterr().err
    args = ["heads", "-m", str(tiny_dir), "-p", "the capital", "--corrupted", "the capital of"]
    assert main(args) == 2
    assert "same token length" in capsys.readouterr().err
    assert main(["heads", "--list-presets"]) == 0
    assert "ioi" in capsys.readouterr().out


def test_lab_model_wraps_without_changing_outputs():
    hf = tiny_model("mistral", dtype=torch.float64)
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        before = hf(input_ids=ids).logits
    lab = LabModel.wrap(hf)
    with torch.no_grad():
        after = lab.model(input_ids=ids).logits
    # transformers' eager attention takes its softmax in float32 even for float64 models.
    assert torch.allclose(before, after, atol=1e-5)
