"""Attribution on the Dallas prompt recovers the planted circuit: Dallas → Texas → Austin."""

from __future__ import annotations

import pytest
import torch

from circuitlab.attribution import attribute
from circuitlab.graph import Graph, prune_graph
from circuitlab.interventions import check_interventions
from circuitlab.organism import DALLAS, DALLAS_PROMPT, StateFeature, state_features, state_swap
from circuitlab.organism.load import OrganismPaths
from circuitlab.replacement import ReplacementModel

DALLAS_POS = 9  # <bos> Fact : the capital of the state containing Dallas is


@pytest.fixture(scope="module")
def features(organism: ReplacementModel) -> list[StateFeature]:
    return state_features(organism)


@pytest.fixture(scope="module")
def graph(organism: ReplacementModel) -> Graph:
    return attribute(organism, DALLAS_PROMPT)


def _reaches(graph: Graph, keep: torch.Tensor, edges: torch.Tensor, src: int, dst: int) -> bool:
    """Whether node ``dst`` is reachable from ``src`` over kept edges (``edges[row, source]``)."""
    rows = graph.row_nodes
    seen, frontier = {src}, [src]
    while frontier:
        node = frontier.pop()
        for r in (edges[:, node] != 0).nonzero().flatten().tolist():
            t = int(rows[r])
            if keep[t] and t not in seen:
                seen.add(t)
                frontier.append(t)
    return dst in seen


def test_shipped_state_features_match_recomputed(
    features: list[StateFeature], paths: OrganismPaths
):
    shipped = {
        (f["state"], f["layer"], f["feature"], f["site"]) for f in paths.info["state_features"]
    }
    assert shipped == {(f.state, f.layer, f.feature, f.site) for f in features}


def test_every_state_has_city_features(features: list[StateFeature]):
    from circuitlab.organism import STATES

    assert {f.state for f in features if f.site == "city"} == {s.name for s in STATES}


def test_texas_features_on_a_path_from_dallas_to_austin(
    organism: ReplacementModel, graph: Graph, features: list[StateFeature]
):
    tok = organism.tokenizer
    assert tok is not None
    assert tok.convert_ids_to_tokens(int(graph.input_tokens[DALLAS_POS])) == DALLAS.city
    top = graph.logit_targets[0].token_str
    assert top == DALLAS.answer
    pruned = prune_graph(graph)
    keep = pruned.node_mask
    edges = graph.edges * pruned.edge_mask
    texas = {(f.layer, f.feature) for f in features if f.state == DALLAS.state and f.site == "city"}
    coords = graph.selected_feature_coords.tolist()
    on_path = [
        i
        for i, (layer, pos, feat) in enumerate(coords)
        if pos == DALLAS_POS
        and (layer, feat) in texas
        and keep[i]
        and _reaches(graph, keep, edges, graph.token_node(DALLAS_POS), i)
        and _reaches(graph, keep, edges, i, graph.logit_node(0))
    ]
    assert len(on_path) >= 2, "no Texas features on a Dallas -> Austin path in the pruned graph"
    # The Texas features carry a real share of the answer: their direct effects on Austin
    # plus everything else reaching it through them is positive.
    row = graph.edges[graph.n_selected, : graph.n_selected]
    assert row[on_path].sum() > 0


def test_california_features_are_not_in_the_dallas_circuit(
    graph: Graph, features: list[StateFeature]
):
    texas = {(f.layer, f.feature) for f in features if f.state == "Texas" and f.site == "city"}
    cal = {(f.layer, f.feature) for f in features if f.state == "California" and f.site == "city"}
    keep = prune_graph(graph).node_mask
    kept = {
        (layer, feat)
        for i, (layer, pos, feat) in enumerate(graph.selected_feature_coords.tolist())
        if pos == DALLAS_POS and keep[i]
    }
    assert len(kept & (texas - cal)) > len(kept & (cal - texas))


def test_swap_texas_for_california_gives_sacramento(
    organism: ReplacementModel, features: list[StateFeature]
):
    ivs = state_swap(features, DALLAS_POS, "Texas", "California")
    check = check_interventions(
        organism, DALLAS_PROMPT, ivs, target="Sacramento", constrained_layers=range(0, 2)
    )
    assert check.top_before[0].token == "Austin"
    assert check.top_after[0].token == "Sacramento"
    assert check.target.prob_after > 0.5


def test_swap_needs_the_california_features(
    organism: ReplacementModel, features: list[StateFeature]
):
    """Ablating Texas alone does not produce Sacramento: the boost carries the new state."""
    ivs = state_swap(features, DALLAS_POS, "Texas", "California", boost=0.0)
    check = check_interventions(organism, DALLAS_PROMPT, ivs, target="Sacramento")
    assert check.top_after[0].token != "Sacramento"
