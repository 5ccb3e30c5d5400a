"""Norms with a frozen scale.

Every supported norm is ``y = C(x) * s * w_eff + b`` where ``s [..., 1]`` is the per-position
scale (``1/sqrt(var + eps)``), ``C`` centres for LayerNorm and is the identity for RMSNorm, and
``w_eff`` is ``w`` (or ``1 + w`` for Gemma). With ``s`` frozen the map is linear in ``x``; its
transpose is ``C(g * s * w_eff)``.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from .adapters import NormKind


def _eps(module: nn.Module) -> float:
    for name in ("eps", "variance_epsilon"):
        if hasattr(module, name):
            return float(getattr(module, name))
    raise AttributeError(f"{type(module).__name__} has no eps attribute.")


def _weight(kind: NormKind, module: nn.Module, dtype: torch.dtype) -> torch.Tensor:
    w = cast(torch.Tensor, module.weight).to(dtype)
    return 1.0 + w if kind == "rms_gemma" else w


def norm_scale(kind: NormKind, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The scale ``s [..., 1]`` the norm applies to input ``x [..., d]``."""
    xf = x if x.dtype == torch.float64 else x.float()
    if kind == "layernorm":
        var = xf.var(-1, keepdim=True, unbiased=False)
    else:
        var = xf.pow(2).mean(-1, keepdim=True)
    return torch.rsqrt(var + _eps(module))


def norm_apply(
    kind: NormKind, module: nn.Module, x: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """The norm's output for input ``x [..., d]`` with the given scale ``[..., 1]``."""
    dtype = scale.dtype
    xf = x.to(dtype)
    if kind == "layernorm":
        xf = xf - xf.mean(-1, keepdim=True)
    y = xf * scale * _weight(kind, module, dtype)
    bias = getattr(module, "bias", None)
    if kind == "layernorm" and bias is not None:
        y = y + bias.to(dtype)
    return y.to(x.dtype)


def norm_transpose(
    kind: NormKind, module: nn.Module, g: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Transpose of the frozen norm: gradient at the input for gradient ``g [..., d]`` at the output."""
    gx = g * scale.to(g.dtype) * _weight(kind, module, g.dtype)
    if kind == "layernorm":
        gx = gx - gx.mean(-1, keepdim=True)
    return gx
