"""Activation patching: exact endpoints, batching, and agreement with a one-at-a-time loop."""

from __future__ import annotations

import pytest
import torch

from circuitlab.heads import Target, patch_sweep
from circuitlab.models.adapters import get_module

from .builders import CORRUPTED, PROMPT, tiny_lab

TARGET = Target(3, 4)


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen3", "gemma2", "gemma3"])
def test_clean_equals_corrupted_recovers_exactly_zero(family):
    lab = tiny_lab(family)
    for kind in ("head", "resid", "mlp"):
        res = patch_sweep(lab, PROMPT, PROMPT, TARGET, kind=kind, batch_size=5)
        assert res.clean_metric == res.corrupted_metric
        assert torch.equal(res.recovery, torch.zeros_like(res.recovery))


@pytest.mark.parametrize("family", ["gpt2", "llama", "mistral", "gemma2", "gemma3"])
def test_full_swap_recovers_exactly_one(family):
    lab = tiny_lab(family, n_layers=3)
    res = patch_sweep(lab, PROMPT, CORRUPTED, TARGET, kind="resid", per_position=False)
    assert res.clean_metric != res.corrupted_metric
    # One to rounding: batch rows agree to the last bit only on some CPUs (BatchOut.of_metrics).
    assert torch.allclose(res.recovery, torch.ones(3, dtype=torch.float64), atol=1e-12, rtol=0)
    # Patching where the prompts agree (before the corrupted token) changes nothing: exactly 0.
    per_pos = patch_sweep(lab, PROMPT, CORRUPTED, TARGET, kind="resid")
    first = CORRUPTED.index(6)
    assert torch.equal(per_pos.recovery[:, :first], torch.zeros(3, first, dtype=torch.float64))
    # The embeddings differ only at that token: swapping it there is the whole swap.
    assert per_pos.recovery[0, first] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen2", "gemma2"])
def test_every_head_patched_at_once_by_its_own_value_is_a_no_op(family):
    lab = tiny_lab(family)
    res = patch_sweep(lab, PROMPT, PROMPT, TARGET, kind="head", per_position=True)
    assert res.recovery.shape == (lab.n_layers, lab.n_heads, len(PROMPT))
    assert not res.recovery.any()


def reference_metric(lab, kind: str, layer: int, head: int | None, pos: int | None) -> float:
    """Unbatched patching with plain torch hooks: record the clean run, patch the corrupted."""
    block = get_module(lab.model, lab.adapter.blocks)[layer]  # type: ignore[index]
    ad = lab.adapter
    attn = get_module(block, ad.attn)
    point = {
        "head": (get_module(attn, ad.out_proj), True),
        "resid": (block, True),
        "mlp": (get_module(block, ad.post_mlp_norm or ad.mlp), False),
    }[kind]
    module, is_pre = point
    where = slice(None) if pos is None else pos
    dh = lab.spec.d_head
    cols = slice(None) if head is None else slice(head * dh, (head + 1) * dh)
    saved: dict[str, torch.Tensor] = {}

    def pre(m, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        if "clean" not in saved:
            saved["clean"] = x.clone()
            return None
        x = x.clone()
        x[:, where, cols] = saved["clean"][:, where, cols]
        if args:
            return (x, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": x}

    def post(m, args, out):
        if "clean" not in saved:
            saved["clean"] = out.clone()
            return None
        out = out.clone()
        out[:, where] = saved["clean"][:, where]
        return out

    handle = (
        module.register_forward_pre_hook(pre, with_kwargs=True)
        if is_pre
        else module.register_forward_hook(post)
    )
    cfg = lab.model.config
    old = getattr(cfg, "final_logit_softcapping", None)
    cfg.final_logit_softcapping = None
    try:
        with torch.no_grad():
            lab.model(input_ids=torch.tensor([PROMPT]), use_cache=False)
            logits = lab.model(input_ids=torch.tensor([CORRUPTED]), use_cache=False).logits
    finally:
        handle.remove()
        cfg.final_logit_softcapping = old
    return float(logits[0, -1, 3] - logits[0, -1, 4])


@pytest.mark.parametrize("family", ["gpt2", "qwen2", "gemma2"])
def test_batched_sweeps_equal_one_at_a_time_patching(family):
    lab = tiny_lab(family)
    heads = patch_sweep(lab, PROMPT, CORRUPTED, TARGET, kind="head", batch_size=3)
    heads_pos = patch_sweep(lab, PROMPT, CORRUPTED, TARGET, kind="head", per_position=True)
    resid = patch_sweep(lab, PROMPT, CORRUPTED, TARGET, kind="resid", batch_size=7)
    mlp = patch_sweep(lab, PROMPT, CORRUPTED, TARGET, kind="mlp", batch_size=64)
    checks = [
        (heads.metric[1, 2], "head", 1, 2, None),
        (heads.metric[0, 0], "head", 0, 0, None),
        (heads_pos.metric[1, 3, 9], "head", 1, 3, 9),
        (resid.metric[1, 7], "resid", 1, 7, 7),
        (resid.metric[1, 10], "resid", 1, 10, 10),
        (mlp.metric[0, 8], "mlp", 0, 8, 8),
        (mlp.metric[1, 11], "mlp", 1, 11, 11),
    ]
    for got, kind, layer, a, b in checks:
        head = a if kind == "head" else None
        pos = b if kind == "head" else a
        assert float(got) == pytest.approx(reference_metric(lab, kind, layer, head, pos), abs=1e-9)
    one = patch_sweep(lab, PROMPT, CORRUPTED, TARGET, kind="head", batch_size=1)
    assert torch.allclose(one.recovery, heads.recovery, atol=1e-9, rtol=0)
    span = heads.clean_metric - heads.corrupted_metric
    assert torch.allclose(heads.recovery, (heads.metric - heads.corrupted_metric) / span, atol=1e-9)


def test_patching_needs_prompts_of_equal_length():
    lab = tiny_lab("llama")
    with pytest.raises(ValueError, match="same token length"):
        patch_sweep(lab, PROMPT, PROMPT[:-1], TARGET)
    with pytest.raises(ValueError, match="Unknown patch kind"):
        patch_sweep(lab, PROMPT, CORRUPTED, TARGET, kind="attn")  # type: ignore[arg-type]
