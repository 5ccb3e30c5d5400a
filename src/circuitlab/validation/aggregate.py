"""Aggregating a set of graphs: what recurs, and which prompts go together.

Each graph is pruned and keyed as in ``validation.compare`` (one transcoder basis for all).

* **Recurring features and edges**: for each key, ``count`` = the number of graphs whose
  circuit holds it, ``influence`` = the sum of its shares over those graphs (each graph's shares
  sum to 1, so ``influence / n_graphs`` is its mean share). Ranked by count, then influence.
* **Similarity**: ``similarity[i, j]`` = node overlap (weighted Jaccard) of graphs ``i``, ``j``.
* **Clusters**: average-linkage agglomerative clustering on that matrix. Starting from one
  cluster per graph, the two clusters with the highest mean pairwise similarity merge while it is
  at least ``cluster_threshold``; ties go to the pair with the smallest member indices, so the
  result is deterministic. Clusters are listed by their smallest member.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from circuitlab.graph.graph import Graph
from circuitlab.validation.circuit import Circuit, circuit_of
from circuitlab.validation.compare import SCHEMA_VERSION, weighted_jaccard
from circuitlab.validation.files import save_json


@dataclass(frozen=True)
class Recurring:
    """A feature key (``target`` is ``None``) or an edge key seen in ``count`` graphs."""

    key: str
    count: int
    influence: float
    graphs: list[int]
    target: str | None = None


@dataclass
class Aggregate:
    """Recurring features and edges of a set of graphs, their similarity and clusters.

    ``similarity[n_graphs, n_graphs]`` (float64) is the pairwise node overlap; ``clusters``
    lists graph indices.
    """

    graphs: list[dict[str, str]]
    features: list[Recurring]
    edges: list[Recurring]
    similarity: torch.Tensor
    clusters: list[list[int]]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The aggregate file's dict (schema ``circuitlab.aggregate`` in ``docs/validation.md``)."""
        return {
            "kind": "circuitlab.aggregate",
            "schema_version": SCHEMA_VERSION,
            "graphs": self.graphs,
            "settings": dict(self.settings),
            "similarity": self.similarity.tolist(),
            "clusters": self.clusters,
            "features": [
                {k: v for k, v in asdict(r).items() if k != "target"} for r in self.features
            ],
            "edges": [
                {
                    "source": r.key,
                    "target": r.target,
                    "count": r.count,
                    "influence": r.influence,
                    "graphs": r.graphs,
                }
                for r in self.edges
            ],  # fmt: skip
        }

    def save(self, path: str | Path) -> Path:
        """Write ``to_json()`` atomically; returns the path."""
        return save_json(path, self.to_json())

    def summary(self, top: int = 10) -> str:
        """Clusters and the most recurrent features, as text."""
        names = [g["slug"] for g in self.graphs]
        lines = [f"{len(self.graphs)} graphs, {len(self.clusters)} cluster(s):"]
        lines += ["  " + ", ".join(names[i] for i in c) for c in self.clusters]
        lines.append("recurring features (count, summed share):")
        lines += [f"  {r.key}: {r.count}, {r.influence:.3f}" for r in self.features[:top]]
        return "\n".join(lines)


def aggregate_graphs(
    graphs: Sequence[Graph],
    *,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    position_aware: bool = False,
    cluster_threshold: float = 0.5,
    slugs: Sequence[str] | None = None,
) -> Aggregate:
    """Recurring features and edges, pairwise similarity and clusters (see the module docs)."""
    if slugs is not None and len(slugs) != len(graphs):
        raise ValueError(f"got {len(slugs)} slugs for {len(graphs)} graphs; give one per graph")
    names = list(slugs) if slugs is not None else [f"g{i}" for i in range(len(graphs))]
    circuits = [
        circuit_of(g, node_threshold, edge_threshold, position_aware=position_aware) for g in graphs
    ]
    similarity = similarity_matrix(circuits)
    return Aggregate(
        graphs=[{"slug": s, "prompt": g.input_string} for s, g in zip(names, graphs, strict=True)],
        features=rank_recurring([c.node_weight for c in circuits]),
        edges=rank_recurring([c.edge_weight for c in circuits]),
        similarity=similarity,
        clusters=cluster(similarity, cluster_threshold),
        settings={
            "node_threshold": node_threshold,
            "edge_threshold": edge_threshold,
            "position_aware": position_aware,
            "cluster_threshold": cluster_threshold,
        },
    )


def similarity_matrix(circuits: Sequence[Circuit]) -> torch.Tensor:
    """``[n, n]`` float64 node overlap of every pair (1 on the diagonal)."""
    n = len(circuits)
    sim = torch.eye(n, dtype=torch.float64)
    for i in range(n):
        for j in range(i + 1, n):
            sim[i, j] = sim[j, i] = weighted_jaccard(
                circuits[i].node_weight, circuits[j].node_weight
            )
    return sim


def rank_recurring(weights: Sequence[dict[Any, float]]) -> list[Recurring]:
    """Keys of per-graph weight dicts ranked by count, then summed weight, then key."""
    seen: dict[Any, tuple[list[int], float]] = {}
    for i, w in enumerate(weights):
        for key, value in w.items():
            members, total = seen.get(key, ([], 0.0))
            seen[key] = ([*members, i], total + value)
    items = [
        Recurring(key[0], len(g), s, g, key[1]) if isinstance(key, tuple)
        else Recurring(str(key), len(g), s, g)
        for key, (g, s) in seen.items()
    ]  # fmt: skip
    return sorted(items, key=lambda r: (-r.count, -r.influence, r.key, r.target or ""))


def cluster(similarity: torch.Tensor, threshold: float) -> list[list[int]]:
    """Average-linkage clusters of ``similarity[n, n]`` merged while mean similarity >= threshold."""
    clusters = [[i] for i in range(similarity.shape[0])]
    sim = similarity.double()
    while len(clusters) > 1:
        best: tuple[float, int, int] | None = None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                mean = float(sim[clusters[a]][:, clusters[b]].mean())
                if best is None or mean > best[0]:  # strict: ties keep the earlier pair
                    best = (mean, a, b)
        assert best is not None
        mean, a, b = best
        if mean < threshold:
            break
        clusters[a] = sorted(clusters[a] + clusters[b])
        del clusters[b]
    return sorted(clusters, key=lambda c: c[0])
