"""Head scores and classes: synthetic patterns for each class, and a hand-built model."""

from __future__ import annotations

import math

import torch

from circuitlab.heads import (
    Thresholds,
    classify,
    classify_one,
    head_scores,
    pattern_metrics,
    repeated_tokens,
    run_trace,
)

from .builders import induction_gpt2

# BOS, a b c d, a b c d: position q's earlier copy is q - 4, its induction target q - 3.
TOKENS = torch.tensor([7, 1, 2, 3, 4, 1, 2, 3, 4])
N = len(TOKENS)


def pattern(target: dict[int, int]) -> torch.Tensor:
    """``[q, k]``: query q attends fully to ``target[q]``, else uniformly to its causal keys."""
    a = torch.zeros(N, N, dtype=torch.float64)
    for q in range(N):
        if q in target:
            a[q, target[q]] = 1.0
        else:
            a[q, : q + 1] = 1.0 / (q + 1)
    return a


def classes_of(*patterns: torch.Tensor) -> list[str]:
    scores = head_scores(torch.stack(patterns)[None], TOKENS)
    return classify(scores)[0]


def test_previous_token_pattern_is_classified_previous_token():
    p = pattern({q: q - 1 for q in range(1, N)})
    assert head_scores(p[None, None], TOKENS).previous_token.item() == 1.0
    assert classes_of(p) == ["previous_token"]


def test_duplicate_token_pattern_is_classified_duplicate_token():
    p = pattern({q: q - 4 for q in range(5, N)})
    assert head_scores(p[None, None], TOKENS).duplicate_token.item() == 1.0
    assert classes_of(p) == ["duplicate_token"]


def test_induction_pattern_is_classified_induction():
    p = pattern({q: q - 3 for q in range(5, N)})
    scores = head_scores(p[None, None], TOKENS)
    assert scores.induction.item() == 1.0
    assert scores.duplicate_token.item() == 0.0
    assert classes_of(p) == ["induction"]


def test_sink_and_diffuse_patterns():
    sink = pattern({q: 0 for q in range(N)})
    uniform = pattern({})
    assert classes_of(sink, uniform) == ["sink", "diffuse"]


def test_scores_are_nan_without_repeats_and_ignored():
    tokens = torch.arange(N)
    p = pattern({q: q - 1 for q in range(1, N)})
    scores = head_scores(p[None, None], tokens)
    assert math.isnan(scores.induction.item()) and math.isnan(scores.duplicate_token.item())
    assert classify(scores) == [["previous_token"]]


def test_ties_and_thresholds():
    assert classify_one({"induction": 0.5, "previous_token": 0.5}) == "induction"
    assert classify_one({"previous_token": 0.39}) == "diffuse"
    assert classify_one({"previous_token": 0.39}, Thresholds(previous_token=0.3)) == (
        "previous_token"
    )


def test_pattern_metrics_of_one_hot_and_uniform_rows():
    one_hot = pattern({q: q - 1 for q in range(1, N)})
    uniform = pattern({})
    entropy, concentration, sink = pattern_metrics(torch.stack([one_hot, uniform]))
    assert entropy[0] == 0 and concentration[0] == 1
    expected = sum(math.log(q + 1) for q in range(1, N)) / (N - 1)
    assert abs(float(entropy[1]) - expected) < 1e-12
    assert abs(float(sink[1]) - sum(1 / (q + 1) for q in range(1, N)) / (N - 1)) < 1e-12


def test_hand_built_model_has_previous_token_induction_and_duplicate_heads():
    lab = induction_gpt2()
    prompt = repeated_tokens(5, vocab=7, bos=7, seed=1)
    trace = run_trace(lab, prompt)
    scores = head_scores(trace.patterns, trace.tokens)
    assert classify(scores) == [
        ["previous_token", "diffuse"],
        ["induction", "duplicate_token"],
    ]
    assert scores.previous_token[0, 0] > 0.95
    assert scores.induction[1, 0] > 0.95
    assert scores.duplicate_token[1, 1] > 0.95
