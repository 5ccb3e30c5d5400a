"""``find_circuit``: a graph turned into a labelled circuit of supernodes in one call.

    circuit = find_circuit(graph, model=model, features_dir=paths.features)
    circuit.supernodes[0].label, circuit.supernodes[0].members   # lab node ids
    circuit.edges                                                 # the reduced edge table
    circuit.scores                                                # on the reduced graph
    circuit.cut(4)                                                # the same hierarchy, 4 groups
    circuit.validate(model).table()                               # ablation check

Grouping: ``circuits.grouping``; labels: ``circuits.labels``; the reduced graph and its scores:
``circuits.reduce``; the intervention check: ``circuits.check``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from circuitlab.circuits.grouping import Grouping, GroupingWeights, group_features
from circuitlab.circuits.labels import feature_label, supernode_label
from circuitlab.circuits.reduce import node_groups, reduced_edges, reduced_scores
from circuitlab.graph.export import FeatureStore, decode_feature_record, decode_tokens, node_ids
from circuitlab.graph.graph import Graph
from circuitlab.graph.pruning import PruneResult, prune_graph
from circuitlab.graph.scores import GraphScores

if TYPE_CHECKING:
    from circuitlab.circuits.check import Agreement
    from circuitlab.replacement import ReplacementModel


@dataclass(frozen=True)
class Supernode:
    """A group of features: ``members`` by the lab's node ids (``create_graph_files``),
    ``nodes`` by node index; ``children`` are the two groups it splits into one level down the
    hierarchy (empty for a single feature)."""

    id: str
    label: str
    members: list[str]
    nodes: list[int]
    layer_span: tuple[int, int]
    positions: list[int]
    influence: float
    cluster: int  # the dendrogram cluster id (leaves 0..n-1 are the grouped features)
    _expand: Callable[[int], list[Supernode]] = field(repr=False, compare=False)

    @property
    def children(self) -> list[Supernode]:
        return self._expand(self.cluster)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "members": self.members,
            "layer_span": list(self.layer_span),
            "positions": self.positions,
            "influence": self.influence,
            "children": [c.id for c in self.children],
        }


@dataclass(frozen=True)
class ReducedEdge:
    """One edge of the reduced circuit: the sum of its members' edges."""

    source: str
    target: str
    weight: float


@dataclass
class Circuit:
    """A graph collapsed to supernodes (see ``find_circuit``)."""

    graph: Graph
    pruned: PruneResult
    grouping: Grouping
    supernodes: list[Supernode]
    group_ids: list[str]  # id of each reduced node: supernodes, errors, tokens, logits
    node_group: torch.Tensor  # [N] reduced node of each graph node
    reduced_edges: torch.Tensor  # R[G, G] float64
    scores: GraphScores
    feature_labels: dict[int, str]  # label of every kept feature, by node index
    _records: dict[int, dict[str, Any] | None] = field(repr=False)
    _tokens: list[str] = field(repr=False)

    @property
    def n_groups(self) -> int:
        return len(self.supernodes)

    def logit_group(self, i: int) -> int:
        """Reduced node of logit target ``i``."""
        return self.n_groups + self.graph.n_errors + self.graph.n_pos + i

    @property
    def edges(self) -> list[ReducedEdge]:
        """The reduced edge table: every non-zero ``R[target, source]``, row-major."""
        r = self.reduced_edges
        t, s = r.nonzero(as_tuple=True)
        return [
            ReducedEdge(self.group_ids[j], self.group_ids[i], float(r[i, j]))
            for i, j in zip(t.tolist(), s.tolist(), strict=True)
        ]

    def supernode_values(self) -> torch.Tensor:
        """``[K]`` (float64): each supernode's summed member activation."""
        acts = self.graph.activation_values.cpu().double()[self.graph.selected_features.cpu()]
        return torch.tensor([float(acts[sn.nodes].sum()) for sn in self.supernodes]).double()

    def cut(self, n_groups: int) -> Circuit:
        """The same hierarchy cut at ``n_groups`` groups."""
        return _assemble(self.graph, self.pruned, self.grouping, n_groups, self._records)

    def validate(self, model: ReplacementModel, logit: int = 0) -> Agreement:
        """Ablate each supernode and compare with the reduced graph (``circuits.check``)."""
        from circuitlab.circuits.check import check_circuit

        return check_circuit(self, model, logit)

    def to_json(self) -> dict[str, Any]:
        """The reduced circuit for the page: supernodes, reduced edges, scores (floats to 6
        significant digits, NaN as ``None``)."""
        from circuitlab.validation.files import json_ready

        ids = node_ids(self.graph)

        return json_ready(
            {
                "n_groups": self.n_groups,
                "default_groups": self.grouping.default_groups,
                "scores": self.scores._asdict(),
                "supernodes": [sn.to_json() for sn in self.supernodes],
                "feature_labels": {ids[i]: lab for i, lab in self.feature_labels.items()},
                "edges": [e.__dict__ for e in self.edges],
                "merge_heights": self.grouping.dendrogram.heights.tolist(),
            }
        )

    def summary(self) -> str:
        """A markdown summary: scores, then each supernode with its label and members."""
        g = self.graph
        lines = [
            f"# Circuit: {g.input_string!r}",
            "",
            f"{self.n_groups} supernodes over {len(self.feature_labels)} features "
            f"(default cut: {self.grouping.default_groups}); reduced graph: replacement "
            f"{self.scores.replacement:.3f}, completeness {self.scores.completeness:.3f}.",
            "",
            "| supernode | label | layers | positions | members |",
            "|---|---|---|---|---|",
        ]
        for sn in self.supernodes:
            pos = ", ".join(f"{p} {self._tokens[p]!r}" for p in sn.positions)
            span = f"{sn.layer_span[0]}-{sn.layer_span[1]}"
            lines.append(f"| {sn.id} | {sn.label} | {span} | {pos} | {' '.join(sn.members)} |")
        return "\n".join(lines) + "\n"


def find_circuit(
    graph: Graph,
    n_groups: int | None = None,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    *,
    model: ReplacementModel | None = None,
    features_dir: str | Path | None = None,
    weights: GroupingWeights | None = None,
) -> Circuit:
    """Prune ``graph``, group its features into supernodes, label them and reduce the graph.

    Args:
        graph: an attribution graph.
        n_groups: supernodes wanted (default: the cut at the height of the position term,
            ``circuits.grouping``); at most the number of kept features.
        node_threshold, edge_threshold: pruning, as ``prune_graph``.
        model: the ``ReplacementModel`` whose transcoders made the graph; its decoder rows add
            decoder-direction similarity to the grouping (left out without it).
        features_dir: the feature dashboards (``circuitlab features build``) the labels come
            from; without it every automatic label says "no dashboard".
        weights: the grouping's term weights (``GroupingWeights``).
    """
    graph = graph.to("cpu")
    pruned = prune_graph(graph, node_threshold=node_threshold, edge_threshold=edge_threshold)
    features = pruned.node_mask[: graph.n_selected].nonzero().flatten()
    decoder = _decoder_rows(model, graph, features) if model is not None else None
    grouping = group_features(graph, pruned, decoder, weights)
    records = _read_records(graph, features, features_dir)
    return _assemble(graph, pruned, grouping, n_groups, records)


def _decoder_rows(model: ReplacementModel, graph: Graph, features: torch.Tensor) -> torch.Tensor:
    """``[n, d_model]``: each feature's decoder row into its own layer."""
    coords = graph.selected_feature_coords[features]
    rows = torch.zeros(len(features), model.transcoders.d_model, dtype=torch.float64)
    for layer in coords[:, 0].unique().tolist():
        sel = (coords[:, 0] == layer).nonzero().flatten()
        idx = coords[sel, 2]
        rows[sel] = model.transcoders.decoder_rows(layer, idx)[:, 0].detach().double().cpu()
    return rows


def _read_records(
    graph: Graph, features: torch.Tensor, features_dir: str | Path | None
) -> dict[int, dict[str, Any] | None]:
    store = FeatureStore.open(features_dir) if features_dir is not None else None
    if features_dir is not None and store is None:
        raise FileNotFoundError(
            f"no feature dashboards in {features_dir} (no index.json.gz there or in "
            "features/): build them with `circuitlab features build`"
        )
    coords = graph.selected_feature_coords.tolist()
    out: dict[int, dict[str, Any] | None] = dict.fromkeys(features.tolist())
    if store is None:
        return out
    by_layer: dict[int, list[int]] = {}
    for i in features.tolist():
        by_layer.setdefault(coords[i][0], []).append(i)
    for layer, nodes in by_layer.items():
        entry = store.index.get(str(layer))
        if not entry:
            continue
        path = (store.root / entry["filename"]).resolve()
        if not path.is_relative_to(store.root.resolve()):
            raise ValueError(f"feature index names a file outside {store.root}: {path}")
        offsets = entry["offsets"]
        with open(path, "rb") as f:  # one open per layer, not per feature
            for i in nodes:
                feat = coords[i][2]
                if not 0 <= feat < len(offsets) - 1 or offsets[feat + 1] <= offsets[feat]:
                    continue
                f.seek(offsets[feat])
                out[i] = decode_feature_record(f.read(offsets[feat + 1] - offsets[feat]))
    return out


def _assemble(
    graph: Graph,
    pruned: PruneResult,
    grouping: Grouping,
    n_groups: int | None,
    records: dict[int, dict[str, Any] | None],
) -> Circuit:
    n = int(grouping.features.numel())
    if n_groups is not None and not 1 <= n_groups <= max(n, 1):
        raise ValueError(
            f"n_groups must be between 1 and {n} (the pruned graph's features), got {n_groups}"
        )
    labels = torch.from_numpy(grouping.cut(n_groups)) if n else torch.zeros(0, dtype=torch.long)
    group = node_groups(graph, grouping.features, labels)
    kept_rows = torch.zeros(graph.n_nodes, dtype=torch.bool)
    kept_rows[grouping.features] = True
    kept_rows[graph.logit_offset :] = True
    r = reduced_edges(graph, group, kept_rows)
    k = int(labels.max()) + 1 if n else 0
    n_groups_all = r.shape[0]
    is_error = torch.zeros(n_groups_all, dtype=torch.bool)
    is_error[k : k + graph.n_errors] = True
    is_token = torch.zeros(n_groups_all, dtype=torch.bool)
    is_token[k + graph.n_errors : k + graph.n_errors + graph.n_pos] = True
    w = torch.zeros(n_groups_all, dtype=torch.float64)
    w[k + graph.n_errors + graph.n_pos :] = graph.logit_probabilities.double()
    scores, _ = reduced_scores(r, w, is_error, is_token)

    ids = node_ids(graph)
    tokens = decode_tokens(graph)
    influence = grouping.node_influence.numpy()
    coords = graph.selected_feature_coords.tolist()
    user = graph.feature_labels or {}
    feature_labels = {
        i: feature_label(records[i], coords[i][0], coords[i][2], user.get(i))
        for i in grouping.features.tolist()
    }
    leaf_nodes = grouping.features.tolist()
    cache: dict[int, Supernode] = {}

    def make(cluster: int, name: str) -> Supernode:
        leaves = grouping.dendrogram.leaves(cluster) if n else []
        nodes = [leaf_nodes[j] for j in leaves]
        layers = [coords[i][0] for i in nodes]
        positions = sorted({coords[i][1] for i in nodes})
        if len(nodes) == 1:
            label = feature_labels[nodes[0]]
        else:
            shown = ", ".join(repr(tokens[p].strip() or tokens[p]) for p in positions[:2])
            more = ", ..." if len(positions) > 2 else ""
            where = f"{len(nodes)} features, L{min(layers)}-{max(layers)} @ {shown}{more}"
            label = supernode_label(
                [records[i] for i in nodes], [float(influence[i]) for i in nodes], where
            )
        return Supernode(
            name,
            label,
            [ids[i] for i in nodes],
            nodes,
            (min(layers), max(layers)),
            positions,
            float(sum(influence[i] for i in nodes)),
            cluster,
            expand,
        )

    def expand(cluster: int) -> list[Supernode]:
        kids = grouping.dendrogram.children(cluster) if n else None
        if kids is None:
            return []
        out = []
        for c in kids:
            if c not in cache:
                cache[c] = make(c, f"c{c}")
            out.append(cache[c])
        return out

    supernodes = [make(c, f"sn{j}") for j, c in enumerate(_cut_clusters(grouping, labels))]
    group_ids = [sn.id for sn in supernodes] + ids[graph.error_offset :]
    return Circuit(
        graph,
        pruned,
        grouping,
        supernodes,
        group_ids,
        group,
        r,
        scores,
        feature_labels,
        records,
        tokens,
    )


def _cut_clusters(grouping: Grouping, labels: torch.Tensor) -> list[int]:
    """The dendrogram cluster id of each group of the cut ``labels`` (group order)."""
    d = grouping.dendrogram
    if not d.n_leaves:
        return []
    n_groups = int(labels.max()) + 1
    top = set(range(d.n_leaves))
    for i in range(d.n_leaves - n_groups):
        a, b = (int(x) for x in d.merges[i])
        top -= {a, b}
        top.add(d.n_leaves + i)
    by_group = {int(labels[d.leaves(c)[0]]): c for c in top}
    return [by_group[g] for g in range(n_groups)]
