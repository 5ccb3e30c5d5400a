"""The block store of a graph's edges: exact round trip, lookups, influence both ways."""

from __future__ import annotations

import pytest
import torch

from circuitlab.graph import compute_influence, normalize_rows
from circuitlab.graph.edges import EdgeBlock, EdgeBlocks, chunk_end, position_chunk

from .builders import hand_graph, random_graph


@pytest.mark.parametrize("seed", range(4))
def test_blocks_hold_every_nonzero_entry_exactly(seed: int) -> None:
    g = random_graph(seed, n_layers=4, n_pos=7, n_features=30)
    dense = g.edge_blocks.dense(g.row_nodes)
    assert g.edge_blocks.n_stored < dense.numel()  # structural zeros are skipped
    targets, sources = torch.meshgrid(g.row_nodes, torch.arange(g.n_nodes), indexing="ij")
    values = g.edge_blocks.values_at(targets.flatten(), sources.flatten())
    assert torch.equal(values.reshape(dense.shape), dense)
    again = type(g)(**{**_fields(g), "edges": dense})
    assert again.edge_blocks.equal(g.edge_blocks)


def _fields(g):
    return {k: getattr(g, k) for k in g.__dataclass_fields__ if k != "edge_blocks"}


@pytest.mark.parametrize("seed", range(4))
def test_influence_by_layers_equals_the_power_series(seed: int) -> None:
    g = random_graph(seed, n_layers=4, n_pos=6, n_features=40, dtype=torch.float64)
    blocks, w = g.edge_blocks, g.logit_weights()
    assert blocks._layer_order() is not None
    want = compute_influence(normalize_rows(g.edges), g.row_nodes, w)
    got = blocks.influence(w, blocks.abs_sums())
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)
    by_series = blocks._influence_by_series(w, 1 / blocks.abs_sums().clamp(min=1e-10), None, 100)
    torch.testing.assert_close(by_series, want, rtol=1e-12, atol=1e-15)


def test_same_layer_edges_fall_back_to_the_series() -> None:
    dense = hand_graph().edges
    dense[1, 0] = 0.7  # f1 reads f0, both at layer 0: not the engine's layout, still a DAG
    g = type(hand_graph())(**{**_fields(hand_graph()), "edges": dense})
    assert g.edge_blocks._layer_order() is None
    want = compute_influence(normalize_rows(g.edges), g.row_nodes, g.logit_weights())
    got = g.edge_blocks.influence(g.logit_weights(), g.edge_blocks.abs_sums())
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


def test_a_cycle_is_reported() -> None:
    values = torch.ones(1, 1)
    blocks = EdgeBlocks(
        [EdgeBlock(torch.tensor([0]), torch.tensor([1]), values, 0),
         EdgeBlock(torch.tensor([1]), torch.tensor([0]), values, 0),
         EdgeBlock(torch.tensor([2]), torch.tensor([0]), values, 1)],
        3, torch.float32,
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="cycle"):
        blocks.influence(torch.tensor([0.0, 0.0, 1.0]), blocks.abs_sums(), max_iter=20)


def test_overlapping_blocks_are_refused() -> None:
    b = EdgeBlock(torch.tensor([0]), torch.tensor([1]), torch.ones(1, 1), 0)
    with pytest.raises(ValueError, match="more than one"):
        EdgeBlocks([b, b], 2, torch.float32).check()


@pytest.mark.parametrize("n_pos", [1, 5, 16, 17, 100])
def test_chunk_end_is_the_last_position_of_each_chunk(n_pos: int) -> None:
    chunks = position_chunk(torch.arange(n_pos), n_pos)
    for c in torch.unique(chunks).tolist():
        assert chunk_end(c, n_pos) == int((chunks == c).nonzero().max())
