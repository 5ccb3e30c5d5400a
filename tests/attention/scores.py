"""Ground truth for QK tests: the model's own attention scores, recorded inside its attention.

``recorded_scores`` swaps the registered ``circuitlab`` attention function for one that stores
``scale * query @ key^T`` (before any soft-cap and mask) and the query and key tensors per
layer, then calls the real one. It shares no code with ``circuitlab.attention``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import AttentionInterface

from circuitlab.models import attention as attn_impl


@contextmanager
def recorded_scores() -> Iterator[dict[int, dict[str, torch.Tensor]]]:
    """``rec[layer]`` = ``{"scores" [heads, q, k], "query" [heads, q, d], "key" [heads, k, d]}``
    (batch row 0; keys repeated per query head) for every forward inside the block."""
    rec: dict[int, dict[str, torch.Tensor]] = {}

    def wrapped(module, query, key, value, attention_mask, scaling=None, **kwargs: Any):
        groups = int(getattr(module, "num_key_value_groups", 1))
        keys = key.repeat_interleave(groups, dim=1)
        scale = query.shape[-1] ** -0.5 if scaling is None else scaling
        rec[int(module.layer_idx)] = dict(
            scores=(query @ keys.transpose(2, 3) * scale)[0].detach(),
            query=query[0].detach(),
            key=keys[0].detach(),
        )
        return attn_impl.circuitlab_attention(
            module, query, key, value, attention_mask, scaling=scaling, **kwargs
        )

    AttentionInterface.register(attn_impl.IMPLEMENTATION, wrapped)
    try:
        yield rec
    finally:
        AttentionInterface.register(attn_impl.IMPLEMENTATION, attn_impl.circuitlab_attention)


@contextmanager
def qk_norms_frozen(model: Any, scales: dict[tuple[int, str], torch.Tensor]) -> Iterator[None]:
    """Freezes the per-head q/k norms (Qwen-3, Gemma-3) at ``scales``, as the local replacement
    model does; an empty ``scales`` is filled by the first forward (the clean run)."""
    ad = model.adapter
    if ad.qk_norm is None:
        yield
        return
    from circuitlab.models.norms import norm_apply, norm_scale

    handles = []

    def hook(key: tuple[int, str]):
        def fn(module, args, output):
            if key not in scales:
                scales[key] = norm_scale(ad.norm, module, args[0]).detach()
                return None
            return norm_apply(ad.norm, module, args[0], scales[key])

        return fn

    for layer in range(model.n_layers):
        attn = model.block(layer).get_submodule(ad.attn)
        for name in ad.qk_norm:
            handles.append(attn.get_submodule(name).register_forward_hook(hook((layer, name))))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
