"""Interventions: test what a circuit claims.

Set, scale or ablate transcoder features and error nodes (``feature_intervention``), generate
with interventions in force (``feature_intervention_generate``), address nodes and supernodes by
the ids the graph UI uses (``node_interventions``), and check circuits by ablation
(``ablate_nodes``, ``ablate_outside``; zero ablation, or mean ablation with reference means from
``ablation_means``). See ``docs/interventions.md`` and ``docs/validation.md``.
"""

from ..replacement import GenerationResult, InterventionResult
from .checks import CircuitCheck, TokenShift, ablate_nodes, ablate_outside, check_interventions
from .generate import feature_intervention_generate
from .intervene import feature_intervention
from .means import AblationMeans, ablation_means, mean_ablations
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
    "AblationMeans",
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
    "ablation_means",
    "check_interventions",
    "feature_intervention",
    "feature_intervention_generate",
    "mean_ablations",
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
