"""A pruned graph seen as keyed, influence-weighted nodes and edges: what comparisons compare.

Graphs of different prompts have different node indices, so comparison works on **keys**:

* feature ``{layer}_{feature}`` (position-independent) or its node id ``{layer}_{feature}_{pos}``
  (position-aware);
* token ``E_{token_id}`` or ``E_{token_id}_{pos}``; logit ``logit_{vocab_idx}``;
* error nodes get no key: an error node is the residual of one prompt at one place and has no
  identity across graphs. They stay in the spectral view (``adjacency``), not in the overlaps.

**Node weights** are the feature nodes' influence on the weighted logits (``graph.influence``,
computed on the full graph) as shares of the kept feature nodes' total. **Edge weights** are the
pruning edge scores (``Â[t, s] · (influence + w)[t]`` on the node-pruned graph, as in
``prune_graph``) of the kept edges between keyed nodes, as shares of their total. Several nodes
(or edges) with one key add up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from circuitlab.graph.export import node_ids
from circuitlab.graph.graph import Graph
from circuitlab.graph.pruning import PruneResult, check_fraction, prune_graph

EdgeKey = tuple[str, str]


@dataclass(frozen=True)
class Circuit:
    """One pruned graph, keyed and weighted (see the module docs).

    * ``ids[N]``: the lab's node id of every node of the graph.
    * ``node_mask[N]``: the kept nodes; ``edge_targets[n_edges]`` / ``edge_sources[n_edges]``:
      the kept edges as node pairs (kept edges join kept nodes).
    * ``node_weight`` / ``node_members``: feature key -> share of influence / node ids.
    * ``edge_weight`` / ``edge_members``: (source key, target key) -> share of edge score /
      ``(source id, target id)`` pairs.
    * ``adjacency[n_kept, n_kept]``: ``|A|`` restricted to kept nodes and edges, rows = targets,
      in node order (``kept`` holds their node indices); errors included.
    """

    ids: list[str]
    node_mask: torch.Tensor
    edge_targets: torch.Tensor
    edge_sources: torch.Tensor
    node_weight: dict[str, float]
    node_members: dict[str, list[str]]
    edge_weight: dict[EdgeKey, float]
    edge_members: dict[EdgeKey, list[tuple[str, str]]]
    kept: torch.Tensor
    adjacency: torch.Tensor

    @property
    def n_edges(self) -> int:
        """Number of kept edges."""
        return int(self.edge_targets.numel())


def prune_kept(graph: Graph, node_threshold: float, edge_threshold: float) -> PruneResult:
    """``prune_graph`` with edges restricted to kept nodes at both ends (the graph file's view)."""
    pruned = prune_graph(graph, node_threshold=node_threshold, edge_threshold=edge_threshold)
    return pruned.within(pruned.node_mask)


def node_keys(
    graph: Graph,
    *,
    position_aware: bool = False,
    feature_map: Mapping[tuple[int, int], int] | None = None,
) -> list[str | None]:
    """The comparison key of every node ``0 .. N-1`` (``None`` for error nodes).

    ``feature_map`` renames features before keying: ``(layer, feature) -> feature`` (used to put
    aligned features of another transcoder basis into this basis' keys); with it, features it
    does not name are keyed ``{layer}_b{feature}`` so they never collide with renamed ones.
    """
    keys: list[str | None] = []
    for layer, pos, feat in graph.selected_feature_coords.tolist():
        name = str(feat)
        if feature_map is not None:
            name = str(feature_map[(layer, feat)]) if (layer, feat) in feature_map else f"b{feat}"
        keys.append(f"{layer}_{name}_{pos}" if position_aware else f"{layer}_{name}")
    keys += [None] * graph.n_errors
    for pos, tok in enumerate(graph.input_tokens.tolist()):
        keys.append(f"E_{tok}_{pos}" if position_aware else f"E_{tok}")
    keys += [f"logit_{t.vocab_idx}" for t in graph.logit_targets]
    return keys


def circuit_of(
    graph: Graph,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    *,
    position_aware: bool = False,
    feature_map: Mapping[tuple[int, int], int] | None = None,
) -> Circuit:
    """Prune ``graph`` and key and weigh its nodes and edges (see the module docs)."""
    check_fraction("node_threshold", node_threshold)
    check_fraction("edge_threshold", edge_threshold)
    g = graph.to("cpu")
    pruned = prune_kept(g, node_threshold, edge_threshold)
    node_mask = pruned.node_mask
    blocks = g.edge_blocks
    influence = blocks.influence(g.logit_weights(), blocks.abs_sums())

    ids = node_ids(g)
    keys = node_keys(g, position_aware=position_aware, feature_map=feature_map)
    node_weight: dict[str, float] = {}
    node_members: dict[str, list[str]] = {}
    features = node_mask[: g.n_selected].nonzero().flatten().tolist()
    total = float(influence[features].sum()) if features else 0.0
    for i in features:
        key = keys[i]
        assert key is not None
        share = float(influence[i]) / total if total > 0 else 1.0 / len(features)
        node_weight[key] = node_weight.get(key, 0.0) + share
        node_members.setdefault(key, []).append(ids[i])

    edge_weight, edge_members = _keyed_edges(g, pruned, keys, ids)
    kept = node_mask.nonzero().flatten()
    adjacency = kept_adjacency(g, kept, pruned)
    return Circuit(
        ids, node_mask, pruned.edge_targets, pruned.edge_sources, node_weight, node_members,
        edge_weight, edge_members, kept, adjacency,
    )  # fmt: skip


def kept_adjacency(g: Graph, kept: torch.Tensor, pruned: PruneResult) -> torch.Tensor:
    """``|A|[n_kept, n_kept]`` (float64) over the kept nodes ``kept[n_kept]`` and the kept edges
    of ``pruned`` (both ends kept); memory ``n_kept²``, never ``N²``."""
    position = torch.full((g.n_nodes,), -1, dtype=torch.long)
    position[kept] = torch.arange(kept.numel())
    edges = pruned.within(position >= 0)
    adjacency = torch.zeros(kept.numel(), kept.numel(), dtype=torch.float64)
    values = g.edge_blocks.values_at(edges.edge_targets, edges.edge_sources).abs().double()
    adjacency[position[edges.edge_targets], position[edges.edge_sources]] = values
    return adjacency


def _keyed_edges(
    g: Graph,
    pruned: PruneResult,
    keys: list[str | None],
    ids: list[str],
) -> tuple[dict[EdgeKey, float], dict[EdgeKey, list[tuple[str, str]]]]:
    """Edge shares and members by (source key, target key); edges touching errors are left out."""
    blocks, weights = g.edge_blocks, g.logit_weights().double()
    kept = pruned.node_mask.double()
    kept_sums = blocks.abs_sums(source_mask=kept, dtype=torch.float64)
    edge_inf = blocks.influence(weights, kept_sums, source_mask=kept, target_mask=kept)
    row_factor = kept * (edge_inf + weights) / kept_sums.clamp(min=1e-10)
    cols, rows = pruned.edge_sources, pruned.edge_targets
    scores = blocks.values_at(rows, cols).double().abs() * row_factor[rows]
    targets, values = rows.tolist(), scores.tolist()
    keyed = [
        (keys[s], keys[t], s, t, v)
        for s, t, v in zip(cols.tolist(), targets, values, strict=True)
        if keys[s] is not None and keys[t] is not None
    ]
    total = sum(v for *_, v in keyed)
    edge_weight: dict[EdgeKey, float] = {}
    edge_members: dict[EdgeKey, list[tuple[str, str]]] = {}
    for ks, kt, s, t, v in keyed:
        assert ks is not None and kt is not None
        key = (ks, kt)
        share = v / total if total > 0 else 1.0 / len(keyed)
        edge_weight[key] = edge_weight.get(key, 0.0) + share
        edge_members.setdefault(key, []).append((ids[s], ids[t]))
    return edge_weight, edge_members
