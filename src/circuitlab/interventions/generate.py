"""``feature_intervention_generate``: steered generation with a KV cache.

The prompt forward is exactly ``feature_intervention``'s (same modes and freezes). Each
generated token then runs one cached step: attention and norms live (generated positions have
no clean run to freeze to) and open-ended interventions (``slice(k, None)``) patched
iteratively at the new position. ``use_cache=False`` recomputes the whole sequence every step,
with the prompt's positions frozen as in the first forward; greedy decoding gives the same
tokens either way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ..models.kvcache import cache_kwargs, output_cache
from ..models.session import Plan, hooked
from ..models.tokens import Prompt, check_context_length
from ..replacement import GenerationResult, ReplacementModel
from .intervene import prepare
from .spec import InterventionLike


def _check_sampling(max_new_tokens: int, temperature: float, top_p: float) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    if temperature <= 0:
        raise ValueError(
            f"temperature must be > 0, got {temperature}; for greedy decoding pass do_sample=False."
        )
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}.")


def next_token(
    logits: torch.Tensor,
    *,
    do_sample: bool,
    temperature: float,
    top_p: float,
    generator: torch.Generator | None,
) -> int:
    """Greedy or nucleus-sampled token from ``logits [vocab]``."""
    if not do_sample:
        return int(logits.argmax())
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    if top_p < 1:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(0) - sorted_p < top_p  # smallest prefix reaching top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


@torch.no_grad()
def feature_intervention_generate(
    model: ReplacementModel,
    prompt: Prompt,
    interventions: Iterable[InterventionLike] = (),
    *,
    max_new_tokens: int = 20,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    constrained_layers: Iterable[int] | None = None,
    freeze_attention: bool = True,
    apply_activation_function: bool = True,
    sparse: bool = False,
    return_activations: bool = False,
    use_cache: bool = True,
    stop_at_eos: bool = True,
) -> GenerationResult:
    """Generates up to ``max_new_tokens`` from ``prompt`` with ``interventions`` applied.

    Closed positions act on the prompt only; an open-ended ``slice(k, None)`` also acts on every
    generated token (its start may lie past the prompt to steer generated tokens only).
    Sampling uses ``temperature`` and nucleus ``top_p`` with a ``torch.Generator`` seeded by
    ``seed``; ``do_sample=False`` is greedy.

    The prompt plus ``max_new_tokens`` must fit the model's context (``model.context_length``):
    a longer request is refused before anything runs (``ContextLengthError``), not cut short.
    """
    _check_sampling(max_new_tokens, temperature, top_p)
    ids = model.ensure_tokenized(prompt)
    check_context_length(len(ids), model.context_length, max_new_tokens=max_new_tokens)
    setup = prepare(
        model,
        ids,
        interventions,
        constrained_layers=constrained_layers,
        freeze_attention=freeze_attention,
        apply_activation_function=apply_activation_function,
        record=return_activations,
        allow_open_past_prompt=True,
    )
    patcher, n_prompt = setup.patcher, setup.n_prompt
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    tc = model.transcoders
    eos = getattr(model.tokenizer, "eos_token_id", None) if stop_at_eos else None

    def forward(tokens: torch.Tensor, plan: Plan, cache: Any) -> tuple[torch.Tensor, Any]:
        with hooked(model.model, model.adapter, plan, tc.input_hook, tc.output_hook):
            out = model.model(
                input_ids=tokens[None], use_cache=use_cache, **cache_kwargs(model.model, cache)
            )
        return out.logits[0, -1], output_cache(out) if use_cache else None

    tokens = ids
    step_plan = Plan(mlp_out=patcher)  # cached steps: everything live
    cache = None
    step_logits = []
    for step in range(max_new_tokens):
        if use_cache and step > 0:
            patcher.begin(len(tokens) - 1, 1)
            logits, cache = forward(tokens[-1:], step_plan, cache)
        else:
            patcher.chunks.clear()
            patcher.begin(0, len(tokens))
            logits, cache = forward(tokens, setup.plan, cache)
        step_logits.append(logits)
        tok = next_token(
            logits, do_sample=do_sample, temperature=temperature, top_p=top_p, generator=generator
        )
        tokens = torch.cat([tokens, torch.tensor([tok], device=tokens.device)])
        if eos is not None and tok == eos:
            break
    acts = patcher.activations(sparse) if return_activations else None
    text, completion = _decode(model, tokens, n_prompt)
    return GenerationResult(text, completion, tokens.cpu(), torch.stack(step_logits), acts)


def _decode(model: ReplacementModel, tokens: torch.Tensor, n_prompt: int) -> tuple[str, str]:
    tok = model.tokenizer
    if tok is None:
        return "", ""
    full = tok.decode(tokens.tolist(), skip_special_tokens=True)
    return str(full), str(tok.decode(tokens[n_prompt:].tolist(), skip_special_tokens=True))
