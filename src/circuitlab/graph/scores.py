"""How much of the model's computation a graph explains.

Both scores use circuit-tracer's definitions, on the normalized matrix ``Â`` and the node
influence ``inf = w(Â + Â² + ...)`` (see ``graph.influence``):

* **replacement** = ``inf(tokens) / (inf(tokens) + inf(errors))``: the share of end-to-end
  token-to-logit influence that does not pass through an error node (1 when no path touches an
  error, 0 when every token path does);
* **completeness** = ``Σ_i (1 - Σ_{e error} Â[i, e]) (inf_i + w_i) / Σ_i (inf_i + w_i)``: the
  influence-weighted share of each node's input that comes from non-error nodes. Nodes without
  inputs (errors, tokens) count as fully explained, as in circuit-tracer.

``compute_subgraph_scores`` scores a subset of the nodes (a pruned or pinned subgraph): every
feature outside the subset is treated as if it were an error node. It keeps its outgoing edges
and its place in the input shares of its targets (normalization is that of the full graph), but
loses its inputs, and counts as error in both scores. Error nodes stay errors; tokens and logits
always belong to the subset. With every feature in the subset it equals ``compute_graph_scores``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from circuitlab.graph.graph import Graph


class GraphScores(NamedTuple):
    """Replacement and completeness scores, each in [0, 1] (NaN if no token or error influence)."""

    replacement: float
    completeness: float


def compute_graph_scores(graph: Graph) -> GraphScores:
    """Replacement and completeness of the whole graph (see module docs)."""
    is_error = torch.zeros(graph.n_nodes, dtype=torch.bool, device=graph.edge_blocks.device)
    is_error[graph.error_offset : graph.token_offset] = True
    return _scores(graph, is_error)


def compute_subgraph_scores(graph: Graph, node_mask: torch.Tensor) -> GraphScores:
    """Scores of the subgraph ``node_mask[N]`` (bool); features outside it count as errors.

    ``node_mask`` may be ``PruneResult.node_mask`` or a mask of pinned nodes; its entries for
    error, token and logit nodes are ignored.
    """
    if tuple(node_mask.shape) != (graph.n_nodes,) or node_mask.dtype != torch.bool:
        raise ValueError(
            f"node_mask must be a bool tensor of shape ({graph.n_nodes},), got "
            f"{node_mask.dtype} {tuple(node_mask.shape)}"
        )
    node_mask = node_mask.to(graph.edge_blocks.device)
    is_error = torch.zeros(graph.n_nodes, dtype=torch.bool, device=graph.edge_blocks.device)
    is_error[graph.error_offset : graph.token_offset] = True
    is_error[: graph.n_selected] = ~node_mask[: graph.n_selected]
    return _scores(graph, is_error)


def _scores(graph: Graph, is_error: torch.Tensor) -> GraphScores:
    """Scores given which nodes count as errors (``is_error[N]``): ``Â`` is normalised over the
    full graph, and feature nodes counted as errors lose their inputs."""
    blocks = graph.edge_blocks
    weights = graph.logit_weights()
    row_sums = blocks.abs_sums()
    has_inputs = ~is_error
    influence = blocks.influence(weights, row_sums, target_mask=has_inputs)

    token_influence = influence[graph.token_offset : graph.logit_offset].sum()
    error_influence = influence[is_error].sum()
    replacement = token_influence / (token_influence + error_influence)

    error_share = blocks.abs_sums(source_mask=is_error) / row_sums.clamp(min=1e-10)
    non_error_share = 1 - error_share * has_inputs
    output_influence = influence + weights
    completeness = (non_error_share * output_influence).sum() / output_influence.sum()
    return GraphScores(float(replacement), float(completeness))
