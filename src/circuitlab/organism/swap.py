"""The state swap: replace one state's features by another's at the city token.

The paper's test of the two-hop circuit: suppress the Texas features at "Dallas" and write
California's in their place; if the answer comes from the state representation, it becomes
Sacramento. ``state_swap`` builds those interventions from the ground-truth state features
(``ground_truth.state_features``, site ``city``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..interventions import set_feature
from .ground_truth import StateFeature

if TYPE_CHECKING:
    from ..interventions.spec import Intervention


def state_swap(
    features: Sequence[StateFeature],
    position: int,
    from_state: str = "Texas",
    to_state: str = "California",
    *,
    boost: float = 1.0,
) -> list[Intervention]:
    """Interventions at ``position`` (the city token): every ``from_state`` city feature that is
    not also a ``to_state`` one is set to 0; every ``to_state`` city feature is set to ``boost``
    times its mean activation over ``to_state``'s cities."""
    src = {(f.layer, f.feature) for f in features if f.state == from_state and f.site == "city"}
    dst = {
        (f.layer, f.feature): f.mean_activation
        for f in features
        if f.state == to_state and f.site == "city"
    }
    ivs = [set_feature(layer, position, f, 0.0) for layer, f in sorted(src - dst.keys())]
    ivs += [set_feature(layer, position, f, boost * v) for (layer, f), v in sorted(dst.items())]
    return ivs
