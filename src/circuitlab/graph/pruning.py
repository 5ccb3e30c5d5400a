"""Pruning a graph to the nodes and edges that carry most of the influence on the logits.

Same definitions as circuit-tracer's ``prune_graph``:

1. node influence on the weighted logits; keep the smallest set of nodes whose influence makes
   up ``node_threshold`` of the total (ties at the cut are kept); tokens and logits always stay;
2. zero the edges of dropped nodes, renormalize, and score each edge as its share of the
   target's input times the target's influence (a logit's influence is its weight); keep the
   smallest set of edges making up ``edge_threshold`` of the total edge score;
3. repeat until stable: a feature or error node needs a kept outgoing edge, a feature needs a
   kept incoming edge, edges of removed nodes are removed.

``cumulative_scores[i]`` is the share of total influence held by the nodes at least as
influential as ``i`` (descending order), so smaller means more important; the UI JSON calls it
``influence``.

Differences from circuit-tracer, by design: everything works on the stored rows (memory
``n_rows x N``, never ``N x N``); ``edge_mask`` is ``[n_rows, N]`` like ``Graph.edges``; an edge
whose score is zero is never kept; the cut-off is found without sorting all scores.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from circuitlab.graph.graph import Graph
from circuitlab.graph.influence import (
    check_finite,
    compute_influence,
    edge_influence,
    normalize_rows,
)

# Positive float32 values keep their order when their bits are read as int32; the top 16 bits
# (exponent + 7 mantissa bits) split them into at most 2**15 buckets of ~1% relative width.
_BUCKET_SHIFT = 16
_N_BUCKETS = 1 << 15


class PruneResult(NamedTuple):
    """What ``prune_graph`` keeps.

    * ``node_mask[N]`` (bool): kept nodes.
    * ``edge_mask[n_rows, N]`` (bool): kept edges, laid out like ``Graph.edges``.
    * ``cumulative_scores[N]``: cumulative influence share of each node (smaller = more important).
    """

    node_mask: torch.Tensor
    edge_mask: torch.Tensor
    cumulative_scores: torch.Tensor


def check_fraction(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``0 <= value <= 1``."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0.0 and 1.0 (a share of influence), got {value}")


def find_threshold(scores: torch.Tensor, threshold: float, chunk_size: int = 1 << 22) -> float:
    """The score of the last item in the smallest top set holding ``threshold`` of the total.

    Sorting the scores descending and accumulating, the result is the first score at which the
    running share reaches ``threshold`` (the last positive score if rounding never gets there);
    ``scores >= result`` is the kept set. Returns 0.0 when no score is positive.

    ``scores`` has any shape and must be non-negative. Instead of sorting everything, positive
    scores are bucketed by their float32 bit pattern (order-preserving), the bucket where the
    share crosses ``threshold`` is found from the bucket sums, and only that bucket is sorted;
    work memory is ``chunk_size`` elements plus one bucket.
    """
    check_fraction("threshold", threshold)
    flat = scores.detach().reshape(-1)
    bucket_mass = torch.zeros(_N_BUCKETS, dtype=torch.float64, device=flat.device)
    for chunk in flat.split(chunk_size):
        positive = chunk[chunk > 0]
        if positive.numel():
            bucket_mass += torch.bincount(
                _bucket(positive), weights=positive.double(), minlength=_N_BUCKETS
            )
    total = float(bucket_mass.sum())
    if total <= 0.0:
        return 0.0
    target = threshold * total

    # mass_from_top[j] = mass of buckets >= (_N_BUCKETS - 1 - j)
    mass_from_top = bucket_mass.flip(0).cumsum(0)
    nonempty = (bucket_mass.flip(0) > 0).nonzero().flatten()
    j = int(torch.searchsorted(mass_from_top, torch.tensor([target], dtype=torch.float64)))
    j = min(max(j, int(nonempty[0])), int(nonempty[-1]))
    mass_above = float(mass_from_top[j - 1]) if j > 0 else 0.0
    bucket = _N_BUCKETS - 1 - j

    in_bucket = torch.cat(
        [positive[_bucket(positive) == bucket] for positive in _positive_chunks(flat, chunk_size)]
    )
    in_bucket = in_bucket.double().sort(descending=True).values
    running = in_bucket.cumsum(0) + mass_above
    k = int(torch.searchsorted(running, torch.tensor([target], dtype=torch.float64)))
    return float(in_bucket[min(k, in_bucket.numel() - 1)])


def _positive_chunks(flat: torch.Tensor, chunk_size: int) -> list[torch.Tensor]:
    return [chunk[chunk > 0] for chunk in flat.split(chunk_size)]


def _bucket(positive: torch.Tensor) -> torch.Tensor:
    """Order-preserving bucket id of positive values (``[n] -> [n]`` long)."""
    bits = positive.to(torch.float32).contiguous().view(torch.int32)
    return (bits >> _BUCKET_SHIFT).long()


def prune_graph(
    graph: Graph, node_threshold: float = 0.8, edge_threshold: float = 0.98
) -> PruneResult:
    """Keep the nodes and edges carrying most influence on the logits (see module docs).

    Args:
        graph: the graph to prune (left unchanged).
        node_threshold: share of total node influence the kept feature/error nodes must hold.
        edge_threshold: share of total edge score the kept edges must hold.

    Returns:
        ``PruneResult(node_mask[N], edge_mask[n_rows, N], cumulative_scores[N])``.
    """
    check_fraction("node_threshold", node_threshold)
    check_fraction("edge_threshold", edge_threshold)
    weights = graph.logit_weights()
    row_nodes = graph.row_nodes
    _check_finite_edges(graph)

    node_inf = compute_influence(normalize_rows(graph.edges), row_nodes, weights)
    node_mask = node_inf >= find_threshold(node_inf, node_threshold)
    node_mask[graph.token_offset :] = True

    # one n_rows x N work tensor: kept edges -> normalized -> edge scores
    scores = graph.edges * node_mask[None, :]
    scores[~node_mask[row_nodes]] = 0
    normalize_rows(scores, inplace=True)
    edge_influence(scores, row_nodes, weights, inplace=True)
    edge_mask = (scores >= find_threshold(scores, edge_threshold)) & (scores > 0)
    del scores

    _drop_dangling_nodes(graph, node_mask, edge_mask)
    return PruneResult(node_mask, edge_mask, cumulative_scores(node_inf))


def _check_finite_edges(graph: Graph) -> None:
    """NaN or infinite edges get their own error naming the nodes (not "a cycle")."""
    try:
        check_finite(graph.edges, graph.row_nodes)
    except ValueError:
        bad = (~torch.isfinite(graph.edges.sum(dim=1))).nonzero().flatten()
        n_values = int((~torch.isfinite(graph.edges[bad])).sum())
        names = [_node_name(graph, int(graph.row_nodes[r])) for r in bad[:8].tolist()]
        more = f", ... ({len(bad)} rows in all)" if len(bad) > 8 else ""
        raise ValueError(
            f"the graph's edges hold {n_values} NaN or infinite values in {len(bad)} of "
            f"{graph.n_rows} rows (into {', '.join(names)}{more}); pruning needs finite edges. "
            "This is not a cycle: recompute the graph (a NaN usually comes from a NaN "
            "activation or a float16 overflow; trace in float32 or bfloat16)"
        ) from None


def _node_name(graph: Graph, node: int) -> str:
    """``feature L1 pos 3 #12`` or ``logit ' Paris'`` (the kinds that have rows)."""
    if graph.node_kind(node) == "feature":
        layer, pos, idx = graph.selected_feature_coords[node].tolist()
        return f"feature L{layer} pos {pos} #{idx}"
    target = graph.logit_targets[node - graph.logit_offset]
    return f"logit {target.token_str!r}"


def _drop_dangling_nodes(graph: Graph, node_mask: torch.Tensor, edge_mask: torch.Tensor) -> None:
    """In place, until stable: features/errors need an outgoing edge, features an incoming one."""
    row_nodes = graph.row_nodes
    n_sel, sources_end = graph.n_selected, graph.token_offset
    while True:
        before = node_mask.clone()
        edge_mask &= node_mask[row_nodes][:, None]
        edge_mask &= node_mask[None, :]
        node_mask[:sources_end] &= edge_mask[:, :sources_end].any(0)
        node_mask[:n_sel] &= edge_mask[:n_sel].any(1)
        if torch.equal(node_mask, before):
            return


def cumulative_scores(influence: torch.Tensor) -> torch.Tensor:
    """``[N] -> [N]``: share of total influence held by nodes ranked at or above each node."""
    ordered, order = torch.sort(influence, descending=True)
    shares = torch.cumsum(ordered, dim=0) / ordered.sum()
    result = torch.zeros_like(influence)
    result[order] = shares
    return result
