"""Labels from a dashboard store built in code: automatic, marked, user labels win."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from circuitlab.circuits import AUTO_PREFIX, find_circuit, is_automatic
from circuitlab.circuits.labels import feature_label, supernode_label
from circuitlab.features.store import write_store
from graph.builders import random_graph


def _record(token: str, up: str, down: str) -> dict[str, Any]:
    example = {"tokens": ["a", token, "b"], "tokens_acts_list": [0.0, 3.0, 0.5]}
    return {
        "examples_quantiles": [{"quantile_name": "Top activations", "examples": [example] * 3}],
        "top_logits": [up, "x"],
        "bottom_logits": [down],
    }


def test_feature_label_reads_top_tokens_and_logits() -> None:
    label = feature_label(_record("Dallas", "Texas", "Ohio"), 0, 5)
    assert label == f"{AUTO_PREFIX}Dallas → +Texas +x -Ohio"
    assert is_automatic(label)


def test_user_labels_win_and_missing_dashboards_say_so() -> None:
    assert feature_label(_record("Dallas", "Texas", "Ohio"), 0, 5, user="Texas") == "Texas"
    assert feature_label({"label": "mine"}, 0, 5) == "mine"
    assert feature_label(None, 2, 7) == f"{AUTO_PREFIX}no dashboard (L2 #7)"


def test_supernode_label_merges_members_by_influence() -> None:
    records = [_record("Dallas", "Texas", "x"), _record("Houston", "Texas", "x"), None]
    label = supernode_label(records, [2.0, 1.0, 5.0], "3 features")
    assert label.startswith(f"{AUTO_PREFIX}Dallas/Houston → +Texas")
    assert "1 without dashboards" in label
    assert supernode_label([None], [1.0], "1 feature") == f"{AUTO_PREFIX}no dashboards (1 feature)"


def test_every_feature_and_supernode_of_a_circuit_gets_a_label(tmp_path: Path) -> None:
    graph = random_graph(0, n_features=16, dtype=torch.float64)
    n_layers = graph.n_layers
    coords = graph.selected_feature_coords.tolist()
    layers: list[list[dict[str, Any]]] = [[] for _ in range(n_layers)]
    for layer in range(n_layers):
        d_t = max([c[2] for c in coords if c[0] == layer], default=0) + 1
        layers[layer] = [_record(f"tok{layer}_{f}", "up", "down") for f in range(d_t)]
    write_store(tmp_path / "features", layers)
    graph.feature_labels = {0: "hand label"}
    circuit = find_circuit(graph, n_groups=3, features_dir=tmp_path)
    assert set(circuit.feature_labels) == set(circuit.grouping.features.tolist())
    for i, label in circuit.feature_labels.items():
        layer, _, feat = coords[i]
        if i == 0:
            assert label == "hand label"
        else:
            assert label.startswith(f"{AUTO_PREFIX}tok{layer}_{feat}")
    assert all(sn.label for sn in circuit.supernodes)
    no_store = find_circuit(graph, n_groups=3)
    assert all("no dashboard" in lab for i, lab in no_store.feature_labels.items() if i)
