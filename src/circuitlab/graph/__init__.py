"""Attribution graphs: the ``Graph`` object, safe storage, influence, pruning and scores."""

from circuitlab.graph.ct_import import import_circuit_tracer_pt
from circuitlab.graph.edges import EdgeBlock, EdgeBlocks
from circuitlab.graph.graph import Graph, NodeKind
from circuitlab.graph.influence import compute_influence, edge_influence, normalize_rows
from circuitlab.graph.pruning import PruneResult, cumulative_scores, find_threshold, prune_graph
from circuitlab.graph.scores import GraphScores, compute_graph_scores, compute_subgraph_scores
from circuitlab.graph.storage import load_graph, save_graph
from circuitlab.graph.targets import LogitTarget

__all__ = [
    "EdgeBlock",
    "EdgeBlocks",
    "Graph",
    "GraphScores",
    "LogitTarget",
    "NodeKind",
    "PruneResult",
    "compute_graph_scores",
    "compute_influence",
    "compute_subgraph_scores",
    "cumulative_scores",
    "edge_influence",
    "find_threshold",
    "import_circuit_tracer_pt",
    "load_graph",
    "normalize_rows",
    "prune_graph",
    "save_graph",
]
