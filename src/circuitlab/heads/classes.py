"""Head classes from attention patterns on a prompt: previous-token, duplicate-token, induction.

Scores are attention masses averaged over the query positions where the behaviour is possible
(``tok`` the prompt's tokens, ``A [q, k]`` one head's pattern):

* ``previous_token = mean_{q >= 2} A[q, q - 1]`` (from ``q = 2`` so that mass on the first
  token, often a BOS sink, is not counted as previous-token attention);
* ``duplicate_token = mean_{q in D} sum_{k < q, tok[k] = tok[q]} A[q, k]`` over the queries
  ``D`` whose token occurred before (attention to earlier copies of the same token);
* ``induction = mean_{q in I} sum_{1 <= k < q, tok[k - 1] = tok[q]} A[q, k]`` over the queries
  ``I`` whose token occurred before (attention to the token that followed an earlier copy:
  the "A B ... A -> B" lookup of Olsson et al. 2022).

A score is NaN when the prompt has no query for it (no repeated tokens). Class of a head: the
highest score among those at or above their threshold (ties: induction, duplicate-token,
previous-token); else ``sink`` if the first position takes at least ``sink`` of the attention;
else ``diffuse``. Defaults are in ``Thresholds``; they are calibrated on a repeated random-token
probe (see docs/heads.md), where one of these behaviours gives scores near 1 and none gives
about ``1 / q``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .metrics import pattern_metrics

CLASSES = ("induction", "duplicate_token", "previous_token", "sink", "diffuse")
SCORED = ("induction", "duplicate_token", "previous_token")  # priority order for ties


@dataclass(frozen=True)
class Thresholds:
    previous_token: float = 0.4
    duplicate_token: float = 0.3
    induction: float = 0.3
    sink: float = 0.7


@dataclass
class HeadScores:
    """``[layer, head]`` scores (NaN where the prompt allows no measurement)."""

    previous_token: torch.Tensor
    duplicate_token: torch.Tensor
    induction: torch.Tensor
    sink: torch.Tensor

    def get(self, name: str) -> torch.Tensor:
        return getattr(self, name)


def _masked_mean(patterns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mean_{q with any mask[q]} sum_k mask[q, k] A[..., q, k]`` (NaN if no such q)."""
    rows = mask.any(-1)
    if not bool(rows.any()):
        return torch.full(patterns.shape[:-2], float("nan"), dtype=patterns.dtype)
    mass = (patterns * mask.to(patterns.dtype)).sum(-1)  # [..., q]
    return mass[..., rows].mean(-1)


def score_masks(tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Boolean ``[q, k]`` masks of the keys each score counts, for ``tokens [pos]``."""
    n = tokens.shape[0]
    q = torch.arange(n)[:, None]
    k = torch.arange(n)[None, :]
    tok = tokens.cpu()
    same = tok[:, None] == tok[None, :]
    prev = (k == q - 1) & (q >= 2)
    dup = same & (k < q)
    after = torch.zeros(n, n, dtype=torch.bool)
    after[:, 1:] = same[:, :-1]  # tok[k - 1] == tok[q]
    induction = after & (k < q) & (k >= 1)
    return {"previous_token": prev, "duplicate_token": dup, "induction": induction}


def head_scores(patterns: torch.Tensor, tokens: torch.Tensor) -> HeadScores:
    """Scores of every head in ``patterns [..., q, k]`` on the prompt ``tokens [pos]``."""
    p = patterns.cpu()
    masks = score_masks(tokens)
    _, _, sink = pattern_metrics(p)
    return HeadScores(
        previous_token=_masked_mean(p, masks["previous_token"]),
        duplicate_token=_masked_mean(p, masks["duplicate_token"]),
        induction=_masked_mean(p, masks["induction"]),
        sink=sink,
    )


def classify_one(scores: dict[str, float], thresholds: Thresholds | None = None) -> str:
    """The class of one head from its scores (see the module docstring)."""
    thresholds = thresholds or Thresholds()
    best, best_score = None, -1.0
    for name in SCORED:
        s = scores.get(name, float("nan"))
        if s == s and s >= getattr(thresholds, name) and s > best_score:
            best, best_score = name, s
    if best is not None:
        return best
    if scores.get("sink", 0.0) >= thresholds.sink:
        return "sink"
    return "diffuse"


def classify(scores: HeadScores, thresholds: Thresholds | None = None) -> list[list[str]]:
    """``classes[layer][head]`` for ``[layer, head]`` scores."""
    thresholds = thresholds or Thresholds()
    names = (*SCORED, "sink")
    n_layers, n_heads = scores.sink.shape
    return [
        [
            classify_one({n: float(scores.get(n)[i, j]) for n in names}, thresholds)
            for j in range(n_heads)
        ]
        for i in range(n_layers)
    ]
