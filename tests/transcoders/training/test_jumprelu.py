"""JumpReLU's straight-through threshold gradient is the documented rectangle kernel."""

from __future__ import annotations

import pytest
import torch

from circuitlab.transcoders.training import jump_relu, rectangle, step


def test_rectangle_kernel() -> None:
    u = torch.tensor([-0.6, -0.5, -0.49, 0.0, 0.49, 0.5, 0.7])
    assert rectangle(u).tolist() == [0, 0, 1, 1, 1, 0, 0]


def test_jump_relu_forward_and_gradients() -> None:
    x = torch.tensor([[0.10, 0.52, 0.56, 1.00], [0.48, 0.45, 0.30, 0.62]], requires_grad=True)
    theta = torch.tensor([0.50, 0.50, 0.50, 0.60], requires_grad=True)
    bw = 0.1
    y = jump_relu(x, theta, bw)
    assert torch.equal(y, x * (x > theta))
    g = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    y.backward(g)
    assert x.grad is not None and theta.grad is not None
    assert torch.equal(x.grad, g * (x > theta))
    # dθ = -(θ / bw) · K((x - θ) / bw) · g, summed over tokens
    want = (-(theta / bw) * rectangle((x - theta) / bw) * g).sum(0)
    torch.testing.assert_close(theta.grad, want.detach())
    # by hand: feature 0 has x = 0.48 within bw/2 of 0.5 in row 1 only
    assert theta.grad[0].item() == pytest.approx(-(0.5 / 0.1) * 5.0)
    assert theta.grad[1].item() == pytest.approx(-(0.5 / 0.1) * 2.0)  # x = 0.52
    assert theta.grad[3].item() == pytest.approx(-(0.6 / 0.1) * 8.0)


def test_step_gradient_and_broadcast_threshold() -> None:
    x = torch.tensor([[[0.46, 0.2]], [[0.53, 0.9]]], requires_grad=True)  # [layer, token, f]
    theta = torch.tensor([[[0.5, 0.5]], [[0.5, 0.5]]], requires_grad=True)  # [layer, 1, f]
    h = step(x, theta, 0.1)
    assert h.tolist() == [[[0.0, 0.0]], [[1.0, 1.0]]]
    h.sum().backward()
    assert x.grad is not None and theta.grad is not None
    assert torch.equal(x.grad, torch.zeros_like(x))
    torch.testing.assert_close(theta.grad, torch.tensor([[[-10.0, 0.0]], [[-10.0, 0.0]]]))
