"""What an attribution graph explains: its target nodes.

A target is a direction ``vec [d_model]`` read at the final norm's output at the last position,
with a weight (used by influence and pruning). Kinds:

* salient logits (default): the top ``max_n_logits`` tokens by probability, cut where the
  cumulative probability reaches ``desired_logit_prob``;
* tokens (strings that are one token of the vocabulary each, or ids);
* ``LogitDiff(x, y)``: ``logit(x) - logit(y)`` with weight ``|p(x) - p(y)|``;
* ``CustomTarget(label, weight, vec)``: any residual direction.

Token directions are de-meaned unembedding rows, so edges explain ``logit - mean(logits)``
(before any softcap).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from transformers import PreTrainedTokenizerBase

from ..graph.targets import LogitTarget


class LogitDiff(NamedTuple):
    """The target ``logit(positive) - logit(negative)``; tokens as strings or ids."""

    positive: str | int
    negative: str | int


class CustomTarget(NamedTuple):
    """A residual-space direction ``vec [d_model]`` with a label and a weight."""

    label: str
    weight: float
    vec: torch.Tensor


TargetSpec = str | int | LogitDiff | CustomTarget


@dataclass(frozen=True)
class Targets:
    """Resolved targets: labels, weights ``[n]`` and directions ``vecs [n, d_model]``."""

    logit_targets: list[LogitTarget]
    weights: torch.Tensor
    vecs: torch.Tensor

    def __len__(self) -> int:
        return len(self.logit_targets)


def _token_id(tok: str | int, tokenizer: PreTrainedTokenizerBase | None, vocab: int) -> int:
    if isinstance(tok, int):
        if not 0 <= tok < vocab:
            raise ValueError(f"Target token id {tok} is outside the vocabulary [0, {vocab}).")
        return tok
    if tokenizer is None:
        raise ValueError(f"Target {tok!r} is a string but the model has no tokenizer; pass an id.")
    ids = tokenizer.encode(tok, add_special_tokens=False)
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise ValueError(
            f"Target {tok!r} is {len(ids)} tokens ({ids}: {pieces}); a logit target must be "
            "exactly one token. Pass a string that is a single token (mind the leading space, "
            "e.g. ' Austin'), or a token id."
        )
    i = int(ids[0])
    if _read_as_unknown(tok, i, tokenizer):
        raise ValueError(
            f"Target {tok!r} is not in the vocabulary: it reads as "
            f"{tokenizer.convert_ids_to_tokens(i)!r} (id {i}), which is not the token typed. "
            "Pass a string that is a single token of this vocabulary (mind the leading space, "
            "e.g. ' Austin'), or a token id."
        )
    return i


def _read_as_unknown(text: str, i: int, tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether ``text`` became token ``i`` only because the vocabulary lacks it: ``i`` is the
    unk token, or another special token (word-level vocabularies may map unknown words to
    ``<pad>``), unless ``text`` is that special token itself."""
    if i != tokenizer.unk_token_id and i not in tokenizer.all_special_ids:
        return False
    return text.strip() != str(tokenizer.convert_ids_to_tokens(i))


def _label(tok_id: int, tokenizer: PreTrainedTokenizerBase | None) -> str:
    return str(tokenizer.decode([tok_id])) if tokenizer is not None else str(tok_id)


def resolve_targets(
    specs: Sequence[TargetSpec] | torch.Tensor | None,
    logits: torch.Tensor,
    unembed: torch.Tensor,
    tokenizer: PreTrainedTokenizerBase | None,
    *,
    max_n_logits: int = 10,
    desired_logit_prob: float = 0.95,
) -> Targets:
    """Resolves target specs against the last position's ``logits [vocab]`` and ``unembed [vocab, d]``.

    ``specs`` is None (salient logits), a list of targets, a tensor of ids, or one target (a
    string is one token, not a list of characters). A string must be a single token of the
    vocabulary: one that splits or reads as the unknown token raises ``ValueError``.
    """
    vocab = unembed.shape[0]
    probs = torch.softmax(logits.double(), dim=-1)
    mean_u = unembed.mean(0)

    def direction(i: int) -> torch.Tensor:
        return unembed[i] - mean_u

    if specs is None:
        top_p, top_i = probs.topk(min(max_n_logits, vocab))
        n = (
            int(
                torch.searchsorted(
                    top_p.cumsum(0), torch.tensor(desired_logit_prob, dtype=top_p.dtype)
                )
            )
            + 1
        )
        n = min(n, len(top_i))
        ids = top_i[:n].tolist()
        return Targets(
            [LogitTarget(_label(i, tokenizer), i) for i in ids],
            probs[ids].to(unembed.dtype),
            torch.stack([direction(i) for i in ids]),
        )
    if isinstance(specs, torch.Tensor):
        specs = [int(i) for i in specs.flatten().tolist()]
    elif isinstance(specs, (str, int, LogitDiff, CustomTarget)):  # one target, not a list of them
        specs = [specs]
    if len(specs) == 0:
        raise ValueError("attribution_targets is empty; pass None for the salient logits.")
    labels: list[LogitTarget] = []
    weights: list[float] = []
    vecs: list[torch.Tensor] = []
    for k, spec in enumerate(specs):
        if isinstance(spec, CustomTarget):
            if spec.vec.shape != (unembed.shape[1],):
                raise ValueError(
                    f"CustomTarget {spec.label!r} has shape {tuple(spec.vec.shape)}; "
                    f"expected ({unembed.shape[1]},)."
                )
            labels.append(LogitTarget(spec.label, vocab + k))
            weights.append(float(spec.weight))
            vecs.append(spec.vec.to(unembed.device, unembed.dtype))
        elif isinstance(spec, LogitDiff):
            a = _token_id(spec.positive, tokenizer, vocab)
            b = _token_id(spec.negative, tokenizer, vocab)
            label = f"logit({_label(a, tokenizer)})-logit({_label(b, tokenizer)})"
            labels.append(LogitTarget(label, vocab + k))
            weights.append(abs(float(probs[a] - probs[b])))
            vecs.append(unembed[a] - unembed[b])
        elif isinstance(spec, (str, int)):
            i = _token_id(spec, tokenizer, vocab)
            labels.append(LogitTarget(_label(i, tokenizer), i))
            weights.append(float(probs[i]))
            vecs.append(direction(i))
        else:
            raise TypeError(
                f"Unsupported target {spec!r}: use a token string, a token id, LogitDiff or CustomTarget."
            )
    return Targets(labels, torch.tensor(weights, dtype=unembed.dtype), torch.stack(vecs))
