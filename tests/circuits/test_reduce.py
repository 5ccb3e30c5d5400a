"""The reduced graph: edges summed exactly from the blocks; scores equal the graph's when every
feature is its own supernode."""

from __future__ import annotations

import pytest
import torch

from circuitlab.circuits import find_circuit
from circuitlab.circuits.reduce import node_groups, reduced_edges, reduced_scores
from circuitlab.graph import compute_graph_scores
from graph.builders import random_graph


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reduced_edges_are_the_exact_sums_of_member_edges(seed: int) -> None:
    graph = random_graph(seed, n_features=16, dtype=torch.float64)
    circuit = find_circuit(graph, n_groups=4)
    dense = graph.edges  # small hand-built graph: the dense reference is fine here
    group = circuit.node_group
    kept = torch.zeros(graph.n_nodes, dtype=torch.bool)
    kept[circuit.grouping.features] = True
    kept[graph.logit_offset :] = True
    g = int(group.max()) + 1
    expected = torch.zeros(g, g, dtype=torch.float64)
    for r, t in enumerate(graph.row_nodes.tolist()):
        if kept[t]:
            for s in dense[r].nonzero().flatten().tolist():
                expected[group[t], group[s]] += dense[r, s]
    assert torch.allclose(circuit.reduced_edges, expected, rtol=0, atol=1e-12)
    # the edge table holds the same numbers by id
    table = {(e.target, e.source): e.weight for e in circuit.edges}
    for t, s in expected.nonzero().tolist():
        assert table[(circuit.group_ids[t], circuit.group_ids[s])] == pytest.approx(
            float(expected[t, s]), abs=1e-12
        )


@pytest.mark.parametrize("seed", [0, 3])
def test_singleton_supernodes_over_every_feature_score_like_the_graph(seed: int) -> None:
    graph = random_graph(seed, n_features=10, dtype=torch.float64)
    features = torch.arange(graph.n_selected)
    group = node_groups(graph, features, features)
    rows = torch.zeros(graph.n_nodes, dtype=torch.bool)
    rows[: graph.n_selected] = True
    rows[graph.logit_offset :] = True
    r = reduced_edges(graph, group, rows)
    k = graph.n_selected
    is_error = torch.zeros(r.shape[0], dtype=torch.bool)
    is_error[k : k + graph.n_errors] = True
    is_token = torch.zeros(r.shape[0], dtype=torch.bool)
    is_token[graph.token_offset : graph.logit_offset] = True
    scores, _ = reduced_scores(r, graph.logit_weights().double(), is_error, is_token)
    expected = compute_graph_scores(graph)
    assert scores.replacement == pytest.approx(expected.replacement, abs=1e-10)
    assert scores.completeness == pytest.approx(expected.completeness, abs=1e-10)


def test_scores_are_computed_on_the_reduced_graph() -> None:
    graph = random_graph(5, n_features=16, dtype=torch.float64)
    fine = find_circuit(graph)
    coarse = fine.cut(1)
    assert fine.n_groups > 1
    for c in (fine, coarse):
        assert 0.0 <= c.scores.replacement <= 1.0
        assert 0.0 <= c.scores.completeness <= 1.0
    assert coarse.scores != fine.scores


def test_a_graph_pruned_to_no_features_gives_an_empty_circuit() -> None:
    graph = random_graph(1, n_features=12, dtype=torch.float64)
    circuit = find_circuit(graph, node_threshold=0.0)
    assert circuit.supernodes == [] and circuit.n_groups == 0
    assert 0.0 <= circuit.scores.replacement <= 1.0
    assert circuit.supernode_values().shape == (0,)
    assert circuit.to_json()["supernodes"] == []
