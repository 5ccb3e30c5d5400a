"""An attention implementation whose pattern can be recorded, detached or replayed.

Registered with transformers as ``"circuitlab"``. Outside a circuitlab forward session it is
plain eager attention. Inside one (``module._circuitlab_attn`` set by ``models.session``), it
records the pattern ``[batch, n_heads, q, k]``, detaches it (so gradients never pass through
queries and keys), or replaces it with a recorded one (frozen attention for interventions).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

IMPLEMENTATION = "circuitlab"


class PatternHook(Protocol):
    def __call__(self, layer: int, pattern: torch.Tensor) -> torch.Tensor:
        """Sees the live pattern ``[batch, heads, q, k]``; returns the one to use."""
        ...


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``[b, kv_heads, s, d] -> [b, kv_heads * groups, s, d]``."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def circuitlab_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention (``query [b, h, q, d]``, ``key``/``value [b, kv, k, d]``) with a pattern hook."""
    groups = int(getattr(module, "num_key_value_groups", 1))
    key, value = _repeat_kv(key, groups), _repeat_kv(value, groups)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, : key.shape[-2]]
    upcast = query.dtype in (torch.float16, torch.bfloat16)
    pattern = torch.softmax(scores.float() if upcast else scores, dim=-1).to(query.dtype)
    hook: tuple[PatternHook, int] | None = getattr(module, "_circuitlab_attn", None)
    if hook is not None:
        fn, layer = hook
        pattern = fn(layer, pattern)
    out = torch.matmul(pattern.to(value.dtype), value).transpose(1, 2).contiguous()
    return out, pattern


def register() -> None:
    """Makes ``attn_implementation="circuitlab"`` available to transformers (idempotent)."""
    AttentionInterface.register(IMPLEMENTATION, circuitlab_attention)
    AttentionMaskInterface.register(IMPLEMENTATION, eager_mask)


register()
