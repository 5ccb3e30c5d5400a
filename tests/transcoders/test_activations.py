"""ReLU, JumpReLU and TopK, and building them from config names."""

from __future__ import annotations

import pytest
import torch

from circuitlab.transcoders import JumpReLU, ReLU, TopK, make_activation


def test_relu_zeroes_negatives_only() -> None:
    x = torch.tensor([[-1.0, 0.0, 2.5]])
    assert torch.equal(ReLU()(x), torch.tensor([[0.0, 0.0, 2.5]]))


def test_jump_relu_keeps_values_strictly_above_threshold() -> None:
    act = JumpReLU(torch.tensor([0.5, 0.5, 1.0, 0.0]))
    x = torch.tensor([0.4, 0.5, 1.5, -0.1])
    # at the threshold itself the unit is off; above it the raw value passes (no shift)
    assert torch.equal(act(x), torch.tensor([0.0, 0.0, 1.5, 0.0]))
    assert not act.threshold.requires_grad


def test_topk_keeps_the_k_largest_per_row() -> None:
    x = torch.tensor([[1.0, 5.0, 3.0, 4.0], [9.0, -1.0, 0.5, 2.0]])
    out = TopK(2)(x)
    assert torch.equal(out, torch.tensor([[0.0, 5.0, 0.0, 4.0], [9.0, 0.0, 0.0, 2.0]]))
    assert torch.equal((out != 0).sum(-1), torch.tensor([2, 2]))


def test_topk_never_returns_negative_survivors_and_caps_k_at_width() -> None:
    x = torch.tensor([[-3.0, -1.0, 2.0]])
    assert torch.equal(TopK(5)(x), torch.tensor([[0.0, 0.0, 2.0]]))


def test_topk_rejects_nonpositive_k() -> None:
    with pytest.raises(ValueError, match="k >= 1"):
        TopK(0)


@pytest.mark.parametrize(
    ("name", "cls"),
    [("relu", ReLU), ("jump_relu", JumpReLU), ("JumpReLU", JumpReLU), ("topk", TopK)],
)
def test_make_activation_builds_each_kind(name: str, cls: type) -> None:
    act = make_activation(name, threshold=torch.zeros(3), k=2)
    assert isinstance(act, cls)
    assert act.config()["activation"] == act.kind


def test_make_activation_errors_name_the_missing_piece() -> None:
    with pytest.raises(ValueError, match="threshold"):
        make_activation("jump_relu")
    with pytest.raises(ValueError, match="k: 64"):
        make_activation("topk")
    with pytest.raises(ValueError, match="Unknown activation 'gelu'"):
        make_activation("gelu")
