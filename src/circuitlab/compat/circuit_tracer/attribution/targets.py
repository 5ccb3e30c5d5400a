"""circuit-tracer's target records: ``LogitTarget``, ``CustomTarget`` and raw target tuples.

``CustomTarget(token_str, prob, vec)`` and a raw ``(token_str, prob, vec)`` tuple become
circuitlab's ``CustomTarget(label, weight, vec)``; token strings and tensors of token ids pass
through unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from circuitlab.attribution.targets import CustomTarget as NativeCustomTarget
from circuitlab.attribution.targets import LogitDiff
from circuitlab.attribution.targets import TargetSpec as NativeTargetSpec
from circuitlab.graph.targets import LogitTarget


class CustomTarget(NamedTuple):
    """A residual direction ``vec [d_model]`` attributed as one logit node.

    ``token_str`` labels the node, ``prob`` weights it in influence and pruning.
    """

    token_str: str
    prob: float
    vec: torch.Tensor


TargetSpec = CustomTarget | tuple[str, float, torch.Tensor]


def native_targets(
    targets: Sequence[Any] | torch.Tensor | None,
) -> Sequence[NativeTargetSpec] | torch.Tensor | None:
    """circuit-tracer's ``attribution_targets`` as circuitlab's (see the module docstring)."""
    if targets is None or isinstance(targets, torch.Tensor):
        return targets
    if isinstance(targets, (str, CustomTarget)) or _is_raw(targets):
        targets = [targets]
    return [_native(t) for t in targets]


def _is_raw(spec: object) -> bool:
    return (
        isinstance(spec, tuple)
        and not isinstance(spec, (LogitDiff, NativeCustomTarget))
        and len(spec) == 3
        and isinstance(spec[0], str)
        and isinstance(spec[2], torch.Tensor)
    )


def _native(spec: Any) -> NativeTargetSpec:
    if isinstance(spec, NativeCustomTarget | LogitDiff):
        return spec
    if isinstance(spec, CustomTarget) or _is_raw(spec):
        label, prob, vec = spec
        return NativeCustomTarget(str(label), float(prob), vec)
    if isinstance(spec, (str, int)):
        return spec
    raise TypeError(
        f"unsupported attribution target {spec!r}: use a token string, a tensor of token ids, "
        "CustomTarget(token_str, prob, vec) or a (token_str, prob, vec) tuple"
    )


__all__ = ["CustomTarget", "LogitTarget", "TargetSpec", "native_targets"]
