"""From graph to circuit: automatic supernodes, labels, the reduced graph and its check.

``find_circuit(graph)`` prunes a graph, groups its features into a hierarchy of supernodes
(``grouping``, ``hierarchy``), labels every feature and supernode from the dashboards
(``labels``), collapses the graph to the supernodes with exactly summed edges and scores it
(``reduce``); ``Circuit.validate(model)`` checks it by ablation (``check``). See
``docs/circuits.md``.
"""

from circuitlab.circuits.check import Agreement, SupernodeEffect, check_circuit
from circuitlab.circuits.circuit import Circuit, ReducedEdge, Supernode, find_circuit
from circuitlab.circuits.grouping import Grouping, GroupingWeights, group_features
from circuitlab.circuits.hierarchy import Dendrogram, average_linkage
from circuitlab.circuits.labels import AUTO_PREFIX, feature_label, is_automatic, supernode_label

__all__ = [
    "AUTO_PREFIX",
    "Agreement",
    "Circuit",
    "Dendrogram",
    "Grouping",
    "GroupingWeights",
    "ReducedEdge",
    "Supernode",
    "SupernodeEffect",
    "average_linkage",
    "check_circuit",
    "feature_label",
    "find_circuit",
    "group_features",
    "is_automatic",
    "supernode_label",
]
