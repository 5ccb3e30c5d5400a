"""Direct logit attribution decomposes the logit exactly; the lens ends at the model's logits."""

from __future__ import annotations

import pytest
import torch

from circuitlab.heads import (
    Target,
    direct_logit_attribution,
    head_metrics,
    lens_logits,
    logit_lens,
    run_trace,
    token_flow,
)
from circuitlab.models.tiny import FAMILIES

from .builders import PROMPT, tiny_lab


def pre_softcap_logits(lab, ids: list[int]) -> torch.Tensor:
    cfg = lab.model.config
    old = getattr(cfg, "final_logit_softcapping", None)
    cfg.final_logit_softcapping = None
    try:
        with torch.no_grad():
            return lab.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
    finally:
        cfg.final_logit_softcapping = old


@pytest.mark.parametrize("family", FAMILIES)
def test_dla_parts_sum_to_the_logit_difference(family):
    lab = tiny_lab(family)
    trace = run_trace(lab, PROMPT)
    for target, pos in ((Target(3, 4), -1), (Target(), 5), (Target(10), -1)):
        dla = direct_logit_attribution(trace, target, pos)
        assert dla.heads.shape == (lab.n_layers, lab.n_heads)
        # float64 models; Llama-style RMSNorms compute in float32 inside transformers.
        assert dla.parts_sum() == pytest.approx(dla.total, abs=1e-6)
    logits = pre_softcap_logits(lab, PROMPT)
    dla = direct_logit_attribution(trace, Target(3, 4))
    assert dla.total == pytest.approx(float(logits[-1, 3] - logits[-1, 4]), abs=1e-9)


@pytest.mark.parametrize("family", FAMILIES)
def test_logit_lens_last_layer_is_the_models_pre_softcap_logits(family):
    lab = tiny_lab(family)
    trace = run_trace(lab, PROMPT)
    logits = pre_softcap_logits(lab, PROMPT)
    assert torch.allclose(trace.logits, logits, atol=1e-9)
    lens = lens_logits(trace, pos=-1)
    assert lens.shape == (lab.n_layers + 1, lab.spec.vocab_size)
    assert torch.allclose(lens[-1], logits[-1], atol=1e-6)
    rows = logit_lens(trace, k=3, target=int(logits[-1].argmax()))
    assert rows[-1].target_rank == 0 and rows[-1].top_ids[0] == int(logits[-1].argmax())


def test_value_norm_is_the_norm_of_the_heads_write():
    lab = tiny_lab("llama")
    trace = run_trace(lab, PROMPT)
    m = head_metrics(trace)
    out = trace.head_out(1)  # [pos, head, d]
    assert float(m.value_norm[1, 2]) == pytest.approx(float(out[1:, 2].norm(dim=-1).mean()))
    flow = token_flow(trace.patterns)
    assert torch.allclose(flow.sum(-1), torch.full_like(flow.sum(-1), lab.n_heads))


def test_heads_sum_to_the_attention_output_with_gqa():
    lab = tiny_lab("qwen2")  # 4 query heads share 2 key/value heads, o_proj has no bias
    assert lab.spec.n_kv_heads < lab.n_heads
    trace = run_trace(lab, PROMPT)
    added = trace.resid[1] - trace.resid[0] - trace.mlp_out[0]
    parts = trace.head_out(0).sum(1) + trace.attn_bias(0)
    assert torch.allclose(parts, added, atol=1e-9)


def test_target_must_be_one_token():
    lab = tiny_lab("gpt2")
    trace = run_trace(lab, PROMPT)
    with pytest.raises(ValueError, match="same"):
        direct_logit_attribution(trace, Target(3, 3))
    with pytest.raises(ValueError, match="no tokenizer"):
        direct_logit_attribution(trace, Target(" Paris"))
