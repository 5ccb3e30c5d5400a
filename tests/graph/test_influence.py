"""Influence on the rows a graph stores equals the square-matrix definitions."""

from __future__ import annotations

import pytest
import torch

from circuitlab.graph import LogitTarget, compute_influence, edge_influence, normalize_rows

from .builders import (
    hand_graph,
    make_graph,
    random_graph,
    square_influence_by_inverse,
    square_influence_by_series,
    square_normalize,
)


def test_chain_influence_matches_hand_computation() -> None:
    # t0 -> f0 (3.0); L0 <- f0 (2.0), L0 <- t0 (-2.0); p(L0) = 0.5.
    # Â: L0 row = [f0 0.5, t0 0.5], f0 row = [t0 1.0].
    # influence(f0) = 0.5 * 0.5 = 0.25; influence(t0) = 0.5 * 0.5 + 0.25 * 1 = 0.5.
    edges = torch.zeros(2, 4, dtype=torch.float64)  # nodes: f0, e(0,0), t0, L0
    edges[0, 2] = 3.0
    edges[1, [0, 2]] = torch.tensor([2.0, -2.0], dtype=torch.float64)
    g = make_graph(
        edges,
        n_layers=1,
        n_pos=1,
        active_features=torch.tensor([[1, 0, 4]]),
        selected_features=torch.tensor([0]),
        probabilities=[0.5],
    )
    influence = compute_influence(normalize_rows(g.edges), g.row_nodes, g.logit_weights())
    assert influence.tolist() == [0.25, 0.0, 0.5, 0.0]


def test_hand_graph_influence_equals_matrix_inverse() -> None:
    g = hand_graph()
    expected = square_influence_by_inverse(square_normalize(g.adjacency_matrix), g.logit_weights())
    got = compute_influence(normalize_rows(g.edges), g.row_nodes, g.logit_weights())
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert got[9:].tolist() == [0.0, 0.0]  # logits influence nothing
    assert got[3] == 0.0 and got[5] == 0.0  # errors without outgoing edges


@pytest.mark.parametrize("seed", range(5))
def test_rectangular_and_square_computations_agree(seed: int) -> None:
    g = random_graph(seed, n_layers=4, n_pos=5, n_features=30)
    w = g.logit_weights()
    a_hat = square_normalize(g.adjacency_matrix)
    rows = normalize_rows(g.edges)
    torch.testing.assert_close(rows, a_hat[g.row_nodes])
    got = compute_influence(rows, g.row_nodes, w)
    torch.testing.assert_close(got, square_influence_by_series(a_hat, w), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(
        got.double(), square_influence_by_inverse(a_hat, w), rtol=1e-4, atol=1e-6
    )
    square_scores = a_hat * (square_influence_by_series(a_hat, w) + w)[:, None]
    torch.testing.assert_close(
        edge_influence(rows, g.row_nodes, w), square_scores[g.row_nodes], rtol=1e-5, atol=1e-7
    )


def test_normalize_rows_sums_to_one_and_keeps_empty_rows_zero() -> None:
    edges = torch.tensor([[1.0, -3.0, 0.0], [0.0, 0.0, 0.0]])
    assert normalize_rows(edges).tolist() == [[0.25, 0.75, 0.0], [0.0, 0.0, 0.0]]
    assert edges[0, 1] == -3.0  # input untouched


def test_cycle_raises_clear_error() -> None:
    # two feature rows feeding each other: not an attribution graph
    edges = torch.zeros(3, 5)  # nodes: f0, f1, e, t, L
    edges[0, 1] = 1.0
    edges[1, 0] = 1.0
    edges[2, 0] = 1.0
    row_nodes = torch.tensor([0, 1, 4])
    w = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0])
    with pytest.raises(RuntimeError, match="contain a cycle"):
        compute_influence(normalize_rows(edges), row_nodes, w, max_iter=50)


def test_virtual_targets_are_ordinary_logit_nodes() -> None:
    g = hand_graph()
    g.logit_targets[1] = LogitTarget("logit(a)-logit(b)", g.vocab_size)
    assert g.logit_targets[1].is_virtual(g.vocab_size)
    assert g.node_kind(10) == "logit"


def test_non_finite_rows_are_named_not_reported_as_a_cycle() -> None:
    g = hand_graph()
    edges = g.edges.clone()
    edges[1, 7] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or infinite values in 1 of 5 rows \(into nodes 1\)"):
        compute_influence(normalize_rows(edges), g.row_nodes, g.logit_weights())
    w = g.logit_weights()
    w[-1] = float("inf")
    with pytest.raises(ValueError, match="weights hold NaN or infinite values at nodes 10"):
        compute_influence(normalize_rows(hand_graph().edges), g.row_nodes, w)
