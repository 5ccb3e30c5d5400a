"""Path patching: exact identities with activation patching on tiny random models.

Notation for a 2-layer model with the layer-1 MLP zeroed, sender S in layer 0: the final
residual is ``R1 + A1`` (what enters layer 1, plus what layer 1's heads add). Ordinary patching
of S gives ``R1_P + A1_P``; path patching to the logits (layer-1 heads frozen) ``R1_P + A1_c``;
path patching to every layer-1 head's q, k and v (the heads see the inputs they had in the
sender run, which equal those in the patched run) ``R1_c + A1_P``; the corrupted run
``R1_c + A1_c``. So with an affine final norm (the metric then is affine in the residual)
``path(logits) + path(all layer-1 heads, qkv) == head patching``, sender by sender.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from circuitlab.cli import main
from circuitlab.heads import LabModel, Target, patch_sweep, path_patch
from circuitlab.models.adapters import get_module
from circuitlab.models.tiny import tiny_model

from .builders import CORRUPTED, PROMPT, tiny_lab
from conftest import tiny_tokenizer

TARGET = Target(3, 4)
ATOL = 1e-10


def zero_(module: nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()


def attn(lab: LabModel, layer: int) -> nn.Module:
    return get_module(lab.blocks()[layer], lab.adapter.attn)


def linear_head_lab(family: str) -> LabModel:
    """2 layers, the layer-1 MLP zeroed and the final norm replaced by the identity."""
    lab = tiny_lab(family)
    zero_(get_module(lab.blocks()[1], lab.adapter.mlp))
    parent, _, name = lab.adapter.final_norm.rpartition(".")
    setattr(get_module(lab.model, parent), name, nn.Identity())
    return lab


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen3", "gemma3"])
def test_clean_equals_corrupted_gives_exactly_zero(family):
    lab = tiny_lab(family, n_layers=3)
    for receivers, inputs in [("logits", "qkv"), ([(2, 1), (1, 0)], "qkv"), ([(2, 3)], "k")]:
        res = path_patch(lab, PROMPT, PROMPT, TARGET, receivers=receivers, inputs=inputs)
        assert res.clean_metric == res.corrupted_metric
        assert torch.equal(res.recovery, torch.zeros(3, lab.n_heads, dtype=torch.float64))
        # Batch rows agree to rounding, not bit for bit (see BatchOut.of_metrics).
        assert torch.allclose(
            res.metric, torch.full_like(res.metric, res.corrupted_metric), atol=1e-12, rtol=0
        )


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen3", "gemma2", "gemma3"])
def test_last_layer_senders_to_logits_equal_head_patching(family):
    lab = tiny_lab(family, n_layers=3)
    path = path_patch(lab, PROMPT, CORRUPTED, TARGET, batch_size=5)
    heads = patch_sweep(lab, PROMPT, CORRUPTED, TARGET, kind="head")
    assert path.clean_metric == heads.clean_metric
    assert path.corrupted_metric == heads.corrupted_metric
    assert torch.allclose(path.recovery[-1], heads.recovery[-1], atol=1e-12, rtol=0)
    assert path.recovery[-1].abs().max() > 1e-3
    # Earlier senders differ: freezing the later heads removes the paths through them.
    assert not torch.allclose(path.recovery[0], heads.recovery[0], atol=1e-3)


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen3", "gemma3"])
def test_logits_path_equals_head_patching_when_later_heads_write_nothing(family):
    for layer in range(2):
        lab = tiny_lab(family, n_layers=3)
        for later in range(layer + 1, 3):  # freezing a head that writes nothing changes nothing
            zero_(get_module(attn(lab, later), lab.adapter.out_proj))
        path = path_patch(lab, PROMPT, CORRUPTED, TARGET)
        heads = patch_sweep(lab, PROMPT, CORRUPTED, TARGET, kind="head")
        # Senders in `layer` (and the silent later ones) see nothing frozen that matters.
        assert torch.allclose(path.recovery[layer:], heads.recovery[layer:], atol=1e-12, rtol=0)
        assert path.recovery[layer].abs().max() > 1e-3


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen3", "gemma3"])
def test_direct_path_plus_qkv_path_to_next_layer_is_the_total_effect(family):
    lab = linear_head_lab(family)
    layer1 = [(1, h) for h in range(lab.n_heads)]
    total = patch_sweep(lab, PROMPT, CORRUPTED, TARGET, kind="head").recovery
    direct = path_patch(lab, PROMPT, CORRUPTED, TARGET).recovery
    via = path_patch(lab, PROMPT, CORRUPTED, TARGET, receivers=layer1, inputs="qkv").recovery
    assert torch.equal(via[1], torch.zeros(lab.n_heads, dtype=torch.float64))  # cannot reach
    assert via[0].abs().max() > 1e-3 and (direct[0] - total[0]).abs().max() > 1e-3
    assert torch.allclose(direct + via, total, atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen3"])
def test_query_paths_add_up_head_by_head(family):
    # No post-attention norm: layer 1's heads add to the residual independently, and q is
    # per head, so the query paths to single heads sum to the query path to all of them.
    lab = linear_head_lab(family)
    n = lab.n_heads
    one = [path_patch(lab, PROMPT, CORRUPTED, TARGET, receivers=[(1, h)], inputs="q") for h in range(n)]  # fmt: skip
    every = path_patch(lab, PROMPT, CORRUPTED, TARGET, receivers=[(1, h) for h in range(n)], inputs="q")  # fmt: skip
    summed = torch.stack([r.recovery for r in one]).sum(0)
    assert every.recovery[0].abs().max() > 1e-3
    assert torch.allclose(summed, every.recovery, atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", ["llama", "qwen3"])
@pytest.mark.parametrize("inputs", ["k", "v", "kv"])
def test_key_value_paths_patch_the_whole_group(family, inputs):
    lab = linear_head_lab(family)
    group = lab.n_heads // lab.spec.n_kv_heads
    assert group == 2  # the tiny models use grouped-query attention

    def run(heads):
        return path_patch(lab, PROMPT, CORRUPTED, TARGET, receivers=heads, inputs=inputs).recovery

    groups = [[(1, g * group + i) for i in range(group)] for g in range(lab.spec.n_kv_heads)]
    by_group = [run(heads) for heads in groups]
    for heads, expected in zip(groups, by_group, strict=True):
        for head in heads:  # one query head's k/v is its whole group's
            assert torch.equal(run([head]), expected)
    every = run([h for heads in groups for h in heads])
    assert every[0].abs().max() > 1e-3
    assert torch.allclose(sum(by_group), every, atol=ATOL, rtol=0)  # type: ignore[arg-type]


def zero_queries(lab: LabModel, layer: int) -> None:
    """Zeroes the query projection of ``layer`` (GPT-2: the first third of ``c_attn``)."""
    if lab.adapter.family != "gpt2":
        zero_(get_module(attn(lab, layer), "q_proj"))
        return
    c_attn = get_module(attn(lab, layer), "c_attn")
    d = lab.spec.d_model
    with torch.no_grad():
        c_attn.get_parameter("weight")[:, :d] = 0  # Conv1D: [d_in, q | k | v]
        c_attn.get_parameter("bias")[:d] = 0


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen3", "gemma3"])
def test_without_queries_only_the_value_path_carries_anything(family):
    lab = tiny_lab(family, n_layers=3)
    zero_queries(lab, 2)  # layer-2 scores are 0: uniform patterns
    heads = [(2, h) for h in range(lab.n_heads)]

    def run(inputs):
        return path_patch(lab, PROMPT, CORRUPTED, TARGET, receivers=heads, inputs=inputs).recovery

    zero = torch.zeros(3, lab.n_heads, dtype=torch.float64)
    # Zero to rounding: batch rows agree to the last bit only on some CPUs.
    assert torch.allclose(run("q"), zero, atol=1e-12, rtol=0)
    assert torch.allclose(run("qk"), zero, atol=1e-12, rtol=0)
    v = run("v")
    assert v[:2].abs().max() > 1e-3
    assert torch.allclose(v, run("qkv"), atol=1e-12, rtol=0)


def test_batches_do_not_change_the_result():
    lab = tiny_lab("qwen3", n_layers=3)
    kw = dict(receivers=[(2, 0), (1, 3)], inputs="qv")
    one = path_patch(lab, PROMPT, CORRUPTED, TARGET, batch_size=1, **kw)  # type: ignore[arg-type]
    all_ = path_patch(lab, PROMPT, CORRUPTED, TARGET, **kw)  # type: ignore[arg-type]
    assert torch.allclose(one.recovery, all_.recovery, atol=1e-12, rtol=0)
    assert torch.equal(all_.recovery[2], torch.zeros(lab.n_heads, dtype=torch.float64))


def test_bad_receivers_and_inputs_are_refused():
    lab = tiny_lab("llama")
    cases = [
        (dict(receivers=[(1, 0)], inputs="qx"), "letters q, k, v"),
        (dict(receivers=[(1, 0)], inputs=""), "letters q, k, v"),
        (dict(receivers=[]), "empty"),
        (dict(receivers=[(0, 1), (0, 2)]), "layer 0"),
        (dict(receivers=[(2, 0)]), "does not exist"),
        (dict(receivers=[(1, 4)]), "does not exist"),
        (dict(receivers="logit"), "'logits'"),
        (dict(batch_size=0), "batch_size"),
    ]
    for kw, match in cases:
        with pytest.raises(ValueError, match=match):
            path_patch(lab, PROMPT, CORRUPTED, TARGET, **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same token length"):
        path_patch(lab, PROMPT, PROMPT[:-1], TARGET)


@pytest.fixture
def tiny_dir(tmp_path):
    model = tiny_model("qwen3", n_layers=3, vocab=32)
    model.save_pretrained(tmp_path)  # type: ignore[operator]
    tiny_tokenizer().save_pretrained(tmp_path)
    return tmp_path


def test_cli_path_patches_to_logits_and_to_heads(tiny_dir, tmp_path, capsys):
    out = tmp_path / "events.jsonl"
    base = ["heads", "-m", str(tiny_dir), "-p", "the capital of France is",
            "--corrupted", "the capital of Texas is", "--answer", "Paris", "--wrong", "Austin"]  # fmt: skip
    assert main([*base, "--path-patch", "logits", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "path patching every head -> logits" in text and "\npatching" not in text
    event = json.loads(out.read_text().splitlines()[-1])
    assert event["event"] == "path" and len(event["recovery"]) == 3
    assert main([*base, "--path-patch", "2.1, 1.0", "--path-inputs", "kv", "--patch", "head"]) == 0
    text = capsys.readouterr().out
    assert "path patching every head -> L1H0,L2H1 (kv)" in text and "\npatching" in text


def test_cli_path_patch_mistakes_are_one_line(tiny_dir, capsys):
    base = ["heads", "-m", str(tiny_dir), "-p", "the capital of France is"]
    cases = [
        (["--path-patch", "logits"], "needs --corrupted"),
        (["--path-patch", "1:2"], "comma list of LAYER.HEAD"),
        (["--path-patch", "logits", "--path-inputs", "q"], "--path-inputs needs receiver heads"),
        (["--corrupted", "the capital of Texas is", "--path-patch", "1.0", "--path-inputs", "x"],
         "letters q, k, v"),
        (["--corrupted", "the capital of Texas is", "--path-patch", "0.1"], "layer 0"),
        (["--corrupted", "the capital of Texas is", "--path-patch", "7.0"], "does not exist"),
    ]  # fmt: skip
    for extra, message in cases:
        assert main([*base, *extra]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert len(errors) == 1 and message in errors[0]
