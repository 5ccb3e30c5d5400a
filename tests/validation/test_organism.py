"""On the default organism, validation shows the planted two-hop circuit is necessary."""

from __future__ import annotations

import pytest

from circuitlab.attribution import attribute
from circuitlab.organism import DALLAS, DALLAS_PROMPT, load_organism, shipped_state_features
from circuitlab.validation import circuit_of, faithfulness


@pytest.fixture(scope="module")
def dallas():
    model = load_organism()
    graph = attribute(model, DALLAS_PROMPT)
    assert graph.logit_targets[0].token_str == DALLAS.answer  # Austin
    texas = {(f.layer, f.feature) for f in shipped_state_features() if f.state == DALLAS.state}
    circuit = circuit_of(graph, 0.8, 0.98, position_aware=True)
    state_ids = [
        circuit.ids[i]
        for i, (layer, _pos, feat) in enumerate(graph.selected_feature_coords.tolist())
        if (layer, feat) in texas and circuit.node_mask[i]
    ]
    assert len(state_ids) >= 2, "the pruned Dallas circuit holds no Texas state features"
    return model, graph, state_ids


def test_the_pruned_dallas_circuit_is_necessary_and_sufficient(dallas) -> None:
    model, graph, _ = dallas
    result = faithfulness(model, graph, [0.8])
    point, clean = result.points[0], result.clean
    assert point.necessity.prob < 0.1 * clean.prob and point.necessity.rank > 0
    assert point.sufficiency.rank == 0  # the circuit alone still answers Austin


def test_ablating_the_texas_state_features_drops_austin(dallas) -> None:
    model, graph, state_ids = dallas
    result = faithfulness(
        model, graph, [0.8], pinned=state_ids, constrained_layers=range(model.n_layers)
    )
    pinned = result.pinned
    assert pinned is not None and pinned.n_features == len(state_ids)
    assert pinned.necessity.prob < 0.5 * result.clean.prob
    assert pinned.necessity.effect is not None and pinned.necessity.effect > 0.4
