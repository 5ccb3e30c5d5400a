"""A circuit's hierarchy as editable suggestions for the lab page (``circuit_suggestions``).

``suggestions_json(circuit)`` is what ``create_graph_files(..., suggestions=True)`` adds to a
graph file under the top-level key ``circuit_suggestions`` (Neuronpedia's graph schema allows
extra keys; circuit-tracer's page ignores them). The page cuts the dendrogram itself, so one
file serves every number of groups:

* ``features[n]``: the lab node id of each leaf (leaf ``i`` is cluster ``i``);
* ``merges[n - 1]``: ``[a, b]`` cluster ids merged at step ``i`` into cluster ``n + i``
  (scipy's linkage layout, ``circuits.hierarchy``); ``heights[n - 1]``: their mean distance;
* ``default_groups``: the default cut (``circuits.grouping``); ``max_groups``: the slider's
  top (``MAX_GROUPS`` or the number of features, whichever is smaller);
* ``labels``: ``{cluster id: label}`` for every leaf and every cluster of a cut with at most
  ``max_groups`` groups (and those clusters' children), all marked automatic (``auto: ``).
  Deeper clusters, reached by expanding further, are named by the page from their size, layers
  and positions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from circuitlab.circuits.circuit import Circuit, find_circuit
from circuitlab.graph.export import node_ids
from circuitlab.graph.graph import Graph

SUGGESTIONS_VERSION = 1
MAX_GROUPS = 64


def suggestions_json(circuit: Circuit, max_groups: int = MAX_GROUPS) -> dict[str, Any]:
    """The ``circuit_suggestions`` block of a graph file (module docs)."""
    if max_groups < 1:
        raise ValueError(f"max_groups must be at least 1, got {max_groups}")
    d = circuit.grouping.dendrogram
    n = d.n_leaves
    features = circuit.grouping.features.tolist()
    all_ids = node_ids(circuit.graph)
    top = min(max_groups, n)
    labels = {str(leaf): circuit.feature_labels[node] for leaf, node in enumerate(features)}
    if n:
        # The clusters of the cuts with up to `top` groups are those the last `top - 1` merges
        # made (ids 2n - top .. 2n - 2) and their children: walk down from the single group.
        frontier = list(circuit.cut(1).supernodes)
        while frontier:
            sn = frontier.pop()
            labels[str(sn.cluster)] = sn.label
            if sn.cluster >= 2 * n - top:
                frontier.extend(sn.children)
    return {
        "version": SUGGESTIONS_VERSION,
        "features": [all_ids[i] for i in features],
        "merges": d.merges.tolist(),
        "heights": [round(float(h), 6) for h in d.heights.tolist()],
        "default_groups": int(circuit.grouping.default_groups),
        "max_groups": top,
        "labels": labels,
    }


def suggestions_block(
    graph: Graph,
    circuit: bool | Any,
    node_threshold: float,
    edge_threshold: float,
    features_dir: str | Path | None,
) -> dict[str, Any]:
    """``create_graph_files``' ``circuit_suggestions`` block for ``graph``: ``circuit``'s (a
    ``Circuit`` of this graph), or with ``True`` ``find_circuit``'s at these thresholds.
    Installed into ``graph.export`` by ``import circuitlab`` (``set_suggestions_builder``)."""
    if circuit is True:
        circuit = find_circuit(
            graph, node_threshold=node_threshold, edge_threshold=edge_threshold,
            features_dir=features_dir,
        )  # fmt: skip
    elif not isinstance(circuit, Circuit):
        raise ValueError(
            f"suggestions= takes True or a Circuit (find_circuit(graph, ...)); got {circuit!r}"
        )
    elif circuit.graph.n_nodes != graph.n_nodes or not torch.equal(
        circuit.graph.input_tokens.cpu(), graph.input_tokens.cpu()
    ):
        raise ValueError(
            "suggestions= was given a Circuit of another graph: pass find_circuit(graph, ...) "
            "of the graph being written, or suggestions=True"
        )
    return suggestions_json(circuit)
