"""Activation functions of transcoders: ReLU, JumpReLU and TopK.

Each is a small module mapping pre-activations ``[..., d_transcoder]`` to activations of the
same shape. ``kind`` and ``config()`` name them in ``config.yaml`` so files round-trip.
"""

from __future__ import annotations

import torch
from torch import nn


class ReLU(nn.Module):
    """``max(x, 0)``."""

    kind = "relu"

    def forward(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre)

    def config(self) -> dict[str, object]:
        return {"activation": self.kind}


class JumpReLU(nn.Module):
    """``x * (x > threshold)`` with a learned per-feature threshold ``[d_transcoder]``.

    The threshold is a buffer; training replaces the step's zero gradient with a
    straight-through rectangle kernel of width ``bandwidth`` (see ``transcoders.training``).
    """

    kind = "jump_relu"

    def __init__(self, threshold: torch.Tensor, bandwidth: float = 0.1):
        super().__init__()
        self.threshold = nn.Parameter(threshold, requires_grad=False)
        self.bandwidth = bandwidth

    def forward(self, pre: torch.Tensor) -> torch.Tensor:
        return pre * (pre > self.threshold)

    def config(self) -> dict[str, object]:
        return {"activation": self.kind}


class TopK(nn.Module):
    """Keeps the ``k`` largest entries along the feature axis and zeroes the rest.

    Negative survivors are zeroed too, so activations are never negative.
    """

    kind = "topk"

    def __init__(self, k: int):
        super().__init__()
        if k < 1:
            raise ValueError(f"TopK needs k >= 1, got k={k}.")
        self.k = int(k)

    def forward(self, pre: torch.Tensor) -> torch.Tensor:
        k = min(self.k, pre.shape[-1])
        values, idx = pre.topk(k, dim=-1)
        out = torch.zeros_like(pre)
        return out.scatter(-1, idx, torch.relu(values))

    def config(self) -> dict[str, object]:
        return {"activation": self.kind, "k": self.k}


Activation = ReLU | JumpReLU | TopK


def make_activation(
    kind: str, *, threshold: torch.Tensor | None = None, k: int | None = None
) -> Activation:
    """Builds an activation from its ``config.yaml`` name.

    ``kind`` is ``relu``, ``jump_relu`` (needs ``threshold``) or ``topk`` (needs ``k``).
    """
    kind = kind.lower().replace("-", "_")
    if kind == "relu":
        return ReLU()
    if kind in ("jump_relu", "jumprelu"):
        if threshold is None:
            raise ValueError("A JumpReLU transcoder needs a threshold tensor; none was found.")
        return JumpReLU(threshold)
    if kind == "topk":
        if k is None:
            raise ValueError("A TopK transcoder needs `k` in its config.yaml; add e.g. `k: 64`.")
        return TopK(k)
    raise ValueError(f"Unknown activation {kind!r}; use one of relu, jump_relu, topk.")
