"""A head's query and key vectors as affine maps of the residual stream, with norms frozen.

For layer ``L``, head ``h`` and position ``p`` (one side: query or key)::

    v = R_p  S  (W_h  N1(x_p) + b_h)        N1(x) = C(x) s1[p] w1 + b1

``W_h, b_h`` the head's rows of the query (or key) projection (the key head of a query head
under grouped-query attention), ``S = diag(s_qk w_qk)`` the per-head q/k-norm (Qwen-3,
Gemma-3) with its scale ``s_qk`` frozen at its value on the prompt, ``R_p`` the rotary
embedding at ``p`` (``cos * v + rotate_half(v) * sin``; the identity for GPT-2), ``N1`` the
pre-attention norm with its scale frozen. With every scale frozen ``v`` is affine in the
residual ``x_p``; ``QKSide.directions`` are the rows of its linear part read back to the
residual (``[d_head, d_model]``: ``v_j = <directions[j], x_p> + const_j``) and ``QKSide.value``
is ``v`` itself, from the model's own recorded input of that attention module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

import torch
from torch import nn

from ..models.norms import norm_apply, norm_scale, norm_transpose
from .frozen import FrozenPrompt

Side = Literal["query", "key"]


@dataclass
class QKSide:
    """One head's query or key at one position: ``directions [d_head, d]``, ``value [d_head]``
    (at ``n`` positions: ``[n, d_head, d]`` and ``[n, d_head]``, from ``qk_sides``)."""

    directions: torch.Tensor
    value: torch.Tensor


def _projection(attn: nn.Module, names: tuple[str, ...], side: Side, n_out: int):
    """``W [n_out, d]`` (``y = W x + b``) and ``b [n_out]`` or None of the query/key projection."""
    if len(names) == 1:  # fused Conv1D (GPT-2): x @ w + b, queries then keys then values
        mod = attn.get_submodule(names[0])
        w, b = cast(torch.Tensor, mod.weight), cast("torch.Tensor | None", mod.bias)
        start = 0 if side == "query" else n_out
        return w[:, start : start + n_out].T, None if b is None else b[start : start + n_out]
    mod = attn.get_submodule(names[0] if side == "query" else names[1])
    return cast(torch.Tensor, mod.weight), cast("torch.Tensor | None", mod.bias)


def _rotate_half(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``rotate_half`` along ``dim``: ``cat(-x[half:], x[:half])``."""
    first, second = x.chunk(2, dim=dim)
    return torch.cat([-second, first], dim=dim)


def qk_side(fp: FrozenPrompt, layer: int, head: int, pos: int, side: Side) -> QKSide:
    """The affine map of ``head``'s query (or key) at ``pos`` in ``layer`` (module docstring)."""
    many = qk_sides(fp, layer, head, [pos], side)
    return QKSide(directions=many.directions[0], value=many.value[0])


def qk_sides(fp: FrozenPrompt, layer: int, head: int, positions: list[int], side: Side) -> QKSide:
    """``qk_side`` at every position of ``positions`` at once: ``directions [n, d_head, d]``,
    ``value [n, d_head]``."""
    model, ad, spec = fp.model, fp.model.adapter, fp.model.spec
    dtype = fp.dtype
    block = model.block(layer)
    attn = block.get_submodule(ad.attn)
    d_head = spec.d_head
    n_out = spec.n_heads * d_head if side == "query" else spec.n_kv_heads * d_head
    W, b = _projection(attn, ad.qkv_proj, side, n_out)
    unit = head if side == "query" else head // (spec.n_heads // spec.n_kv_heads)
    rows = slice(unit * d_head, (unit + 1) * d_head)
    pos = torch.tensor(positions)
    lin = W[rows].to(dtype)[None].expand(len(positions), -1, -1)  # [n, d_head, d]
    pre = fp.inputs.hidden[layer][pos].to(dtype) @ lin[0].T  # [n, d_head]
    if b is not None:
        pre = pre + b[rows].to(dtype)
    if ad.qk_norm is not None:
        norm = attn.get_submodule(ad.qk_norm[0 if side == "query" else 1])
        s = norm_scale(ad.norm, norm, pre).to(dtype)  # [n, 1], frozen at its value here
        pre = norm_apply(ad.norm, norm, pre, s)
        lin = norm_apply(ad.norm, norm, lin.transpose(1, 2), s[:, None]).transpose(1, 2)
    rope = fp.inputs.rope[layer]
    if rope is not None:
        cos, sin = rope[0][pos].to(dtype), rope[1][pos].to(dtype)  # [n, d_head]
        pre = pre * cos + _rotate_half(pre, 1) * sin
        lin = lin * cos[:, :, None] + _rotate_half(lin, 1) * sin[:, :, None]
    ln1 = block.get_submodule(ad.ln1)
    s1 = fp.capture.scales["ln1"][layer][0][pos].to(dtype)  # [n, 1]
    return QKSide(directions=norm_transpose(ad.norm, ln1, lin, s1[:, None]), value=pre)


def score_scale(fp: FrozenPrompt, layer: int) -> float:
    """The factor the scores are multiplied by (``1/sqrt(d_head)`` or the family's own)."""
    attn = fp.model.block(layer).get_submodule(fp.model.adapter.attn)
    scaling = getattr(attn, "scaling", None)
    return float(scaling) if scaling is not None else fp.model.spec.d_head**-0.5


def score_softcap(fp: FrozenPrompt) -> float | None:
    """Gemma-2's attention soft-cap ``c`` (scores become ``c tanh(s / c)``), else None."""
    attr = fp.model.adapter.attn_softcap_attr
    value = getattr(fp.model.model.config, attr, None) if attr else None
    return None if value is None else float(value)
