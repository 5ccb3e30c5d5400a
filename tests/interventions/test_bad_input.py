"""Bad interventions are refused with a message naming the problem and the fix."""

from __future__ import annotations

import pytest
import torch

from circuitlab.interventions import Intervention, feature_intervention, scale_feature, set_error

from conftest import PROMPT, build

N = len(PROMPT)


@pytest.fixture(scope="module")
def rm():
    return build("llama", "plt")


@pytest.mark.parametrize(
    ("intervention", "message"),
    [
        ((2, 1, 0, 1.0), r"layer 2 does not exist: the model has 2 layers \(0\.\.1\)"),
        ((-1, 1, 0, 1.0), "layer -1 does not exist"),
        ((0, 1, 32, 1.0), r"feature 32 does not exist at layer 0: .* 32 features per layer"),
        ((0, 1, [3, -1], 1.0), "feature -1 does not exist"),
        ((0, N, 0, 1.0), f"position {N} is past the end of the prompt: the prompt has {N} tokens"),
        ((0, torch.tensor([1, 99]), 0, 1.0), "position 99 is past the end"),
        ((0, -N - 1, 0, 1.0), "past the end of the prompt"),
        ((0, slice(N, None), 0, 1.0), "selects no token"),
        ((0, 1, 0, torch.tensor(2)), r"dtype torch.int64; pass a floating-point tensor"),
        ((0, 1, 0, torch.tensor(True)), "floating-point tensor"),
        ((0, 1, 0, "big"), "value must be a number or a float tensor"),
        (
            (0, 1, [1, 2], torch.ones(3)),
            r"shape \(3,\) does not broadcast to \[positions=1, features=2\]",
        ),
        ((0, 1, 0.5, 1.0), "feature index must be an int"),
        (
            (0, torch.tensor([1.0]), 0, 1.0),
            "positions must be an int, a slice or a 1-D list/tensor of ints",
        ),
        ((0, 1, torch.tensor([[1, 2]]), 1.0), "feature indices must be an int or a 1-D"),
        ((1.5, 1, 0, 1.0), "layer must be an int"),
        ((0, 1, 0), "use a \\(layer, position, feature, value\\) tuple"),
        (Intervention(0, 1, 0, 1.0, "add"), "use 'set' or 'scale'"),  # type: ignore[arg-type]
        (set_error(0, 1, torch.ones(5)), r"does not broadcast to \[positions=1, d_model=16\]"),
    ],
)
def test_bad_intervention_is_refused(rm, intervention, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        feature_intervention(rm, PROMPT, [intervention])


def test_a_bare_intervention_must_be_wrapped_in_a_list(rm) -> None:
    with pytest.raises(ValueError, match="wrap the single one in a list"):
        feature_intervention(rm, PROMPT, (0, 1, 0, 1.0))  # type: ignore[arg-type]


def test_open_ended_values_cannot_vary_by_position(rm) -> None:
    with pytest.raises(ValueError, match="cannot vary by position"):
        feature_intervention(rm, PROMPT, [(0, slice(1, None), 0, torch.ones(7, 1))])


@pytest.mark.parametrize(
    ("layers", "message"),
    [(range(0), "constrained_layers is empty"), ([0, 5], "contains layer 5")],
)
def test_bad_constrained_layers_are_refused(rm, layers, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        feature_intervention(rm, PROMPT, [], constrained_layers=layers)


def test_per_position_values_are_accepted(rm) -> None:
    values = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    res = feature_intervention(rm, PROMPT, [(0, [2, 4], [5, 6], values)])
    assert isinstance(res.activations, torch.Tensor)
    torch.testing.assert_close(res.activations[0][[2, 4]][:, [5, 6]], values)


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), -float("inf"), torch.tensor([1.0, float("nan")])],
    ids=["nan", "inf", "-inf", "tensor-with-nan"],
)
def test_non_finite_values_are_refused(rm, value) -> None:
    with pytest.raises(ValueError, match="not a finite number"):
        feature_intervention(rm, PROMPT, [(0, 1, [1, 2], value)])
    with pytest.raises(ValueError, match="not a finite number"):
        scale_feature(0, 1, [1, 2], value)
    with pytest.raises(ValueError, match="not a finite number"):
        set_error(0, 1, value)
