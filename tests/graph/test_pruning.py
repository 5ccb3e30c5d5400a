"""Pruning: cut-offs, the known answer on a small graph, agreement with the square definition."""

from __future__ import annotations

import pytest
import torch

from circuitlab.graph import Graph, cumulative_scores, find_threshold, prune_graph

from .builders import hand_graph, make_graph, random_graph, sort_threshold, square_prune


@pytest.mark.parametrize("t", [0.0, 0.1, 0.5, 0.8, 0.98, 0.999, 1.0])
@pytest.mark.parametrize("seed", range(3))
def test_find_threshold_equals_full_sort(t: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    scores = torch.rand(40, 50, generator=gen) ** 4
    scores[torch.rand(40, 50, generator=gen) < 0.6] = 0
    assert find_threshold(scores, t, chunk_size=333) == sort_threshold(scores, t)
    assert find_threshold(scores.double(), t) == sort_threshold(scores.double(), t)


def test_find_threshold_keeps_ties_and_handles_degenerate_inputs() -> None:
    scores = torch.tensor([1.0, 1.0, 1.0, 1.0])
    assert find_threshold(scores, 0.3) == 1.0  # every tie is kept by `scores >= cut`
    assert find_threshold(torch.zeros(5), 0.5) == 0.0
    assert find_threshold(torch.tensor([0.0, 3.0, 1.0]), 1.0) == 1.0  # never a zero cut-off
    assert find_threshold(torch.tensor([4.0, 3.0, 2.0, 1.0]), 0.7) == 3.0  # 7/10 reached at 3


@pytest.mark.parametrize("bad", [-0.1, 1.01])
def test_thresholds_outside_unit_interval_are_rejected(bad: float) -> None:
    g = random_graph(0)
    with pytest.raises(ValueError, match="node_threshold must be between 0.0 and 1.0"):
        prune_graph(g, node_threshold=bad)
    with pytest.raises(ValueError, match="edge_threshold must be between 0.0 and 1.0"):
        prune_graph(g, edge_threshold=bad)
    with pytest.raises(ValueError, match="threshold must be between"):
        find_threshold(torch.ones(3), bad)


def _known_graph():
    # nodes: f0 f1 f2 | e(0,0) | t0 | L0 ; all features read the token, only f0 matters.
    edges = torch.zeros(4, 6, dtype=torch.float64)
    edges[0:3, 4] = 1.0  # f0, f1, f2 <- t0
    edges[3, [0, 1, 3]] = torch.tensor([10.0, 0.01, 0.01], dtype=torch.float64)  # L0
    return make_graph(
        edges,
        n_layers=1,
        n_pos=1,
        active_features=torch.tensor([[0, 0, 1], [0, 0, 2], [0, 0, 3]]),
        selected_features=torch.tensor([0, 1, 2]),
        probabilities=[1.0],
    )


def test_prune_keeps_the_one_path_that_matters() -> None:
    g = _known_graph()
    result = prune_graph(g, node_threshold=0.8, edge_threshold=0.98)
    assert result.node_mask.tolist() == [True, False, False, False, True, True]
    kept = sorted((int(g.row_nodes[r]), int(s)) for r, s in result.edge_mask.nonzero().tolist())
    assert kept == [(0, 4), (5, 0)]  # f0 <- t0, L0 <- f0
    assert result.edge_mask.shape == g.edges.shape


def test_prune_at_full_thresholds_keeps_every_node_with_influence() -> None:
    g = _known_graph()
    result = prune_graph(g, node_threshold=1.0, edge_threshold=1.0)
    # f2 reaches no logit; everything else has a path
    assert result.node_mask.tolist() == [True, True, False, True, True, True]
    assert int(result.edge_mask.sum()) == 5


def test_cumulative_scores_rank_nodes() -> None:
    g = _known_graph()
    scores = prune_graph(g).cumulative_scores
    # influences: f0 0.998, f1 0.000998, f2 0, e 0.000998, t0 0.999, L0 0
    assert scores[4] < scores[0] < scores[1] <= 1.0
    assert scores.max() == pytest.approx(1.0)
    torch.testing.assert_close(
        cumulative_scores(torch.tensor([1.0, 3.0, 0.0])), torch.tensor([1.0, 0.75, 1.0])
    )


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("nt", "et"), [(0.8, 0.98), (0.5, 0.9), (1.0, 1.0), (0.0, 0.0)])
def test_prune_equals_square_matrix_definition(seed: int, nt: float, et: float) -> None:
    g = random_graph(seed, n_layers=4, n_pos=5, n_features=40, density=0.3, dtype=torch.float64)
    result = prune_graph(g, nt, et)
    node_mask, edge_mask = square_prune(g, nt, et)
    assert torch.equal(result.node_mask, node_mask)
    assert torch.equal(result.edge_mask, edge_mask[g.row_nodes])
    assert not edge_mask[~torch.isin(torch.arange(g.n_nodes), g.row_nodes)].any()


def test_prune_leaves_graph_untouched_and_result_consistent() -> None:
    g = random_graph(3, n_features=30)
    before = g.edges.clone()
    result = prune_graph(g)
    assert torch.equal(g.edges, before)
    rows_kept = result.node_mask[g.row_nodes]
    assert not result.edge_mask[~rows_kept].any()
    assert not result.edge_mask[:, ~result.node_mask].any()
    assert result.node_mask[g.token_offset :].all()
    assert not (result.edge_mask & (g.edges == 0)).any()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_edges_are_named_not_reported_as_a_cycle(bad: float) -> None:
    g = _with_edges(hand_graph(torch.float32), [(2, 0), (3, 7)], bad)  # into f2 and L0
    with pytest.raises(ValueError) as e:
        prune_graph(g)
    text = str(e.value)
    assert "cycle" not in text.replace("not a cycle", "")
    assert "2 NaN or infinite values in 2 of 5 rows" in text
    assert "feature L1 pos 1 #3" in text and "logit 'tok0'" in text


def _with_edges(g: Graph, cells: list[tuple[int, int]], value: float) -> Graph:
    """``g`` with ``edges[r, c] = value`` at each cell."""
    edges = g.edges.clone()
    for r, c in cells:
        edges[r, c] = value
    return make_graph(
        edges,
        n_layers=g.n_layers,
        n_pos=g.n_pos,
        active_features=g.active_features,
        selected_features=g.selected_features,
        probabilities=g.logit_probabilities.tolist(),
    )
