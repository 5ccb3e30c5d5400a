"""Validating and comparing circuits: faithfulness curves, graph diffs, aggregation over prompts.

* ``faithfulness(model, graph, thresholds)``: necessity and sufficiency curves of the target
  logit and probability over pruning thresholds, with replacement and completeness scores, also
  for a pinned subgraph (``validation.faithfulness``); ``plot_faithfulness`` draws them.
* ``compare_graphs(a, b)``: influence-weighted node and edge overlap, spectral distance and the
  shared / only-A / only-B nodes, with decoder-cosine alignment across transcoder bases.
* ``aggregate_graphs(graphs)``: recurring features and edges ranked, prompts clustered.

Definitions are in ``docs/validation.md``.
"""

from circuitlab.validation.aggregate import Aggregate, Recurring, aggregate_graphs, cluster
from circuitlab.validation.align import FeatureMatch, align_features
from circuitlab.validation.circuit import Circuit, circuit_of
from circuitlab.validation.compare import (
    EdgeDiff,
    GraphDiff,
    NodeDiff,
    compare_graphs,
    diff_file_name,
    weighted_jaccard,
)
from circuitlab.validation.faithfulness import (
    CircuitPoint,
    Faithfulness,
    Measurement,
    faithfulness,
    pinned_mask,
)
from circuitlab.validation.plots import plot_faithfulness
from circuitlab.validation.spectral import laplacian_spectrum, spectral_distance

__all__ = [
    "Aggregate",
    "Circuit",
    "CircuitPoint",
    "EdgeDiff",
    "Faithfulness",
    "FeatureMatch",
    "GraphDiff",
    "Measurement",
    "NodeDiff",
    "Recurring",
    "aggregate_graphs",
    "align_features",
    "circuit_of",
    "cluster",
    "compare_graphs",
    "diff_file_name",
    "faithfulness",
    "laplacian_spectrum",
    "pinned_mask",
    "plot_faithfulness",
    "spectral_distance",
    "weighted_jaccard",
]
