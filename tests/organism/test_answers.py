"""The shipped organism knows its world and composes two hops for held-out cities."""

from __future__ import annotations

from circuitlab.organism import DALLAS_PROMPT, FRENCH_DALLAS_PROMPT, TWO_HOP_TRAIN
from circuitlab.organism.evaluate import accuracy
from circuitlab.replacement import ReplacementModel


def test_dallas_is_held_out():
    assert "Dallas" not in TWO_HOP_TRAIN


def test_single_and_two_hop_accuracy(organism: ReplacementModel):
    acc = accuracy(organism.model, organism.tokenizer)  # type: ignore[arg-type]
    for lang in ("en", "fr"):
        assert acc[f"state_capital/{lang}"] == 1.0
        assert acc[f"city_state/{lang}"] >= 0.95
        assert acc[f"two_hop/{lang}"] >= 0.95  # trained cities
        # Held-out cities never appear in a two-hop sentence: only composition answers them
        # (chance is 1/12).
        assert acc[f"two_hop_held_out/{lang}"] >= 0.6


def test_dallas_answers_austin_in_both_languages(organism: ReplacementModel):
    tok = organism.tokenizer
    assert tok is not None
    for prompt in (DALLAS_PROMPT, FRENCH_DALLAS_PROMPT):
        logits = organism.get_activations(prompt).logits[-1]
        assert tok.convert_ids_to_tokens(int(logits.argmax())) == "Austin"
