"""``attribute(prompt, model, ...)``: circuitlab's engine with circuit-tracer's call.

Arguments, their order and defaults are circuit-tracer 0.5.0's (``batch_size=512``); the
graph is circuitlab's, returned as the compatibility ``Graph`` (``cfg``, ``scan``, ``to_pt``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, cast

import torch

from circuitlab.attribution.attribute import attribute as native_attribute
from circuitlab.models.tokens import Prompt
from circuitlab.replacement import ReplacementModel as NativeReplacementModel

from ..graph import Graph
from .targets import native_targets


def attribute(
    prompt: Any,
    model: Any,
    *,
    attribution_targets: Sequence[Any] | torch.Tensor | None = None,
    max_n_logits: int = 10,
    desired_logit_prob: float = 0.95,
    batch_size: int = 512,
    max_feature_nodes: int | None = None,
    offload: Literal["cpu", "disk"] | None = None,
    verbose: bool = False,
    update_interval: int = 4,
) -> Graph:
    """The attribution graph of ``prompt`` (a string, or token ids ``[pos]``) in ``model``.

    ``attribution_targets``: None (salient logits), token strings, a tensor of token ids, or
    ``CustomTarget`` / ``(token_str, prob, vec)`` items. ``attribute(model, prompt)`` (the
    order in circuit-tracer's README) is accepted too: the two are told apart by type.
    """
    if isinstance(prompt, NativeReplacementModel) and not isinstance(model, NativeReplacementModel):
        prompt, model = model, prompt  # attribute(model, prompt), as in circuit-tracer's README
    text_or_ids = cast(Prompt, prompt)
    if not isinstance(model, NativeReplacementModel):
        raise TypeError(
            f"model must be a ReplacementModel, got {type(model).__name__}; load one with "
            "ReplacementModel.from_pretrained(model_name, transcoder_set)"
        )
    graph = native_attribute(
        model,
        text_or_ids,
        attribution_targets=native_targets(attribution_targets),
        max_n_logits=max_n_logits,
        desired_logit_prob=desired_logit_prob,
        batch_size=batch_size,
        max_feature_nodes=max_feature_nodes,
        offload=offload,
        verbose=verbose,
        update_interval=update_interval,
    )
    return Graph.from_native(graph, model)
