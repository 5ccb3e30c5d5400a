"""Prompts to token ids, with circuit-tracer's BOS rule."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

Prompt = str | Sequence[int] | torch.Tensor


def tokenize(
    prompt: Prompt, tokenizer: PreTrainedTokenizerBase | None, vocab_size: int
) -> torch.Tensor:
    """Token ids ``[pos]`` for text or ids.

    A BOS is prepended when the tokenizer has one (else its pad, eos or first special token)
    and the prompt does not already start with a special token.
    """
    if isinstance(prompt, str):
        if tokenizer is None:
            raise ValueError("This model has no tokenizer; pass token ids instead of text.")
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids[0]
    else:
        ids = torch.as_tensor(prompt, dtype=torch.long).squeeze()
        if ids.ndim == 0:
            ids = ids[None]
        if ids.ndim != 1:
            raise ValueError(f"Token ids must be 1-D after squeeze; got shape {tuple(ids.shape)}.")
    if ids.numel() == 0:
        raise ValueError("The prompt is empty.")
    if int(ids.max()) >= vocab_size or int(ids.min()) < 0:
        raise ValueError(f"Token ids must be in [0, {vocab_size}).")
    if tokenizer is not None:
        special = set(tokenizer.all_special_ids)
        if int(ids[0]) not in special:
            for cand in (
                tokenizer.bos_token_id,
                tokenizer.pad_token_id,
                tokenizer.eos_token_id,
                *special,
            ):
                if cand is not None:
                    ids = torch.cat([torch.tensor([cand]), ids])
                    break
    return ids
