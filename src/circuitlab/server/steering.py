"""Steering from the page: set or scale graph nodes, compare next-token distributions and
greedy continuations with and without the change (``ReplacementModel.feature_intervention``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from circuitlab.graph.graph import Graph

MAX_NODES = 512
MAX_NEW_TOKENS = 64


def steering_prompt(graph_dir: Path, slug: str, metadata_prompt: str | None) -> Any:
    """The graph's own token ids when its ``.safetensors`` is beside it, else its prompt text."""
    saved = graph_dir / f"{slug}.safetensors"
    if saved.is_file():
        return Graph.load(saved).input_tokens
    if not metadata_prompt:
        raise ValueError(f"graph {slug!r} has no prompt to steer")
    return metadata_prompt


def steer(
    model: Any,
    prompt: Any,
    node_ids: list[str],
    *,
    value: float | None = None,
    scale: float | None = None,
    max_new_tokens: int = 12,
    top_k: int = 8,
) -> dict[str, Any]:
    """Top next tokens and a greedy continuation, original and steered.

    ``node_ids`` are feature (``{layer}_{feature}_{pos}``) or error (``{layer}_-1_{pos}``) node
    ids; ``value`` sets them, ``scale`` multiplies them (neither: ablate).
    """
    from circuitlab.interventions import node_interventions

    if not node_ids or len(node_ids) > MAX_NODES:
        raise ValueError(f"steer 1 to {MAX_NODES} feature or error nodes")
    if not 0 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise ValueError(f"max_new_tokens must be between 0 and {MAX_NEW_TOKENS}")
    n_layers = model.n_layers
    for node_id in node_ids:
        layer = node_id.split("_")[0]
        if layer == "E" or (layer.isdigit() and int(layer) >= n_layers):
            raise ValueError(f"{node_id!r} is a token or logit node; steer features or errors")
    interventions = node_interventions(node_ids, value=value, scale=scale)
    tokenizer = model.tokenizer

    def run(ivs: list[Any]) -> dict[str, Any]:
        logits = model.feature_intervention(prompt, ivs, return_activations=False).logits[-1]
        probs = torch.softmax(logits.float(), -1)
        p, idx = probs.topk(min(top_k, probs.shape[-1]))
        top = [
            {"token": _decode(tokenizer, int(i)), "id": int(i), "prob": float(q)}
            for q, i in zip(p.tolist(), idx.tolist(), strict=True)
        ]
        completion = ""
        if max_new_tokens:
            gen = model.feature_intervention_generate(prompt, ivs, max_new_tokens=max_new_tokens)
            completion = gen.completion
        return {"top": top, "completion": completion}

    return {
        "original": run([]),
        "steered": run(interventions),
        "n_interventions": len(interventions),
    }


def _decode(tokenizer: Any, token_id: int) -> str:
    return str(tokenizer.decode([token_id])) if tokenizer is not None else f"<{token_id}>"
