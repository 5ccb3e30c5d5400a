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

**Default cut**: at the height of the position term, ``h* = w_position / Σ w`` (the weights
of the terms in use): every merge at a mean distance up to ``h*`` is kept, the rest undone. Two
groups at different positions then merge only when everything else about them is (on average)
identical, while features at one position merge as long as their profiles, decoders and layers
differ less than a change of position would. (Tried against the organism's held-out cities:
the best-silhouette cut was too coarse there, 11 of 24 cities with the state's features grouped
purer than their position; this cut gives 19 of 24.)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from circuitlab.circuits.hierarchy import Dendrogram, average_linkage
from circuitlab.graph.graph import Graph
from circuitlab.graph.pruning import PruneResult


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
    * ``dendrogram``: leaf ``i`` is ``features[i]``.
    * ``node_influence[N]``: every node's influence on the logits (float64).
    * ``cut_height``: the height of the default cut (module docs).
    * ``default_groups``: the number of groups it leaves.
    """

    features: torch.Tensor
    dendrogram: Dendrogram
    node_influence: torch.Tensor
    cut_height: float
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
        return Grouping(features, empty, torch.zeros(graph.n_nodes), 0.0, 0)
    scores, influence = edge_scores(graph, pruned)
    dist = feature_distances(graph, pruned, features, decoder, w, scores)
    dendrogram = average_linkage(dist, overwrite=True)  # the [n, n] matrix is not kept
    height = w.position / _total_weight(w, decoder is not None)
    groups = groups_at_height(dendrogram, height)
    return Grouping(features, dendrogram, influence, height, groups)


def _total_weight(w: GroupingWeights, with_decoder: bool) -> float:
    total = w.output + w.input + w.position + w.layer + (w.decoder if with_decoder else 0.0)
    if total <= 0:
        raise ValueError("GroupingWeights must give some term a positive weight")
    return total


def groups_at_height(dendrogram: Dendrogram, height: float) -> int:
    """Groups left when every merge up to ``height`` is kept (at least 1)."""
    n = dendrogram.n_leaves
    return max(n - int((dendrogram.heights <= height + 1e-12).sum()), min(n, 1))


def edge_scores(graph: Graph, pruned: PruneResult) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scores[n_kept], influence[N])``: the signed score of each kept edge (module docs)
    and the node influence (float64, CPU).

    Row sums and influence are computed in the edges' compute dtype (float32 for float32
    edges, as pruning does): they only weight the profiles, whose cosines are taken in float64.
    """
    g = graph.to("cpu")
    blocks = g.edge_blocks
    weights = g.logit_weights()
    row_sums = blocks.abs_sums()
    influence = blocks.influence(weights, row_sums).double()
    t, s = pruned.edge_targets.cpu(), pruned.edge_sources.cpu()
    values = blocks.values_at(t, s).double()
    scale = (influence + weights.double()) / row_sums.double().clamp(min=1e-10)
    return values * scale[t], influence


def feature_distances(
    graph: Graph,
    pruned: PruneResult,
    features: torch.Tensor,
    decoder: torch.Tensor | None,
    w: GroupingWeights,
    scores: torch.Tensor,
) -> np.ndarray:
    """``dist[n, n]`` (float64) between the features (module docs), from the kept edges'
    ``scores`` (``edge_scores``)."""
    n = int(features.numel())
    t, s = pruned.edge_targets.cpu(), pruned.edge_sources.cpu()
    leaf = torch.full((graph.n_nodes,), -1, dtype=torch.long)
    leaf[features] = torch.arange(n)
    total = _total_weight(w, decoder is not None)
    # dist = Σ_terms weight · (1 - cos) / 2 + position and layer terms, accumulated in place
    # into one [n, n] matrix: at thousands of features every [n, n] temporary costs.
    outputs = (leaf[s], t, w.output / total / 2)  # a feature's edges out, over their targets
    inputs = (leaf[t], s, w.input / total / 2)  # its edges in, over their sources
    dist = _weighted_cosines([outputs, inputs], scores, n, graph.n_nodes).neg_()
    constant = (w.output + w.input) / total / 2
    if decoder is not None and w.decoder:
        unit = decoder.double().cpu()
        unit = unit / unit.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        dist.addmm_(unit, unit.T, alpha=-w.decoder / total / 2)
        constant += w.decoder / total / 2
    # Position and layer terms take few distinct values: one gather from a small table over
    # the (position, layer) pairs present.
    coords = graph.selected_feature_coords.cpu()[features]
    pairs, key = torch.unique(coords[:, :2], dim=0, return_inverse=True)
    layer, pos = pairs[:, 0].double(), pairs[:, 1]
    span = max(graph.n_layers - 1, 1)
    table = (pos[:, None] != pos[None, :]).double() * (w.position / total)
    table += (layer[:, None] - layer[None, :]).abs() * (w.layer / total / span)
    table += constant
    by_row = table.index_select(0, key)  # [n, pairs]
    # Features come in node order, lexicographic by (layer, position): ``key`` runs in blocks,
    # so the columns are added block by block without an [n, n] temporary.
    starts = [0, *((key[1:] != key[:-1]).nonzero().flatten() + 1).tolist(), n]
    if len(starts) <= 4 * len(pairs) + 1:
        for a, b in zip(starts[:-1], starts[1:], strict=True):
            dist[:, a:b] += by_row[:, int(key[a]), None]
    else:
        dist.add_(by_row.index_select(1, key))
    dist.clamp_(min=0.0).fill_diagonal_(0.0)
    return dist.numpy()


def _weighted_cosines(
    profiles: list[tuple[torch.Tensor, torch.Tensor, float]],
    values: torch.Tensor,
    n: int,
    n_cols: int,
) -> torch.Tensor:
    """``Σ_k alpha_k · cos_k[n, n]`` (float64), where ``cos_k`` is the cosine between the rows of
    the sparse ``[n, n_cols]`` profile matrix with entries ``values`` at ``(rows_k, cols_k)``,
    for ``profiles = [(rows_k, cols_k, alpha_k), ...]`` (entries with ``rows < 0`` left out; a
    zero row has cosine 0 with every row). One sparse product: the profiles side by side, each
    row-normalised and scaled by ``sqrt(alpha_k)``."""
    parts_rows, parts_cols, parts_values = [], [], []
    for k, (rows, cols, alpha) in enumerate(profiles):
        keep = rows >= 0
        r, v = rows[keep], values[keep]
        norms = torch.zeros(n, dtype=torch.float64).index_add_(0, r, v * v)
        scale = alpha**0.5 / norms.sqrt().clamp(min=1e-30)
        parts_rows.append(r)
        parts_cols.append(cols[keep] + k * n_cols)
        parts_values.append(v * scale[r])
    index = torch.stack([torch.cat(parts_rows), torch.cat(parts_cols)])
    unit = torch.sparse_coo_tensor(
        index, torch.cat(parts_values), (n, len(profiles) * n_cols), check_invariants=False
    ).coalesce()
    with warnings.catch_warnings():  # torch calls its sparse products "beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse.mm(unit, unit.t()).to_dense()
