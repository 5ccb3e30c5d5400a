"""Accuracy of a model on the world's questions (``facts.questions``)."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from .facts import Question, questions


@torch.no_grad()
def answer_logits(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[str]
) -> torch.Tensor:
    """Next-token logits ``[prompt, vocab]`` after each prompt (BOS-prefixed, as in tracing)."""
    out = []
    for p in prompts:
        ids = [tokenizer.bos_token_id, *tokenizer(p, add_special_tokens=False).input_ids]
        logits = model(input_ids=torch.tensor([ids])).logits
        out.append(logits[0, -1])
    return torch.stack(out)


def accuracy(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, qs: list[Question] | None = None
) -> dict[str, float]:
    """Top-1 accuracy per group ``{kind}[_held_out]/{language}``, e.g. ``two_hop_held_out/en``."""
    qs = questions() if qs is None else qs
    logits = answer_logits(model, tokenizer, [q.prompt for q in qs])
    top = logits.argmax(-1).tolist()
    hits: dict[str, list[bool]] = defaultdict(list)
    for q, t in zip(qs, top, strict=True):
        group = f"{q.kind}{'_held_out' if q.held_out else ''}/{q.language}"
        hits[group].append(tokenizer.convert_ids_to_tokens(t) == q.answer)
    return {g: sum(h) / len(h) for g, h in sorted(hits.items())}
