"""Prompts to token ids, with circuit-tracer's BOS rule and the model's context length.

``tokenize`` is the one place prompts become ids: a text prompt needs a tokenizer, a BOS is
prepended when the tokenizer has one, and a prompt longer than the model's context is refused
(``check_context_length``) before any forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

Prompt = str | Sequence[int] | torch.Tensor

NO_TOKENIZER = (
    "This model has no tokenizer: no tokenizer was found with the model's files (or it could "
    "not be loaded), so a text prompt cannot be read. Pass token ids instead, or give a "
    "tokenizer: ReplacementModel.from_pretrained(model, transcoders, tokenizer=<folder, hub id "
    "or tokenizer object>), or save one into the model folder with "
    "tokenizer.save_pretrained(model_folder)."
)


class ContextLengthError(ValueError):
    """A prompt (plus the tokens to generate) longer than the model's context."""


def context_length(config: object) -> int | None:
    """The most positions a model of ``config`` takes (``max_position_embeddings``; GPT-2's
    ``n_positions``), or None when the config names no limit."""
    cfg = getattr(config, "text_config", None) or config
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def check_context_length(n_tokens: int, context: int | None, *, max_new_tokens: int = 0) -> None:
    """Refuses ``n_tokens`` prompt tokens (plus ``max_new_tokens`` to generate) that do not fit
    a context of ``context`` positions (None: no known limit).

    Raises ``ContextLengthError`` (a ``ValueError``) naming the prompt length and the context
    length. Call it before any work: ``ReplacementModel.ensure_tokenized`` does for every
    prompt, and steered generation does with its ``max_new_tokens``.
    """
    if context is None or n_tokens + max_new_tokens <= context:
        return
    if max_new_tokens == 0 or n_tokens > context:
        raise ContextLengthError(
            f"The prompt has {n_tokens} tokens but the model has a context of {context} tokens: "
            f"shorten the prompt to at most {context} tokens (the BOS included)."
        )
    raise ContextLengthError(
        f"The prompt has {n_tokens} tokens plus max_new_tokens={max_new_tokens} to generate, "
        f"{n_tokens + max_new_tokens} in all: more than the model's context of {context} tokens. "
        f"Pass max_new_tokens={context - n_tokens} or less, or shorten the prompt."
    )


def is_placeholder_tokenizer(tokenizer: PreTrainedTokenizerBase) -> bool:
    """True for a tokenizer whose whole vocabulary is special tokens (it cannot read text).

    transformers 5 returns one for a model folder without tokenizer files (GPT-2 and Qwen: one
    ``<|endoftext|>``; Gemma: five specials); it is not the model's tokenizer.
    """
    special = set(tokenizer.all_special_ids)
    return all(i in special for i in tokenizer.get_vocab().values())


def tokenize(
    prompt: Prompt,
    tokenizer: PreTrainedTokenizerBase | None,
    vocab_size: int,
    *,
    context: int | None = None,
) -> torch.Tensor:
    """Token ids ``[pos]`` for text or ids.

    A BOS is prepended when the tokenizer has one (else its pad, eos or first special token)
    and the prompt does not already start with a special token; ids go in unchanged when there
    is no tokenizer. A prompt longer than ``context`` tokens (the BOS counted) raises
    ``ContextLengthError``.
    """
    if isinstance(prompt, str):
        if tokenizer is None:
            raise ValueError(NO_TOKENIZER)
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
    check_context_length(len(ids), context)
    return ids
