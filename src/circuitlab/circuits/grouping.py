"""Automatic supernodes: the features of a pruned graph grouped by how they act in it.

Each kept feature gets

* an **output profile**: its signed edge scores into the kept targets, and an **input
  profile**: the signed edge scores of its kept inputs (features, errors, tokens), where an
  edge's score is the pruning score with its sign, ``A[t, s] / Σ_s' |A[t, s']| · (inf_t + w_t)``
  (its share of the target's input times the target's influence on the logits): so the
  profiles are weighted by influence;
* its **position** and **layer**, and (with a model) its **decoder direction**.

The distance between two features is a weighted mean of

    (1 - cos(out_i, out_j)) / 2,  (1 - cos(in_i, in_j)) / 2,  (1 - cos(dec_i, dec_j)) / 2,
    [pos_i != pos_j],  |layer_i - layer_j| / (n_layers - 1)

with the weights of ``GroupingWeights`` (a feature without kept edges on one side has a zero
profile there, at distance 1/2 from every feature). Average linkage over this matrix
(``hierarchy.average_linkage``) gives the dendrogram. Error nodes, tokens and logits are not
grouped: each keeps its own group.

**Default cut**: the number of groups with the highest mean silhouette (``s = (b - a) /
max(a, b)``, ``a`` the mean distance to the own group, ``b`` to the nearest other group;
0 for a feature alone in its group), over every number of groups from 2 to ``n - 1`` when
``n <= 64``, else over 48 numbers spaced evenly in log scale; the silhouette is averaged over
at most 1,024 features (the most influential), so the cut stays ``O(n^2)``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from circuitlab.circuits.hierarchy import Dendrogram, average_linkage
from circuitlab.graph.graph import Graph
from circuitlab.graph.pruning import PruneResult

_SILHOUETTE_ROWS = 1024
_CANDIDATES = 48


@dataclass(frozen=True)
class GroupingWeights:
    """How much each term counts in the distance between two features (module docs)."""

    output: float = 1.0
    input: float = 0.5
    decoder: float = 1.0
    position: float = 1.0
    layer: float = 0.5


@dataclass(frozen=True)
class Grouping:
    """The hierarchy over the kept features of a pruned graph.

    * ``features[n]`` (long): node indices of the grouped features (ascending).
    * ``distance[n, n]``: the distance matrix the dendrogram was built from.
    * ``dendrogram``: leaf ``i`` is ``features[i]``.
    * ``default_groups``: the number of groups of the default cut (module docs).
    """

    features: torch.Tensor
    distance: np.ndarray
    dendrogram: Dendrogram
    default_groups: int

    def cut(self, n_groups: int | None = None) -> np.ndarray:
        """``labels[n]``: the group of each feature for ``n_groups`` (default: the default cut)."""
        return self.dendrogram.cut(self.default_groups if n_groups is None else n_groups)


def group_features(
    graph: Graph,
    pruned: PruneResult,
    decoder: torch.Tensor | None = None,
    weights: GroupingWeights | None = None,
) -> Grouping:
    """The dendrogram over the features kept in ``pruned`` (see module docs).

    ``decoder[n, d]`` are the kept features' decoder rows (``decoder_rows``); without it the
    decoder term is left out.
    """
    w = weights or GroupingWeights()
    features = pruned.node_mask[: graph.n_selected].nonzero().flatten().cpu()
    n = int(features.numel())
    if n == 0:
        empty = Dendrogram(0, np.zeros((0, 2), np.int64), np.zeros(0), np.zeros(0, np.int64))
        return Grouping(features, np.zeros((0, 0)), empty, 0)
    dist = feature_distances(graph, pruned, features, decoder, w)
    dendrogram = average_linkage(dist)
    influence = edge_score_totals(graph, pruned)[features].numpy()
    return Grouping(features, dist, dendrogram, default_cut(dendrogram, dist, influence))


def edge_scores(graph: Graph, pruned: PruneResult) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scores[n_kept], influence[N])``: the signed score of each kept edge (module docs)
    and the node influence (float64, CPU)."""
    g = graph.to("cpu")
    blocks = g.edge_blocks
    weights = g.logit_weights().double()
    row_sums = blocks.abs_sums(dtype=torch.float64)
    influence = blocks.influence(weights, row_sums)
    t, s = pruned.edge_targets.cpu(), pruned.edge_sources.cpu()
    values = blocks.values_at(t, s).double()
    scale = (influence + weights) / row_sums.clamp(min=1e-10)
    return values * scale[t], influence


def edge_score_totals(graph: Graph, pruned: PruneResult) -> torch.Tensor:
    """``[N]``: each node's node influence (what ranks features for the silhouette)."""
    return edge_scores(graph, pruned)[1]


def feature_distances(
    graph: Graph,
    pruned: PruneResult,
    features: torch.Tensor,
    decoder: torch.Tensor | None,
    w: GroupingWeights,
) -> np.ndarray:
    """``dist[n, n]`` (float64) between the features (module docs)."""
    n = int(features.numel())
    scores, _ = edge_scores(graph, pruned)
    t, s = pruned.edge_targets.cpu(), pruned.edge_sources.cpu()
    leaf = torch.full((graph.n_nodes,), -1, dtype=torch.long)
    leaf[features] = torch.arange(n)
    terms: list[tuple[float, torch.Tensor]] = []
    out_rows = leaf[s]  # edges leaving a grouped feature: profile over targets
    terms.append((w.output, _profile_distance(out_rows, t, scores, n, graph.n_nodes)))
    in_rows = leaf[t]  # edges entering a grouped feature: profile over sources
    terms.append((w.input, _profile_distance(in_rows, s, scores, n, graph.n_nodes)))
    if decoder is not None and w.decoder:
        unit = decoder.double().cpu()
        unit = unit / unit.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        terms.append((w.decoder, (1 - unit @ unit.T) / 2))
    coords = graph.selected_feature_coords.cpu()[features]
    layer, pos = coords[:, 0].double(), coords[:, 1]
    terms.append((w.position, (pos[:, None] != pos[None, :]).double()))
    span = max(graph.n_layers - 1, 1)
    terms.append((w.layer, (layer[:, None] - layer[None, :]).abs() / span))
    total = sum(weight for weight, _ in terms)
    if total <= 0:
        raise ValueError("GroupingWeights must give some term a positive weight")
    dist = torch.zeros(n, n, dtype=torch.float64)
    for weight, term in terms:
        dist += weight * term / total
    dist = ((dist + dist.T) / 2).clamp(min=0.0)
    dist.fill_diagonal_(0.0)
    return dist.numpy()


def _profile_distance(
    rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int, n_cols: int
) -> torch.Tensor:
    """``(1 - cos) / 2`` between the rows of the sparse ``[n, n_cols]`` profile matrix with
    entries ``values`` at ``(rows, cols)`` (entries with ``rows < 0`` left out)."""
    keep = rows >= 0
    index = torch.stack([rows[keep], cols[keep]])
    profile = torch.sparse_coo_tensor(
        index, values[keep], (n, n_cols), check_invariants=False
    ).coalesce()
    norms = torch.zeros(n, dtype=torch.float64)
    norms.index_add_(0, profile.indices()[0], profile.values() ** 2)
    unit = profile * (1 / norms.sqrt().clamp(min=1e-30))[:, None]
    with warnings.catch_warnings():  # torch calls its sparse products "beta"
        warnings.simplefilter("ignore", UserWarning)
        cos = torch.sparse.mm(unit, unit.t()).to_dense()
    return (1 - cos) / 2


def default_cut(dendrogram: Dendrogram, dist: np.ndarray, influence: np.ndarray) -> int:
    """The number of groups with the highest mean silhouette (module docs); 1 for n <= 2."""
    n = dendrogram.n_leaves
    if n <= 2:
        return max(n, 0) and 1
    rows = np.sort(np.argsort(-influence, kind="stable")[:_SILHOUETTE_ROWS])
    best, best_k = -np.inf, 1
    for k in candidate_cuts(n):
        score = mean_silhouette(dist, dendrogram.cut(k), rows)
        if score > best + 1e-12:  # ties keep the fewer groups
            best, best_k = score, k
    return best_k


def candidate_cuts(n: int) -> list[int]:
    """Numbers of groups the default cut tries (module docs)."""
    if n <= 64:
        return list(range(2, n))
    grid = np.unique(np.round(np.geomspace(2, n - 1, _CANDIDATES)).astype(np.int64))
    return [int(k) for k in grid]


def mean_silhouette(dist: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> float:
    """Mean silhouette of ``rows`` under ``labels`` (module docs)."""
    k = int(labels.max()) + 1
    onehot = np.zeros((labels.size, k))
    onehot[np.arange(labels.size), labels] = 1.0
    counts = onehot.sum(0)
    sums = dist[rows] @ onehot  # [rows, k]: total distance to each group
    own = labels[rows]
    own_count = counts[own] - 1
    a = np.where(own_count > 0, sums[np.arange(rows.size), own] / np.maximum(own_count, 1), 0)
    other = sums / counts[None, :]
    other[np.arange(rows.size), own] = np.inf
    b = other.min(1)
    s = np.where(own_count > 0, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())
