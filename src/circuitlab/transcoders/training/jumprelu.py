"""JumpReLU and its step function with straight-through threshold gradients.

The forward passes are exact; only the threshold gets a pseudo-gradient. With the rectangle
kernel ``K(u) = 1 if |u| < 1/2 else 0`` and bandwidth ``bw``:

* ``jump_relu(x, θ) = x * H(x - θ)``:
  ``∂/∂x = H(x - θ)`` (the true gradient almost everywhere) and
  ``∂/∂θ = -(θ / bw) * K((x - θ) / bw)`` (the jump of height θ, smeared over a window of
  width ``bw`` around the threshold);
* ``step(x, θ) = H(x - θ)`` (for L0-style penalties):
  ``∂/∂x = 0`` and ``∂/∂θ = -(1 / bw) * K((x - θ) / bw)``.

Threshold gradients are summed over the axes along which ``θ`` was broadcast (the tokens).
"""

from __future__ import annotations

from typing import Any

import torch


def rectangle(u: torch.Tensor) -> torch.Tensor:
    """``K(u) = 1`` where ``|u| < 1/2``, else 0."""
    return (u.abs() < 0.5).to(u.dtype)


def _sum_to(g: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sums a broadcast gradient back to ``shape`` (leading axes and size-1 axes)."""
    while g.dim() > len(shape):
        g = g.sum(0)
    dims = [i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1]
    return g.sum(dims, keepdim=True) if dims else g


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, theta: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(x, theta)
        ctx.bandwidth = bandwidth
        return x * (x > theta)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        x, theta = ctx.saved_tensors
        bw = ctx.bandwidth
        gx = g * (x > theta)
        gtheta = -(theta / bw) * rectangle((x - theta) / bw) * g
        return gx, _sum_to(gtheta, theta.shape), None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, theta: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(x, theta)
        ctx.bandwidth = bandwidth
        return (x > theta).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        x, theta = ctx.saved_tensors
        bw = ctx.bandwidth
        gtheta = -(1.0 / bw) * rectangle((x - theta) / bw) * g
        return torch.zeros_like(x), _sum_to(gtheta, theta.shape), None


def jump_relu(x: torch.Tensor, theta: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """``x * H(x - θ)`` for ``x [..., d_t]`` and ``θ [d_t]`` (module docstring for gradients)."""
    return _JumpReLU.apply(x, theta, bandwidth)  # type: ignore[return-value]


def step(x: torch.Tensor, theta: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """``H(x - θ)`` with the straight-through threshold gradient (module docstring)."""
    return _Step.apply(x, theta, bandwidth)  # type: ignore[return-value]
