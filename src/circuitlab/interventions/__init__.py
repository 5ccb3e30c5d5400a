"""Interventions: test what a circuit claims.

Set, scale or ablate transcoder features and error nodes (``feature_intervention``), generate
with interventions in force (``feature_intervention_generate``), address nodes and supernodes by
the ids the graph UI uses (``node_interventions``), and check circuits by ablation
(``ablate_nodes``, ``ablate_outside``). See ``docs/interventions.md``.
"""

from .checks import CircuitCheck, TokenShift, ablate_nodes, ablate_outside, check_interventions
from .generate import GenerationResult, feature_intervention_generate
from .intervene import InterventionResult, feature_intervention
from .nodes import (
    NodeRef,
    node_interventions,
    parse_node_id,
    read_qparams,
    resolve_node,
    supernode_members,
)
from .spec import (
    Intervention,
    ablate_error,
    ablate_feature,
    scale_error,
    scale_feature,
    set_error,
    set_feature,
)

__all__ = [
    "CircuitCheck",
    "GenerationResult",
    "Intervention",
    "InterventionResult",
    "NodeRef",
    "TokenShift",
    "ablate_error",
    "ablate_feature",
    "ablate_nodes",
    "ablate_outside",
    "check_interventions",
    "feature_intervention",
    "feature_intervention_generate",
    "node_interventions",
    "parse_node_id",
    "read_qparams",
    "resolve_node",
    "scale_error",
    "scale_feature",
    "set_error",
    "set_feature",
    "supernode_members",
]
