"""The reduced circuit: a graph collapsed to supernodes, its edges summed exactly.

Groups (the reduced graph's nodes, in the graph's own layout)::

    [ supernodes 0..K-1 | errors, layer-major | tokens | logits ]

Every kept feature belongs to one supernode; a feature outside the pruned graph is counted with
the error node at its (layer, position), as ``graph.scores.compute_subgraph_scores`` counts
features outside a subgraph as errors (its outgoing edges stay, its inputs are dropped).

``R[G, H] = Σ_{t in G, s in H} A[t, s]`` over every edge of the graph whose target is a kept
feature or a logit: a supernode's edge is exactly the sum of its members' edges (edges inside
a supernode sum into its self-loop ``R[G, G]``). Built block by block over ``EdgeBlocks``
(products with one-hot group matrices), never from the dense matrix.

Scores on ``R`` follow ``graph.scores``: ``Â = |R| / Σ_H |R[G, H]|``, node influence
``inf = w Â (I - Â)^{-1}`` (the sum ``w Â + w Â² + ...``, solved directly because supernodes
may form cycles and self-loops), replacement ``inf(tokens) / (inf(tokens) + inf(errors))``,
completeness ``Σ_G (1 - Σ_e Â[G, e]) (inf_G + w_G) / Σ_G (inf_G + w_G)``. With one supernode
per feature and every feature kept they equal ``compute_graph_scores``.
"""

from __future__ import annotations

import torch

from circuitlab.graph.graph import Graph
from circuitlab.graph.scores import GraphScores


def node_groups(graph: Graph, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``group[N]`` (long): each node's group, features ``features[n]`` in supernode
    ``labels[n]``, other features with their (layer, pos) error node (module docs)."""
    k = int(labels.max()) + 1 if labels.numel() else 0
    n_err = graph.n_errors
    coords = graph.selected_feature_coords.cpu()
    group = torch.empty(graph.n_nodes, dtype=torch.long)
    group[: graph.n_selected] = k + coords[:, 0] * graph.n_pos + coords[:, 1]
    group[features.cpu()] = labels.cpu().long()
    group[graph.error_offset :] = k + torch.arange(n_err + graph.n_pos + graph.n_logits)
    return group


def reduced_edges(graph: Graph, group: torch.Tensor, kept_rows: torch.Tensor) -> torch.Tensor:
    """``R[G, G]`` (float64): edges summed by group over the rows ``kept_rows[N]`` (bool)."""
    n_groups = int(group.max()) + 1
    out = torch.zeros(n_groups, n_groups, dtype=torch.float64)
    for b in graph.edge_blocks.blocks:
        targets = b.targets.cpu()
        rows = kept_rows[targets].nonzero().flatten()
        if not rows.numel() or not b.sources.numel():
            continue
        values = b.values.cpu()[rows].double()  # [k, w]
        # Rows summed by target group as a product with a one-hot [g, k] matrix (index_add
        # with many repeated indices is much slower on CPU), then the few summed rows' columns
        # by source group with index_add.
        row_groups, local = torch.unique(group[targets[rows]], return_inverse=True)
        rows_onehot = torch.zeros(len(row_groups), len(rows), dtype=torch.float64)
        rows_onehot[local, torch.arange(len(rows))] = 1.0
        by_row_group = torch.zeros(len(row_groups), n_groups, dtype=torch.float64)
        by_row_group.index_add_(1, group[b.sources.cpu()], rows_onehot @ values)
        out[row_groups] += by_row_group
    return out


def reduced_scores(
    edges: torch.Tensor, weights: torch.Tensor, is_error: torch.Tensor, is_token: torch.Tensor
) -> tuple[GraphScores, torch.Tensor]:
    """``(scores, influence[G])`` of the reduced graph (module docs); ``weights[G]`` the logit
    weights, ``is_error`` / ``is_token`` ``[G]`` bool."""
    a = edges.abs()
    row_sums = a.sum(1)
    norm = a / row_sums.clamp(min=1e-10)[:, None]
    n = norm.shape[0]
    eye = torch.eye(n, dtype=torch.float64)
    # x = w Â (I - Â)^{-1}  <=>  (I - Â)^T x^T = Â^T w^T
    influence = torch.linalg.solve((eye - norm).T, norm.T @ weights.double())
    token = influence[is_token].sum()
    error = influence[is_error].sum()
    replacement = token / (token + error)
    has_inputs = row_sums > 0
    error_share = norm[:, is_error].sum(1) * has_inputs
    output = influence + weights.double()
    completeness = ((1 - error_share) * output).sum() / output.sum()
    return GraphScores(float(replacement), float(completeness)), influence
