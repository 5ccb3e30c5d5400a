"""circuitlab: exact attribution graphs over transcoders, interventions and a local web lab.

The public API is re-exported here; everything else is internal to its subpackage.
"""

from typing import Any

from ._version import __version__ as __version__
from .attention import (
    HeadLoadings,
    QKAttribution,
    QKPair,
    head_loadings,
    path_head_loadings,
    qk_attribution,
    qk_sweep,
)
from .attribution import CustomTarget, LogitDiff, attribute
from .circuits import Circuit, Supernode, find_circuit
from .circuits.suggestions import suggestions_block as _suggestions_block
from .graph import (
    Graph,
    LogitTarget,
    compute_graph_scores,
    import_circuit_tracer_pt,
    load_graph,
    prune_graph,
)
from .graph.export import set_suggestions_builder as _set_suggestions_builder
from .graph.graph import set_viewer as _set_viewer
from .interventions import feature_intervention as _intervene
from .interventions import feature_intervention_generate as _generate
from .models.adapters import supported_model_types
from .replacement import Activations, InterventionFunctions, ReplacementModel, install_interventions
from .transcoders import (
    CrossLayerTranscoder,
    SingleLayerTranscoder,
    Transcoders,
    TranscoderSet,
    load_transcoders,
)
from .validation import (
    Faithfulness,
    GraphDiff,
    aggregate_graphs,
    compare_graphs,
    faithfulness,
    plot_faithfulness,
)


def _show_in_lab(graph: Graph, slug: str | None = None, **kwargs: Any) -> Any:
    """``Graph.show``'s viewer: the web lab (imported on first use: FastAPI stays unloaded)."""
    from .server.notebook import show

    return show(graph, slug, **kwargs)


# Lower layers never import higher ones (docs/architecture.md); the root wires the few calls
# that go upward: Graph.show opens the web lab, and ReplacementModel's circuit-tracer-style
# methods run circuitlab.interventions; graph files' circuit suggestions come from circuits/.
_set_viewer(_show_in_lab)
_set_suggestions_builder(_suggestions_block)
install_interventions(InterventionFunctions(_intervene, _generate))

__all__ = [
    "Activations",
    "Circuit",
    "CrossLayerTranscoder",
    "CustomTarget",
    "Faithfulness",
    "Graph",
    "GraphDiff",
    "HeadLoadings",
    "LogitDiff",
    "LogitTarget",
    "QKAttribution",
    "QKPair",
    "ReplacementModel",
    "SingleLayerTranscoder",
    "Supernode",
    "TranscoderSet",
    "Transcoders",
    "aggregate_graphs",
    "attribute",
    "compare_graphs",
    "compute_graph_scores",
    "faithfulness",
    "find_circuit",
    "head_loadings",
    "import_circuit_tracer_pt",
    "load_graph",
    "load_transcoders",
    "path_head_loadings",
    "plot_faithfulness",
    "prune_graph",
    "qk_attribution",
    "qk_sweep",
    "supported_model_types",
]
