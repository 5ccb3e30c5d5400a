"""The Graph object: layout, index helpers, validation, devices."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from circuitlab.graph import Graph, LogitTarget

from .builders import hand_graph


def test_node_layout_follows_circuit_tracer_order() -> None:
    g = hand_graph()
    assert (g.n_selected, g.n_errors, g.n_pos, g.n_logits, g.n_nodes) == (3, 4, 2, 2, 11)
    assert [g.feature_node(i) for i in range(3)] == [0, 1, 2]
    assert [g.error_node(layer, p) for layer in range(2) for p in range(2)] == [3, 4, 5, 6]
    assert [g.token_node(p) for p in range(2)] == [7, 8]
    assert [g.logit_node(i) for i in range(2)] == [9, 10]
    kinds = [g.node_kind(i) for i in range(g.n_nodes)]
    assert kinds == ["feature"] * 3 + ["error"] * 4 + ["token"] * 2 + ["logit"] * 2
    assert g.error_position(5) == (1, 0)
    assert g.row_nodes.tolist() == [0, 1, 2, 9, 10]


def test_index_helpers_reject_out_of_range() -> None:
    g = hand_graph()
    with pytest.raises(IndexError, match="pos index 2"):
        g.token_node(2)
    with pytest.raises(IndexError, match="node index 11"):
        g.node_kind(11)
    with pytest.raises(ValueError, match="not an error node"):
        g.error_position(0)


def test_adjacency_matrix_puts_rows_at_their_nodes_and_zero_rows_elsewhere() -> None:
    g = hand_graph()
    a = g.adjacency_matrix
    assert a.shape == (11, 11)
    assert torch.equal(a[[0, 1, 2, 9, 10]], g.edges)
    assert not a[3:9].any()


def test_logit_weights_and_coordinates() -> None:
    g = hand_graph()
    w = g.logit_weights()
    assert w.tolist() == [0.0] * 9 + [0.6, 0.3]
    assert g.selected_feature_coords.tolist() == [[0, 1, 5], [0, 1, 7], [1, 1, 3]]
    assert g.logit_token_ids.tolist() == [100, 101]
    assert LogitTarget("a-b", 1000).is_virtual(g.vocab_size)
    assert not g.logit_targets[0].is_virtual(g.vocab_size)


def test_to_returns_a_moved_copy() -> None:
    g = hand_graph()
    moved = g.to("meta")
    assert moved.edges.device.type == "meta"
    assert moved.active_features.device.type == "meta"
    assert g.edges.device.type == "cpu"
    assert moved.input_string == g.input_string


def _fields(g: Graph) -> dict[str, Any]:
    fields = {name: getattr(g, name) for name in g.__dataclass_fields__ if name != "edge_blocks"}
    return fields | {"edges": g.edges}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"edges": torch.zeros(5, 10, dtype=torch.float64)}, "edges has shape"),
        ({"edges": torch.zeros(5, 11, dtype=torch.int32)}, "edges must be one of"),
        ({"selected_features": torch.tensor([1, 0, 3])}, "strictly ascending"),
        ({"selected_features": torch.tensor([0, 1, 9])}, "must index active_features"),
        ({"activation_values": torch.ones(3)}, "activation_values has shape"),
        ({"logit_probabilities": torch.ones(3)}, "logit_probabilities has shape"),
        ({"active_features": torch.zeros(4, 2, dtype=torch.long)}, r"\[n_active, 3\]"),
        ({"input_tokens": torch.zeros(2)}, "input_tokens must be integer"),
        ({"feature_labels": {7: "x"}}, "feature_labels keys"),
    ],
)
def test_inconsistent_fields_are_rejected(change: dict[str, object], message: str) -> None:
    fields = _fields(hand_graph()) | change
    with pytest.raises(ValueError, match=message):
        Graph(**fields)  # type: ignore[arg-type]
