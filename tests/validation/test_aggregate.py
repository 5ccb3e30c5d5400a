"""Recurring features and prompt clusters on hand-built sets."""

from __future__ import annotations

import json

import pytest
import torch

from circuitlab.validation import aggregate_graphs, cluster

from .hand import star_graph


def _set():
    return [
        star_graph({5: 3.0, 7: 1.0}),  # 0
        star_graph({5: 3.0, 7: 1.0}),  # 1: same as 0
        star_graph({8: 1.0, 9: 1.0}),  # 2
        star_graph({8: 1.0, 9: 3.0}),  # 3: near 2 (overlap 1/2 / (1/2 + 3/4 ... ) below)
        star_graph({5: 1.0, 8: 1.0}),  # 4: between
    ]


def test_recurring_features_are_ranked_by_count_then_influence() -> None:
    agg = aggregate_graphs(_set(), node_threshold=1.0, edge_threshold=1.0)
    top = [(r.key, r.count, r.influence, r.graphs) for r in agg.features]
    # 0_5: graphs 0, 1, 4 with shares 3/4, 3/4, 1/2; 0_8: graphs 2, 3, 4 with 1/2, 1/4, 1/2.
    assert top[0] == ("0_5", 3, pytest.approx(2.0), [0, 1, 4])
    assert top[1] == ("0_8", 3, pytest.approx(1.25), [2, 3, 4])
    assert [r.key for r in agg.features[2:]] == ["0_9", "0_7"]
    edge = agg.edges[0]
    assert (edge.key, edge.target, edge.count) in {("0_5", "logit_100", 3), ("E_11", "0_5", 3)}
    assert edge.influence == pytest.approx(1.0)  # edge shares are half the node shares


def test_prompts_cluster_by_overlap() -> None:
    agg = aggregate_graphs(_set(), node_threshold=1.0, edge_threshold=1.0, cluster_threshold=0.5)
    # sim(2, 3) = (1/4 + 1/2) / (1/2 + 3/4) = 0.6; graph 4 overlaps 0, 1 and 2 by 1/3 at most.
    assert agg.similarity[2, 3] == pytest.approx(0.6)
    assert agg.clusters == [[0, 1], [2, 3], [4]]
    everything = aggregate_graphs(
        _set(), node_threshold=1.0, edge_threshold=1.0, cluster_threshold=0.0
    )
    assert everything.clusters == [[0, 1, 2, 3, 4]]
    data = json.loads(json.dumps(agg.to_json()))
    assert data["kind"] == "circuitlab.aggregate" and data["clusters"] == [[0, 1], [2, 3], [4]]
    assert data["features"][0] == {"key": "0_5", "count": 3, "influence": 2.0, "graphs": [0, 1, 4]}


def test_clustering_is_average_linkage_and_deterministic() -> None:
    sim = torch.tensor(
        [[1.0, 0.9, 0.5, 0.0], [0.9, 1.0, 0.3, 0.0], [0.5, 0.3, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]],
        dtype=torch.float64,
    )
    # {0,1} merge (0.9); then {0,1} vs 2 has mean 0.4 < 0.45: stop.
    assert cluster(sim, 0.45) == [[0, 1], [2], [3]]
    assert cluster(sim, 0.35) == [[0, 1, 2], [3]]
    # (0, 1) and (0, 2) tie at 0.8: the earlier pair merges; then {0, 1} vs 2 = 0.45 < 0.5.
    tie = torch.tensor([[1.0, 0.8, 0.8], [0.8, 1.0, 0.1], [0.8, 0.1, 1.0]], dtype=torch.float64)
    assert cluster(tie, 0.5) == [[0, 1], [2]]
    assert cluster(tie, 0.45) == [[0, 1, 2]] and cluster(tie, 0.9) == [[0], [1], [2]]
