"""On the shipped organism: the automatic grouping of the Dallas graph (CLI default pruning)
puts the Texas state features at "Dallas" together, purer than the naive position group."""

from __future__ import annotations

import pytest

from circuitlab.attribution import attribute
from circuitlab.circuits import find_circuit
from circuitlab.organism import (
    DALLAS,
    DALLAS_PROMPT,
    load_organism,
    organism_paths,
    shipped_state_features,
)

DALLAS_POS = 9


@pytest.fixture(scope="module")
def circuit():
    model = load_organism()
    graph = attribute(model, DALLAS_PROMPT)
    return model, find_circuit(graph, model=model, features_dir=organism_paths().features)


def test_texas_features_at_dallas_share_a_supernode(circuit) -> None:
    _, c = circuit
    texas_features = {
        (f.layer, f.feature)
        for f in shipped_state_features()
        if f.site == "city" and f.state == DALLAS.state
    }
    coords = c.graph.selected_feature_coords.tolist()

    def is_texas(i: int) -> bool:
        layer, pos, feat = coords[i]
        return pos == DALLAS_POS and (layer, feat) in texas_features

    texas = [i for i in c.grouping.features.tolist() if is_texas(i)]
    naive = [i for i in c.grouping.features.tolist() if coords[i][1] == DALLAS_POS]
    assert len(texas) >= 3
    best = max(c.supernodes, key=lambda s: sum(is_texas(i) for i in s.nodes))
    held = sum(is_texas(i) for i in best.nodes)
    assert held >= 0.8 * len(texas)
    assert held / len(best.nodes) > len(texas) / len(naive)


def test_labels_come_from_the_shipped_dashboards(circuit) -> None:
    _, c = circuit
    assert all("no dashboard" not in label for label in c.feature_labels.values())


def test_the_check_reports_every_supernode(circuit) -> None:
    model, c = circuit
    report = c.validate(model)
    assert [e.supernode for e in report.effects] == [s.id for s in c.supernodes]
    assert report.direct_max_error < 1e-4  # float32 model
    assert report.target == DALLAS.answer


def _held_out_cities() -> list[str]:
    from circuitlab.organism.facts import STATE_OF, TWO_HOP_TRAIN

    return [c for c, s in STATE_OF.items() if c not in TWO_HOP_TRAIN and c != s.capital]


@pytest.mark.slow  # ~2 minutes on 2 cores: 60 graphs
def test_state_features_at_held_out_cities_share_a_supernode(circuit) -> None:
    """For 3 of every 4 held-out cities whose pruned graph holds 3 or more of its state's
    features at the city token, one supernode holds 80% of them, purer than the position."""
    from circuitlab.organism.facts import STATE_OF, two_hop_prompt

    model, _ = circuit
    tok = model.tokenizer
    assert tok is not None
    city_features = [f for f in shipped_state_features() if f.site == "city"]
    outcomes = []
    for city in _held_out_cities():
        prompt = two_hop_prompt(city, "en")
        c = find_circuit(attribute(model, prompt), model=model)
        ids = tok(prompt, add_special_tokens=False).input_ids
        pos = 1 + ids.index(tok.convert_tokens_to_ids(city))
        mine = {(f.layer, f.feature) for f in city_features if f.state == STATE_OF[city].name}
        coords = c.graph.selected_feature_coords.tolist()
        kept = c.grouping.features.tolist()

        def is_state(i: int, pos: int = pos, mine: set = mine, coords: list = coords) -> bool:
            return coords[i][1] == pos and (coords[i][0], coords[i][2]) in mine

        state = [i for i in kept if is_state(i)]
        if len(state) < 3:
            continue
        naive = sum(coords[i][1] == pos for i in kept)
        best = max(c.supernodes, key=lambda s: sum(is_state(i) for i in s.nodes))
        held = sum(is_state(i) for i in best.nodes)
        outcomes.append(held >= 0.8 * len(state) and held / len(best.nodes) > len(state) / naive)
    assert len(outcomes) >= 8
    assert sum(outcomes) >= 0.75 * len(outcomes), f"{sum(outcomes)} of {len(outcomes)}"
