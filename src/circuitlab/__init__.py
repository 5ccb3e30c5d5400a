"""circuitlab: exact attribution graphs over transcoders, interventions and a local web lab.

The public API is re-exported here; everything else is internal to its subpackage.
"""

from .attribution import CustomTarget, LogitDiff, attribute
from .graph import (
    Graph,
    LogitTarget,
    compute_graph_scores,
    import_circuit_tracer_pt,
    load_graph,
    prune_graph,
)
from .models.adapters import supported_model_types
from .replacement import Activations, ReplacementModel
from .transcoders import (
    CrossLayerTranscoder,
    SingleLayerTranscoder,
    Transcoders,
    TranscoderSet,
    load_transcoders,
)

__version__ = "0.1.0"

__all__ = [
    "Activations",
    "CrossLayerTranscoder",
    "CustomTarget",
    "Graph",
    "LogitDiff",
    "LogitTarget",
    "ReplacementModel",
    "SingleLayerTranscoder",
    "TranscoderSet",
    "Transcoders",
    "attribute",
    "compute_graph_scores",
    "import_circuit_tracer_pt",
    "load_graph",
    "load_transcoders",
    "prune_graph",
    "supported_model_types",
]
