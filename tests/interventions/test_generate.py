"""Steered generation: KV cache, open-ended interventions, sampling."""

from __future__ import annotations

import pytest
import torch

from circuitlab.interventions import scale_feature, set_error, set_feature

from conftest import FAMILIES, PROMPT, build


def _feature(rm, layer: int) -> tuple[int, int]:
    idx = rm.get_activations(PROMPT).features.indices
    _, pos, feat = idx[int((idx[:, 0] == layer).nonzero()[0])].tolist()
    return pos, feat


CASES = [(f, None) for f in FAMILIES] + [("mistral", range(1, 2)), ("gemma3", range(0, 2))]


@pytest.mark.parametrize(("family", "constrained"), CASES)
def test_greedy_tokens_are_the_same_with_and_without_the_cache(family: str, constrained) -> None:
    rm = build(family, "clt_skip")
    pos, feat = _feature(rm, 0)
    ivs = [scale_feature(0, slice(1, None), feat, -3.0), set_feature(1, pos, 3, 4.0)]
    # 8 prompt + 5 new tokens run past the sliding windows (5) of mistral and gemma.
    kw = dict(max_new_tokens=5, constrained_layers=constrained, stop_at_eos=False)
    cached = rm.feature_intervention_generate(PROMPT, ivs, return_activations=True, **kw)
    full = rm.feature_intervention_generate(
        PROMPT, ivs, use_cache=False, return_activations=True, **kw
    )
    assert torch.equal(cached.tokens, full.tokens)
    torch.testing.assert_close(cached.logits, full.logits, rtol=0, atol=1e-9)
    torch.testing.assert_close(cached.activations, full.activations, rtol=0, atol=1e-9)


def test_open_ended_interventions_act_on_generated_tokens() -> None:
    rm = build("llama", "plt")
    n, feat = len(PROMPT), 5
    opened = rm.feature_intervention_generate(
        PROMPT,
        [(1, slice(2, None), feat, 7.0)],
        max_new_tokens=4,
        return_activations=True,
        stop_at_eos=False,
    )
    closed = rm.feature_intervention_generate(
        PROMPT,
        [(1, slice(2, n), feat, 7.0)],
        max_new_tokens=4,
        return_activations=True,
        stop_at_eos=False,
    )
    assert isinstance(opened.activations, torch.Tensor)
    assert isinstance(closed.activations, torch.Tensor)
    assert opened.activations.shape[1] == n + 3  # every position the model ran on
    assert (opened.activations[1, 2:, feat] == 7.0).all()
    assert (closed.activations[1, n:, feat] != 7.0).all()
    # Steering only the generated tokens: a slice starting past the prompt.
    later = rm.feature_intervention_generate(
        PROMPT,
        [(1, slice(n, None), feat, 7.0)],
        max_new_tokens=3,
        return_activations=True,
        stop_at_eos=False,
    )
    assert isinstance(later.activations, torch.Tensor)
    assert (later.activations[1, n:, feat] == 7.0).all()
    assert (later.activations[1, :n, feat] != 7.0).all()


def test_generation_returns_text_tokens_and_one_logit_row_per_new_token() -> None:
    rm = build("qwen2", "plt")
    res = rm.feature_intervention_generate(
        "the capital of", [], max_new_tokens=5, stop_at_eos=False
    )
    assert res.tokens.shape == (4 + 5,)
    assert res.logits.shape == (5, rm.spec.vocab_size)
    assert torch.equal(res.logits.argmax(-1), res.tokens[4:])
    assert res.text.startswith("the capital of")
    text, logits, acts = res
    assert text == res.text and acts is None and logits is res.logits


def test_generation_stops_at_eos() -> None:
    rm = build("qwen2", "plt")
    eos = int(rm.tokenizer.eos_token_id)  # type: ignore[union-attr, arg-type]
    # Steer every position's last MLP output toward the eos token's unembedding.
    push = set_error(1, slice(1, None), rm.unembed_weight[eos].detach() * 1e3)
    steered = rm.feature_intervention_generate(PROMPT, [push], max_new_tokens=5)
    assert steered.tokens[-1] == eos and steered.tokens.shape[0] == len(PROMPT) + 1
    assert steered.logits.shape[0] == 1


def test_sampling_is_reproducible_with_a_seed() -> None:
    rm = build("gemma2", "plt")
    kw = dict(max_new_tokens=6, do_sample=True, temperature=2.0, stop_at_eos=False)
    a = rm.feature_intervention_generate(PROMPT, [], seed=1, **kw)
    b = rm.feature_intervention_generate(PROMPT, [], seed=1, **kw)
    assert torch.equal(a.tokens, b.tokens)
    others = {
        tuple(rm.feature_intervention_generate(PROMPT, [], seed=s, **kw).tokens.tolist())
        for s in range(2, 6)
    }
    assert len(others | {tuple(a.tokens.tolist())}) > 1
    # A tiny nucleus keeps only the top token: sampling becomes greedy.
    nucleus = rm.feature_intervention_generate(PROMPT, [], seed=3, top_p=1e-9, **kw)
    greedy = rm.feature_intervention_generate(PROMPT, [], max_new_tokens=6, stop_at_eos=False)
    assert torch.equal(nucleus.tokens, greedy.tokens)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"do_sample": True, "temperature": 0.0}, "temperature"),
        ({"do_sample": True, "top_p": 1.5}, "top_p"),
    ],
)
def test_bad_generation_settings_are_refused(kwargs: dict, message: str) -> None:
    rm = build("llama", "plt")
    with pytest.raises(ValueError, match=message):
        rm.feature_intervention_generate(PROMPT, [], **kwargs)
