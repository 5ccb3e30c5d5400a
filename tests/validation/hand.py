"""Hand-built graphs whose overlaps are known in closed form.

``star_graph({feature: w})``: one layer, two positions; every feature sits at layer 0,
position ``pos``, reads the token there with weight 1 and writes the single logit (p = 1) with
weight ``w``. Then a feature's node share is ``w / Σw``, and each of its two edges (token ->
feature, feature -> logit) has edge share ``w / (2 Σw)``.
"""

from __future__ import annotations

import torch

from circuitlab.graph import Graph, LogitTarget


def star_graph(
    weights: dict[int, float],
    *,
    pos: int = 1,
    n_pos: int = 2,
    logit: int = 100,
    tokens: list[int] | None = None,
    model_name: str = "tiny",
    transcoder_name: str | None = None,
    layer: int = 0,
    n_layers: int = 1,
) -> Graph:
    feats = sorted(weights)
    n_sel = len(feats)
    n_err = n_layers * n_pos
    n = n_sel + n_err + n_pos + 1
    token_node = n_sel + n_err + pos
    edges = torch.zeros(n_sel + 1, n, dtype=torch.float64)
    for i, f in enumerate(feats):
        edges[i, token_node] = 1.0
        edges[n_sel, i] = weights[f]
    coords = torch.tensor([[layer, pos, f] for f in feats], dtype=torch.long).reshape(-1, 3)
    return Graph(
        input_string=f"star {weights}",
        input_tokens=torch.tensor(tokens or list(range(10, 10 + n_pos))),
        logit_targets=[LogitTarget(f"tok{logit}", logit)],
        logit_probabilities=torch.tensor([1.0], dtype=torch.float64),
        vocab_size=1000,
        active_features=coords,
        activation_values=torch.ones(n_sel),
        selected_features=torch.arange(n_sel),
        edges=edges,
        n_layers=n_layers,
        model_name=model_name,
        transcoder_name=transcoder_name,
    )
