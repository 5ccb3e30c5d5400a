"""Graphs from the engine keep their edges in blocks: pruning, scores and page files are those
of the dense rows, and half-precision edges stay within the documented tolerance."""

from __future__ import annotations

import pytest
import torch

from circuitlab.attribution import attribute
from circuitlab.graph import Graph, compute_graph_scores, compute_subgraph_scores, prune_graph
from circuitlab.graph.export import graph_json, node_ids
from graph.builders import dense_prune, dense_scores

from conftest import build

PROMPT = [0, 5, 9, 3, 7, 7, 12, 4, 9, 11, 3, 3, 6, 8, 2, 10, 13, 5, 7, 1, 4, 9, 12, 6, 3]


def _dense_copy(g: Graph) -> Graph:
    fields = {k: getattr(g, k) for k in g.__dataclass_fields__ if k != "edge_blocks"}
    return Graph(**fields, edges=g.edges)


@pytest.fixture(scope="module", params=[("llama", "plt"), ("gemma2", "clt_skip")])
def graph(request) -> Graph:
    family, kind = request.param
    return attribute(build(family, kind, n_layers=3), PROMPT, batch_size=16)


def test_blocks_skip_the_structural_zeros(graph: Graph) -> None:
    dense = graph.edges
    assert graph.edge_blocks.n_stored < 0.7 * dense.numel()
    assert torch.count_nonzero(dense) == sum(
        int(torch.count_nonzero(b.values)) for b in graph.edge_blocks.blocks
    )
    assert graph.edge_blocks._layer_order() is not None  # influence in one pass


@pytest.mark.parametrize(("node_t", "edge_t"), [(0.8, 0.98), (0.5, 0.9), (1.0, 1.0)])
def test_pruning_matches_the_dense_rows(graph: Graph, node_t: float, edge_t: float) -> None:
    pruned = prune_graph(graph, node_t, edge_t)
    node_mask, edge_mask = dense_prune(graph, node_t, edge_t)
    assert torch.equal(pruned.node_mask, node_mask)
    assert torch.equal(pruned.edge_mask, edge_mask)
    assert pruned.n_edges == int(edge_mask.sum())


def test_scores_match_the_dense_rows(graph: Graph) -> None:
    got = compute_graph_scores(graph)
    assert got == pytest.approx(dense_scores(graph), rel=1e-12)
    mask = prune_graph(graph).node_mask
    sub = compute_subgraph_scores(graph, mask)
    assert sub == pytest.approx(dense_scores(graph, mask), rel=1e-12)


def test_page_file_matches_the_dense_rows(graph: Graph) -> None:
    page = graph_json(graph, "compact")
    other = graph_json(_dense_copy(graph), "compact")  # the same rows in another block layout
    for p in (page, other):
        del p["metadata"]["info"]["create_time_ms"]
    assert page == other
    node_mask, edge_mask = dense_prune(graph)
    rows, cols = edge_mask.nonzero(as_tuple=True)
    ids, dense = node_ids(graph), graph.edges
    want = [
        (ids[s], ids[int(graph.row_nodes[r])], float(f"{float(dense[r, s].float()):.6g}"))
        for r, s in zip(rows.tolist(), cols.tolist(), strict=True)
    ]
    got = [(link["source"], link["target"], link["weight"]) for link in page["links"]]
    assert got == want


# Half precision: each edge is rounded once (relative error <= 2^-9 for bfloat16, 2^-12 for
# float16 in its normal range); influence, pruning and scores are computed in float32.
HALF = {"bfloat16": 2.0**-8, "float16": 2.0**-10}


@pytest.mark.parametrize("edge_dtype", list(HALF))
def test_half_precision_edges_stay_within_tolerance(edge_dtype: str) -> None:
    rm = build("llama", "plt", n_layers=3, dtype=torch.float32)
    full = attribute(rm, PROMPT, batch_size=16)
    half = attribute(rm, PROMPT, batch_size=16, edge_dtype=edge_dtype)
    assert half.edge_dtype == getattr(torch, edge_dtype)
    assert half.settings["edge_dtype"] == edge_dtype
    assert half.edge_blocks.nbytes < 0.6 * full.edge_blocks.nbytes
    a, b = full.edges, half.edges.float()
    scale = float(a.abs().max())
    assert ((a - b).abs() <= HALF[edge_dtype] * a.abs() + 1e-6 * scale).all()
    assert compute_graph_scores(half) == pytest.approx(compute_graph_scores(full), abs=1e-3)
    p_full, p_half = prune_graph(full), prune_graph(half)
    agree = (p_full.node_mask == p_half.node_mask).float().mean()
    assert agree >= 0.99


def test_edge_dtype_is_checked() -> None:
    rm = build("llama", "plt", n_layers=2)
    with pytest.raises(ValueError, match="edge_dtype"):
        attribute(rm, PROMPT[:4], edge_dtype="int8")


def test_saved_graph_keeps_the_blocks(graph: Graph, tmp_path) -> None:
    graph.save(tmp_path / "g.safetensors")
    loaded = Graph.load(tmp_path / "g.safetensors")
    assert loaded.edge_blocks.equal(graph.edge_blocks)
    assert loaded.edge_blocks.nbytes <= graph.edge_blocks.nbytes  # shared sources stay shared
