"""Comparing two attribution graphs: shared and distinct nodes and edges, overlap, distance.

Both graphs are pruned (``node_threshold``, ``edge_threshold``; the lab's defaults) and seen
as keyed, weighted circuits (``validation.circuit``). Then:

* **node overlap** = weighted Jaccard of the feature weights,
  ``Σ_k min(a_k, b_k) / Σ_k max(a_k, b_k)`` over the union of keys, where ``a_k`` is key ``k``'s
  share of graph A's feature influence (0 if absent). 1 when both circuits hold the same
  features with the same shares, 0 when they share none; 1 when both are empty.
* **edge overlap**: the same on edge keys ``(source key, target key)`` and edge-score shares.
* **spectral distance** of the pruned adjacencies (``validation.spectral``).

Keys are position-independent by default (``{layer}_{feature}``): right for two different
prompts, whose positions do not correspond. ``position_aware=True`` keys by node id: right for
one prompt traced on two models or checkpoints.

When the graphs come from different transcoder bases (``transcoder_name``, or ``model_name``
when a graph names no transcoders, differ), feature indices cannot be compared: pass both
transcoders and B's features are renamed to the A features they match by decoder cosine
(``validation.align``) before keying (unmatched B features are keyed ``{layer}_b{feature}``),
or pass ``align=False`` to compare indices anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from circuitlab.graph.graph import Graph
from circuitlab.transcoders.base import Transcoders
from circuitlab.validation.align import FeatureMatch, align_features
from circuitlab.validation.circuit import Circuit, EdgeKey, circuit_of
from circuitlab.validation.files import save_json
from circuitlab.validation.spectral import spectral_distance

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class NodeDiff:
    """One feature key: the node ids behind it in A and B, and its weight (share) in each."""

    key: str
    a: list[str]
    b: list[str]
    weight_a: float
    weight_b: float
    cosine: float | None = None


@dataclass(frozen=True)
class EdgeDiff:
    """One edge key ``(source, target)``: ``[source_id, target_id]`` pairs in A and B."""

    source: str
    target: str
    a: list[tuple[str, str]]
    b: list[tuple[str, str]]
    weight_a: float
    weight_b: float


@dataclass(frozen=True)
class GraphInfo:
    """What identifies a compared graph in the diff file."""

    slug: str
    prompt: str
    model_name: str
    transcoder_name: str | None
    n_layers: int

    @classmethod
    def of(cls, graph: Graph, slug: str) -> GraphInfo:
        return cls(
            slug, graph.input_string, graph.model_name, graph.transcoder_name, graph.n_layers
        )


@dataclass
class GraphDiff:
    """The comparison of graphs A and B (see the module docs and ``docs/validation.md``).

    ``shared`` / ``only_a`` / ``only_b`` are feature nodes by key, ``edges_*`` the same for
    edges; lists are sorted by ``max(weight_a, weight_b)``, largest first.
    """

    a: GraphInfo
    b: GraphInfo
    node_overlap: float
    edge_overlap: float
    spectral_distance: float
    shared: list[NodeDiff]
    only_a: list[NodeDiff]
    only_b: list[NodeDiff]
    edges_shared: list[EdgeDiff]
    edges_only_a: list[EdgeDiff]
    edges_only_b: list[EdgeDiff]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The diff file's dict (schema ``circuitlab.diff`` in ``docs/validation.md``)."""

        def edges(items: list[EdgeDiff]) -> list[dict[str, Any]]:
            return [
                {**asdict(e), "a": [list(p) for p in e.a], "b": [list(p) for p in e.b]}
                for e in items
            ]

        return {
            "kind": "circuitlab.diff",
            "schema_version": SCHEMA_VERSION,
            "a": asdict(self.a),
            "b": asdict(self.b),
            "settings": dict(self.settings),
            "node_overlap": self.node_overlap,
            "edge_overlap": self.edge_overlap,
            "spectral_distance": self.spectral_distance,
            "nodes": {
                "shared": [asdict(n) for n in self.shared],
                "only_a": [asdict(n) for n in self.only_a],
                "only_b": [asdict(n) for n in self.only_b],
            },
            "edges": {
                "shared": edges(self.edges_shared),
                "only_a": edges(self.edges_only_a),
                "only_b": edges(self.edges_only_b),
            },
        }

    def save(self, path: str | Path) -> Path:
        """Write ``to_json()`` atomically; returns the path."""
        return save_json(path, self.to_json())

    def file_name(self) -> str:
        """``{slugA}__vs__{slugB}.diff.json``: the name the lab looks for."""
        return diff_file_name(self.a.slug, self.b.slug)

    def summary(self, top: int = 10) -> str:
        """A plain-text summary: scores, counts and the heaviest shared and distinct features."""
        lines = [
            f"A: {self.a.slug} {self.a.prompt!r}",
            f"B: {self.b.slug} {self.b.prompt!r}",
            f"node overlap {self.node_overlap:.3f}, edge overlap {self.edge_overlap:.3f}, "
            f"spectral distance {self.spectral_distance:.3f}",
            f"features: {len(self.shared)} shared, {len(self.only_a)} only in A, "
            f"{len(self.only_b)} only in B",
        ]
        for name, items in (
            ("shared", self.shared),
            ("only A", self.only_a),
            ("only B", self.only_b),
        ):
            if items:
                heads = ", ".join(
                    f"{n.key} ({n.weight_a:.3f}/{n.weight_b:.3f})" for n in items[:top]
                )
                lines.append(f"  {name}: {heads}")
        return "\n".join(lines)


def diff_file_name(slug_a: str, slug_b: str) -> str:
    """``{slug_a}__vs__{slug_b}.diff.json``."""
    return f"{slug_a}__vs__{slug_b}.diff.json"


def weighted_jaccard(a: Mapping[Any, float], b: Mapping[Any, float]) -> float:
    """``Σ min(a_k, b_k) / Σ max(a_k, b_k)`` over the union of keys (absent = 0); 1 if both empty."""
    keys = set(a) | set(b)
    high = sum(max(a.get(k, 0.0), b.get(k, 0.0)) for k in keys)
    if high <= 0:
        return 1.0
    return sum(min(a.get(k, 0.0), b.get(k, 0.0)) for k in keys) / high


def same_basis(a: Graph, b: Graph) -> bool:
    """Whether feature indices of ``a`` and ``b`` name the same features (same transcoders)."""
    if a.transcoder_name and b.transcoder_name:
        return a.transcoder_name == b.transcoder_name
    return a.model_name == b.model_name


def compare_graphs(
    a: Graph,
    b: Graph,
    *,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    position_aware: bool = False,
    transcoders_a: Transcoders | None = None,
    transcoders_b: Transcoders | None = None,
    align: bool | None = None,
    align_threshold: float = 0.7,
    slug_a: str = "a",
    slug_b: str = "b",
) -> GraphDiff:
    """Compare graphs ``a`` and ``b`` (see the module docs).

    ``align``: ``None`` aligns by decoder cosine exactly when the bases differ (then both
    transcoders are required); ``True`` always aligns; ``False`` never does.

    Raises:
        ValueError: when the bases differ and alignment is needed but transcoders are missing.
    """
    need_align = (not same_basis(a, b)) if align is None else align
    circ_a = circuit_of(a, node_threshold, edge_threshold, position_aware=position_aware)
    matches: list[FeatureMatch] = []
    if need_align:
        if transcoders_a is None or transcoders_b is None:
            name_a, name_b = a.transcoder_name or a.model_name, b.transcoder_name or b.model_name
            raise ValueError(
                f"graphs A ({name_a}) and B ({name_b}) use different transcoder bases: pass "
                "transcoders_a and "
                "transcoders_b to align features by decoder cosine, or align=False to compare "
                "feature indices as they are"
            )
        circ_b0 = circuit_of(b, node_threshold, edge_threshold)
        matches = align_features(
            _features(a, circ_a), _features(b, circ_b0), transcoders_a, transcoders_b,
            align_threshold,
        )  # fmt: skip
    feature_map = {(m.layer, m.feature_b): m.feature_a for m in matches} if need_align else None
    circ_b = circuit_of(
        b, node_threshold, edge_threshold, position_aware=position_aware, feature_map=feature_map
    )
    cosines = _cosine_by_key(matches, circ_b)
    shared, only_a, only_b = _split_nodes(circ_a, circ_b, cosines)
    e_shared, e_only_a, e_only_b = _split_edges(circ_a, circ_b)
    return GraphDiff(
        a=GraphInfo.of(a, slug_a),
        b=GraphInfo.of(b, slug_b),
        node_overlap=weighted_jaccard(circ_a.node_weight, circ_b.node_weight),
        edge_overlap=weighted_jaccard(circ_a.edge_weight, circ_b.edge_weight),
        spectral_distance=spectral_distance(circ_a.adjacency, circ_b.adjacency),
        shared=shared,
        only_a=only_a,
        only_b=only_b,
        edges_shared=e_shared,
        edges_only_a=e_only_a,
        edges_only_b=e_only_b,
        settings={
            "node_threshold": node_threshold,
            "edge_threshold": edge_threshold,
            "position_aware": position_aware,
            "aligned": bool(need_align),
            "align_threshold": align_threshold,
        },
    )


def _features(graph: Graph, circuit: Circuit) -> list[tuple[int, int]]:
    """(layer, feature) of the circuit's kept feature nodes."""
    coords = graph.selected_feature_coords.cpu()
    kept = circuit.node_mask[: graph.n_selected].nonzero().flatten()
    return [(layer, feat) for layer, _pos, feat in coords[kept].tolist()]


def _cosine_by_key(matches: list[FeatureMatch], circuit_b: Circuit) -> dict[str, float]:
    """Cosine of the match behind each (renamed) B feature key."""
    by_feature = {(m.layer, m.feature_a): m.cosine for m in matches}
    out: dict[str, float] = {}
    for key in circuit_b.node_weight:
        layer, feat = key.split("_")[:2]
        if feat.isdigit() and (int(layer), int(feat)) in by_feature:
            out[key] = by_feature[(int(layer), int(feat))]
    return out


def _by_weight(item: NodeDiff | EdgeDiff) -> tuple[float, str]:
    name = item.key if isinstance(item, NodeDiff) else f"{item.source}>{item.target}"
    return (-max(item.weight_a, item.weight_b), name)


def _split_nodes(
    ca: Circuit, cb: Circuit, cosines: dict[str, float]
) -> tuple[list[NodeDiff], list[NodeDiff], list[NodeDiff]]:
    shared: list[NodeDiff] = []
    only_a: list[NodeDiff] = []
    only_b: list[NodeDiff] = []
    for key in set(ca.node_weight) | set(cb.node_weight):
        item = NodeDiff(
            key,
            ca.node_members.get(key, []),
            cb.node_members.get(key, []),
            ca.node_weight.get(key, 0.0),
            cb.node_weight.get(key, 0.0),
            cosines.get(key),
        )
        (shared if item.a and item.b else only_a if item.a else only_b).append(item)
    return (
        sorted(shared, key=_by_weight),
        sorted(only_a, key=_by_weight),
        sorted(only_b, key=_by_weight),
    )


def _split_edges(ca: Circuit, cb: Circuit) -> tuple[list[EdgeDiff], list[EdgeDiff], list[EdgeDiff]]:
    shared: list[EdgeDiff] = []
    only_a: list[EdgeDiff] = []
    only_b: list[EdgeDiff] = []
    keys: set[EdgeKey] = set(ca.edge_weight) | set(cb.edge_weight)
    for key in keys:
        item = EdgeDiff(
            key[0],
            key[1],
            ca.edge_members.get(key, []),
            cb.edge_members.get(key, []),
            ca.edge_weight.get(key, 0.0),
            cb.edge_weight.get(key, 0.0),
        )
        (shared if item.a and item.b else only_a if item.a else only_b).append(item)
    return (
        sorted(shared, key=_by_weight),
        sorted(only_a, key=_by_weight),
        sorted(only_b, key=_by_weight),
    )
