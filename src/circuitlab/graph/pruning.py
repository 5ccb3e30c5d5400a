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

Differences from circuit-tracer, by design: everything works block by block on the graph's
``edge_blocks`` (never ``[n_rows, N]`` or ``N x N``), in float32 (float64 for float64 edges)
whatever the edge dtype; the kept edges come back as (target, source) node pairs, with a dense
``edge_mask`` built only on request; an edge whose score is zero is never kept; the cut-off is
found without sorting all scores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from circuitlab.graph.graph import Graph

# Positive float32 values keep their order when their bits are read as int32; the top 16 bits
# (exponent + 7 mantissa bits) split them into at most 2**15 buckets of ~1% relative width.
_BUCKET_SHIFT = 16
_N_BUCKETS = 1 << 15


@dataclass(frozen=True)
class PruneResult:
    """What ``prune_graph`` keeps.

    * ``node_mask[N]`` (bool): kept nodes.
    * ``edge_targets[n_kept]``, ``edge_sources[n_kept]`` (long): node indices of the kept
      edges, in row-major order (by target, then source).
    * ``cumulative_scores[N]``: cumulative influence share of each node (smaller = more important).
    * ``row_nodes[n_rows]``: the graph's ``row_nodes``, to lay out ``edge_mask``.
    """

    node_mask: torch.Tensor
    edge_targets: torch.Tensor
    edge_sources: torch.Tensor
    cumulative_scores: torch.Tensor
    row_nodes: torch.Tensor

    @property
    def n_edges(self) -> int:
        """Number of kept edges."""
        return int(self.edge_targets.numel())

    @property
    def edge_mask(self) -> torch.Tensor:
        """Dense ``[n_rows, N]`` bool mask of the kept edges, laid out like ``Graph.edges``:
        built on request (``n_rows * N`` bytes), for circuit-tracer users and small graphs."""
        n_nodes = self.node_mask.numel()
        row_of = torch.full((n_nodes,), -1, dtype=torch.long, device=self.row_nodes.device)
        row_of[self.row_nodes] = torch.arange(len(self.row_nodes), device=self.row_nodes.device)
        mask = torch.zeros(len(self.row_nodes), n_nodes, dtype=torch.bool)
        mask[row_of[self.edge_targets].cpu(), self.edge_sources.cpu()] = True
        return mask.to(self.node_mask.device)

    def within(self, node_mask: torch.Tensor) -> PruneResult:
        """The kept edges whose two ends are in ``node_mask[N]``, with that node mask."""
        keep = node_mask[self.edge_targets] & node_mask[self.edge_sources]
        return PruneResult(
            node_mask,
            self.edge_targets[keep],
            self.edge_sources[keep],
            self.cumulative_scores,
            self.row_nodes,
        )


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
    flat = scores.detach().reshape(-1)
    return threshold_of_chunks(lambda: flat.split(chunk_size), threshold)


def threshold_of_chunks(chunks: Callable[[], Iterable[torch.Tensor]], threshold: float) -> float:
    """``find_threshold`` over scores given as chunks; ``chunks()`` is called twice and must
    give the same non-negative tensors (any shapes) each time."""
    check_fraction("threshold", threshold)
    bucket_mass: torch.Tensor | None = None
    for chunk in chunks():
        positive = chunk[chunk > 0]
        if bucket_mass is None:
            bucket_mass = torch.zeros(_N_BUCKETS, dtype=torch.float64, device=chunk.device)
        if positive.numel():
            bucket_mass += torch.bincount(
                _bucket(positive), weights=positive.double(), minlength=_N_BUCKETS
            )
    total = 0.0 if bucket_mass is None else float(bucket_mass.sum())
    if bucket_mass is None or total <= 0.0:
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
        [p[_bucket(p) == bucket] for chunk in chunks() if (p := chunk[chunk > 0]).numel()]
    )
    in_bucket = in_bucket.double().sort(descending=True).values
    running = in_bucket.cumsum(0) + mass_above
    k = int(torch.searchsorted(running, torch.tensor([target], dtype=torch.float64)))
    return float(in_bucket[min(k, in_bucket.numel() - 1)])


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
        ``PruneResult`` (node mask, kept edges as node pairs, cumulative scores).
    """
    check_fraction("node_threshold", node_threshold)
    check_fraction("edge_threshold", edge_threshold)
    blocks = graph.edge_blocks
    weights = graph.logit_weights()
    row_sums = blocks.abs_sums()
    _check_finite_edges(graph, row_sums)

    node_inf = blocks.influence(weights, row_sums)
    node_mask = node_inf >= find_threshold(node_inf, node_threshold)
    node_mask[graph.token_offset :] = True

    # Edge scores on the node-pruned graph: Â'[t, s] * (influence' + w)[t], one block at a time.
    kept = node_mask.to(weights.dtype)
    kept_sums = blocks.abs_sums(source_mask=kept)
    edge_inf = blocks.influence(weights, kept_sums, source_mask=kept, target_mask=kept)
    row_factor = kept * (edge_inf + weights) / kept_sums.clamp(min=1e-10)

    def scores() -> Iterable[torch.Tensor]:
        return (a for _, a in blocks.normalized_blocks(row_factor, kept))

    cut = threshold_of_chunks(scores, edge_threshold)
    targets, sources = [], []
    for b, a in blocks.normalized_blocks(row_factor, kept):
        i, j = ((a >= cut) & (a > 0)).nonzero(as_tuple=True)
        targets.append(b.targets[i])
        sources.append(b.sources[j])
    edge_targets, edge_sources = _row_major(graph, targets, sources)
    edge_targets, edge_sources = _drop_dangling_nodes(graph, node_mask, edge_targets, edge_sources)
    return PruneResult(
        node_mask, edge_targets, edge_sources, cumulative_scores(node_inf), graph.row_nodes
    )


def _row_major(
    graph: Graph, targets: list[torch.Tensor], sources: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The edges concatenated and sorted by (target, source)."""
    device = graph.edge_blocks.device
    t = torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long, device=device)
    s = torch.cat(sources) if sources else torch.zeros(0, dtype=torch.long, device=device)
    order = torch.argsort(t * graph.n_nodes + s)
    return t[order], s[order]


def _check_finite_edges(graph: Graph, row_sums: torch.Tensor) -> None:
    """NaN or infinite edges get their own error naming the nodes (not "a cycle")."""
    if bool(torch.isfinite(row_sums).all()):
        return
    bad_nodes = (~torch.isfinite(row_sums)).nonzero().flatten()
    n_values = sum(
        int((~torch.isfinite(b.values)).sum())
        for b in graph.edge_blocks.blocks
        if bool(torch.isin(b.targets, bad_nodes).any())
    )
    names = [_node_name(graph, int(n)) for n in bad_nodes[:8].tolist()]
    more = f", ... ({len(bad_nodes)} rows in all)" if len(bad_nodes) > 8 else ""
    raise ValueError(
        f"the graph's edges hold {n_values} NaN or infinite values in {len(bad_nodes)} of "
        f"{graph.n_rows} rows (into {', '.join(names)}{more}); pruning needs finite edges. "
        "This is not a cycle: recompute the graph (a NaN usually comes from a NaN "
        "activation or a float16 overflow; trace in float32 or bfloat16)"
    )


def _node_name(graph: Graph, node: int) -> str:
    """``feature L1 pos 3 #12`` or ``logit ' Paris'`` (the kinds that have rows)."""
    if graph.node_kind(node) == "feature":
        layer, pos, idx = graph.selected_feature_coords[node].tolist()
        return f"feature L{layer} pos {pos} #{idx}"
    target = graph.logit_targets[node - graph.logit_offset]
    return f"logit {target.token_str!r}"


def _drop_dangling_nodes(
    graph: Graph, node_mask: torch.Tensor, targets: torch.Tensor, sources: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Until stable (``node_mask`` in place): features/errors need an outgoing edge, features an
    incoming one; edges of dropped nodes go. Returns the edges left."""
    n_sel, sources_end = graph.n_selected, graph.token_offset
    while True:
        before = node_mask.clone()
        keep = node_mask[targets] & node_mask[sources]
        targets, sources = targets[keep], sources[keep]
        has_out = torch.zeros_like(node_mask)
        has_out[sources] = True
        has_in = torch.zeros_like(node_mask)
        has_in[targets] = True
        node_mask[:sources_end] &= has_out[:sources_end]
        node_mask[:n_sel] &= has_in[:n_sel]
        if torch.equal(node_mask, before):
            return targets, sources


def cumulative_scores(influence: torch.Tensor) -> torch.Tensor:
    """``[N] -> [N]``: share of total influence held by nodes ranked at or above each node."""
    ordered, order = torch.sort(influence, descending=True)
    shares = torch.cumsum(ordered, dim=0) / ordered.sum()
    result = torch.zeros_like(influence)
    result[order] = shares
    return result
