"""Prompts longer than the model's context are refused before any work, naming both lengths."""

from __future__ import annotations

import pytest
import torch

from circuitlab.attribution import attribute
from circuitlab.interventions import feature_intervention, feature_intervention_generate
from circuitlab.models.tokens import ContextLengthError, check_context_length

from conftest import build

CONTEXT = 256  # models.tiny: n_positions / max_position_embeddings


def _ids(n: int) -> torch.Tensor:
    """``n`` token ids starting with the BOS (0), so none is added."""
    return torch.cat([torch.tensor([0]), torch.randint(3, 60, (n - 1,))])


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def rm(request):
    return build(request.param)


def test_the_context_length_is_read_from_the_config(rm) -> None:
    assert rm.context_length == CONTEXT


@pytest.mark.parametrize(
    "run",
    [
        lambda rm, p: rm.get_activations(p),
        lambda rm, p: attribute(rm, p),
        lambda rm, p: feature_intervention(rm, p, [(0, 1, 0, 1.0)]),
        lambda rm, p: feature_intervention_generate(rm, p, max_new_tokens=1),
    ],
    ids=["get_activations", "attribute", "feature_intervention", "generate"],
)
def test_a_prompt_past_the_context_is_refused(rm, run) -> None:
    ids = _ids(CONTEXT + 44)
    with pytest.raises(ContextLengthError, match=rf"300 tokens.*context of {CONTEXT} tokens"):
        run(rm, ids)


def test_a_text_prompt_past_the_context_is_refused(rm) -> None:
    with pytest.raises(ValueError, match=rf"{CONTEXT + 1} tokens"):  # the BOS counts
        rm.get_activations("the " * CONTEXT)


def test_a_prompt_that_fills_the_context_runs(rm) -> None:
    ids = _ids(CONTEXT)
    assert rm.get_activations(ids).logits.shape[0] == CONTEXT


def test_generation_past_the_context_is_refused_before_it_starts(rm) -> None:
    ids = _ids(CONTEXT - 6)
    with pytest.raises(ContextLengthError, match=r"250 tokens plus max_new_tokens=10.*256"):
        feature_intervention_generate(rm, ids, max_new_tokens=10)
    out = feature_intervention_generate(rm, ids, max_new_tokens=6, stop_at_eos=False)
    assert len(out.tokens) == CONTEXT


def test_check_context_length() -> None:
    check_context_length(10, 10)
    check_context_length(10**6, None)  # no known limit
    with pytest.raises(ContextLengthError, match="11 tokens.*context of 10 tokens"):
        check_context_length(11, 10)
