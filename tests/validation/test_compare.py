"""Overlaps, spectral distances and diffs on hand-built graphs with known answers."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch

from circuitlab.graph import Graph
from circuitlab.transcoders import random_transcoder_set
from circuitlab.transcoders.per_layer import SingleLayerTranscoder, TranscoderSet
from circuitlab.validation import (
    GraphDiff,
    align_features,
    circuit_of,
    compare_graphs,
    laplacian_spectrum,
    spectral_distance,
    weighted_jaccard,
)

from .hand import star_graph


def compare(a: Graph, b: Graph, **kwargs: Any) -> GraphDiff:
    """``compare_graphs`` keeping every node and edge with influence (thresholds 1.0)."""
    return compare_graphs(a, b, node_threshold=1.0, edge_threshold=1.0, **kwargs)


def test_identical_graphs_overlap_fully_at_distance_zero() -> None:
    g = star_graph({5: 3.0, 7: 1.0})
    diff = compare(g, g)
    assert diff.node_overlap == pytest.approx(1.0)
    assert diff.edge_overlap == pytest.approx(1.0)
    assert diff.spectral_distance == pytest.approx(0.0, abs=1e-12)
    assert [n.key for n in diff.shared] == ["0_5", "0_7"] and not diff.only_a and not diff.only_b
    assert diff.shared[0].a == ["0_5_1"] and diff.shared[0].weight_a == pytest.approx(0.75)


def test_disjoint_graphs_do_not_overlap() -> None:
    a = star_graph({5: 3.0, 7: 1.0})
    b = star_graph({8: 1.0, 9: 2.0}, tokens=[20, 21], logit=200)
    diff = compare(a, b)
    assert diff.node_overlap == 0.0 and diff.edge_overlap == 0.0
    assert not diff.shared and len(diff.only_a) == 2 and len(diff.only_b) == 2
    assert not diff.edges_shared and len(diff.edges_only_a) == 4


def test_partial_overlap_matches_the_hand_computed_jaccard() -> None:
    # A: shares {5: 3/4, 7: 1/4}; B: {5: 1/2, 9: 1/2}.
    # nodes: min = 1/2; max = 3/4 + 1/4 + 1/2 = 3/2 -> 1/3. Edge shares are half the node
    # shares, twice over (token edge and logit edge), so the edge overlap is also 1/3.
    a = star_graph({5: 3.0, 7: 1.0})
    b = star_graph({5: 1.0, 9: 1.0})
    diff = compare(a, b)
    assert diff.node_overlap == pytest.approx(1 / 3)
    assert diff.edge_overlap == pytest.approx(1 / 3)
    assert [n.key for n in diff.shared] == ["0_5"]
    assert [n.key for n in diff.only_a] == ["0_7"] and [n.key for n in diff.only_b] == ["0_9"]
    shared_edges = {(e.source, e.target) for e in diff.edges_shared}
    assert shared_edges == {("E_11", "0_5"), ("0_5", "logit_100")}
    members = {pair for e in diff.edges_shared for pair in e.a}
    assert members == {("E_11_1", "0_5_1"), ("0_5_1", "2_100_1")}  # lab node ids


def test_position_aware_keys_tell_positions_apart() -> None:
    a = star_graph({5: 1.0}, pos=1, n_pos=3)
    b = star_graph({5: 1.0}, pos=2, n_pos=3)
    assert compare(a, b).node_overlap == pytest.approx(1.0)
    aware = compare(a, b, position_aware=True)
    assert aware.node_overlap == 0.0
    assert [n.key for n in aware.only_a] == ["0_5_1"] and [n.key for n in aware.only_b] == ["0_5_2"]


def test_weighted_jaccard_definition() -> None:
    assert weighted_jaccard({"x": 0.5, "y": 0.5}, {"x": 0.25, "z": 0.75}) == pytest.approx(
        0.25 / (0.5 + 0.5 + 0.75)
    )
    assert weighted_jaccard({}, {}) == 1.0 and weighted_jaccard({"x": 1.0}, {}) == 0.0


def test_laplacian_spectrum_of_a_path_and_the_distance_to_an_edge() -> None:
    path = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])  # 0 -> 1 -> 2
    edge = torch.tensor([[0.0, 0], [1, 0]])  # 0 -> 1, plus one isolated node by padding
    torch.testing.assert_close(laplacian_spectrum(path), torch.tensor([0.0, 1, 2]).double())
    # spectra {0, 1, 2} vs {0, 0, 2}: sqrt((0 + 1 + 0) / 3)
    assert spectral_distance(path, edge) == pytest.approx(math.sqrt(1 / 3))
    perm = torch.tensor([2, 0, 1])
    assert spectral_distance(path, 5 * path[perm][:, perm]) == pytest.approx(0.0, abs=1e-12)


def test_diff_json_follows_the_documented_schema(tmp_path) -> None:
    a, b = star_graph({5: 3.0, 7: 1.0}), star_graph({5: 1.0, 9: 1.0})
    diff = compare(a, b, slug_a="dallas", slug_b="oakland")
    path = diff.save(tmp_path / diff.file_name())
    assert path.name == "dallas__vs__oakland.diff.json"
    data = json.loads(path.read_text())
    assert data["kind"] == "circuitlab.diff" and "metadata" not in data
    assert set(data) >= {"a", "b", "settings", "node_overlap", "edge_overlap", "nodes", "edges"}
    assert data["nodes"]["shared"][0] == {
        "key": "0_5", "a": ["0_5_1"], "b": ["0_5_1"], "weight_a": 0.75, "weight_b": 0.5,
        "cosine": None,
    }  # fmt: skip
    assert ["0_5_1", "2_100_1"] in data["edges"]["shared"][0]["a"] + data["edges"]["shared"][1]["a"]


def test_different_bases_need_transcoders() -> None:
    a = star_graph({5: 1.0}, transcoder_name="tc-a")
    b = star_graph({5: 1.0}, transcoder_name="tc-b")
    with pytest.raises(ValueError, match="different transcoder bases"):
        compare(a, b)
    assert compare(a, b, align=False).node_overlap == pytest.approx(1.0)


def _permuted(tc: TranscoderSet, perm: torch.Tensor, noise: float) -> TranscoderSet:
    """B's feature ``perm[f]`` decodes like A's feature ``f`` (plus noise)."""
    g = torch.Generator().manual_seed(3)
    layers = []
    for t in tc.layers:
        assert isinstance(t, SingleLayerTranscoder)
        w_dec = torch.empty_like(t.W_dec)
        w_dec[perm] = t.W_dec + noise * torch.randn(t.W_dec.shape, generator=g)
        layers.append(SingleLayerTranscoder(t.W_enc, t.b_enc, w_dec, t.b_dec, t.activation))
    return TranscoderSet(layers, name="tc-b")


def test_features_of_different_bases_align_by_decoder_cosine() -> None:
    tc_a = random_transcoder_set(1, 16, 32, seed=0, dtype=torch.float64)
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(1))
    tc_b = _permuted(tc_a, perm, noise=0.01)
    a = star_graph({5: 3.0, 7: 1.0}, transcoder_name="tc-a")
    b = star_graph({int(perm[5]): 3.0, int(perm[9]): 1.0}, transcoder_name="tc-b")
    diff = compare(a, b, transcoders_a=tc_a, transcoders_b=tc_b)
    assert diff.settings["aligned"] is True
    assert [n.key for n in diff.shared] == ["0_5"] and diff.shared[0].cosine == pytest.approx(
        1, abs=0.02
    )
    assert diff.shared[0].b == [f"0_{int(perm[5])}_1"]  # ids stay B's own node ids
    assert [n.key for n in diff.only_b] == [f"0_b{int(perm[9])}"]
    assert diff.node_overlap == pytest.approx(0.75 / (0.75 + 0.25 + 0.25))
    matches = align_features([(0, 5), (0, 9)], [(0, int(perm[9])), (0, int(perm[5]))], tc_a, tc_b)
    assert {(m.feature_a, m.feature_b) for m in matches} == {(5, int(perm[5])), (9, int(perm[9]))}
    with pytest.raises(ValueError, match="d_model"):
        align_features([(0, 1)], [(0, 1)], tc_a, random_transcoder_set(1, 8, 32))


def test_the_kept_adjacency_is_the_square_matrix_on_kept_nodes() -> None:
    g = star_graph({5: 3.0, 7: -1.0, 9: 0.5}, n_pos=3)
    circuit = circuit_of(g, 1.0, 1.0)
    kept = circuit.kept
    square = g.adjacency_matrix.abs()[kept][:, kept]
    torch.testing.assert_close(circuit.adjacency, square)
    assert circuit.n_edges == 6 and len(kept) == 3 + 3 + 1  # features, tokens, logit
