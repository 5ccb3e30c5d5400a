"""Replacement and completeness scores, whole graph and subgraphs."""

from __future__ import annotations

import pytest
import torch

from circuitlab.graph import compute_graph_scores, compute_subgraph_scores, prune_graph

from .builders import hand_graph, make_graph, random_graph, square_scores


def _chain(error_weight: float, feature_reads_token: bool = True):
    # nodes: f0 | e(0,0) | t0 | L0 ; L0 <- f0 (3.0), L0 <- e (error_weight); f0 <- t0 or e
    edges = torch.zeros(2, 4, dtype=torch.float64)
    edges[0, 2 if feature_reads_token else 1] = 2.0
    edges[1, [0, 1]] = torch.tensor([3.0, error_weight], dtype=torch.float64)
    return make_graph(
        edges,
        n_layers=1,
        n_pos=1,
        active_features=torch.tensor([[0, 0, 7]]),
        selected_features=torch.tensor([0]),
        probabilities=[0.8],
    )


def test_graph_without_error_edges_scores_one() -> None:
    scores = compute_graph_scores(_chain(error_weight=0.0))
    assert scores.replacement == 1.0
    assert scores.completeness == 1.0


def test_all_token_influence_through_errors_gives_replacement_zero() -> None:
    # f0 reads the error, not the token: no token reaches the logit
    scores = compute_graph_scores(_chain(error_weight=1.0, feature_reads_token=False))
    assert scores.replacement == 0.0
    # Â: L0 = [f0 3/4, e 1/4], f0 = [e 1]; influence f0 = 0.6, e = 0.2 + 0.6 = 0.8, L0 w=0.8
    # completeness = (L0: 0.75*0.8 + f0: 0*0.6 + e: 1*0.8) / (0.8 + 0.6 + 0.8)
    assert scores.completeness == pytest.approx((0.6 + 0.8) / 2.2)


def test_partial_error_share_matches_hand_computation() -> None:
    # Â: L0 = [f0 3/4, e 1/4], f0 = [t0 1]; inf f0 = 0.6, e = 0.2, t0 = 0.6
    scores = compute_graph_scores(_chain(error_weight=1.0))
    assert scores.replacement == pytest.approx(0.6 / 0.8)
    assert scores.completeness == pytest.approx((0.75 * 0.8 + 0.6 + 0.2 + 0.6) / 2.2)


@pytest.mark.parametrize("seed", range(4))
def test_scores_equal_square_matrix_definition(seed: int) -> None:
    g = random_graph(seed, dtype=torch.float64)
    assert compute_graph_scores(g) == pytest.approx(square_scores(g), rel=1e-10)
    assert compute_graph_scores(hand_graph()) == pytest.approx(square_scores(hand_graph()))


def test_subgraph_with_every_feature_equals_whole_graph() -> None:
    g = random_graph(1, dtype=torch.float64)
    everything = torch.ones(g.n_nodes, dtype=torch.bool)
    assert compute_subgraph_scores(g, everything) == pytest.approx(compute_graph_scores(g))


def test_features_outside_subgraph_count_as_errors() -> None:
    g = _chain(error_weight=0.0)
    mask = torch.tensor([False, True, True, True])  # drop f0, the only token path
    scores = compute_subgraph_scores(g, mask)
    assert scores.replacement == 0.0
    assert scores.completeness == pytest.approx(0.8 / (0.8 + 0.8))  # L0 all error, f0 counts 1


def test_pruned_subgraph_scores_are_at_most_the_full_ones() -> None:
    g = random_graph(2, n_features=30, dtype=torch.float64)
    sub = compute_subgraph_scores(g, prune_graph(g).node_mask)
    full = compute_graph_scores(g)
    assert sub.replacement <= full.replacement + 1e-12


def test_subgraph_mask_must_match_node_count() -> None:
    g = hand_graph()
    with pytest.raises(ValueError, match="node_mask must be a bool tensor of shape"):
        compute_subgraph_scores(g, torch.ones(3, dtype=torch.bool))
