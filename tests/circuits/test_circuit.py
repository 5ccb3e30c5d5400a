"""find_circuit on a tiny random model: deterministic, any cut, the hierarchy, the ablation
check (direct effects exact), JSON and summary."""

from __future__ import annotations

import json
import math

import pytest

from circuitlab.attribution import attribute
from circuitlab.circuits import Circuit, find_circuit

from conftest import PROMPT, build


@pytest.fixture(scope="module")
def tiny():
    model = build("llama", "plt")
    graph = attribute(model, PROMPT, max_n_logits=3, desired_logit_prob=0.99)
    return model, graph, find_circuit(graph, model=model, edge_threshold=1.0)


def test_grouping_is_deterministic(tiny) -> None:
    model, graph, circuit = tiny
    again = find_circuit(graph, model=model, edge_threshold=1.0)
    assert [s.members for s in again.supernodes] == [s.members for s in circuit.supernodes]
    first, second = circuit.grouping.dendrogram, again.grouping.dendrogram
    assert (first.merges == second.merges).all() and (first.heights == second.heights).all()


def test_every_cut_partitions_the_kept_features(tiny) -> None:
    _, _, circuit = tiny
    n = int(circuit.grouping.features.numel())
    assert n >= 4
    expected = sorted(circuit.grouping.features.tolist())
    for k in (1, 2, n // 2, n):
        cut = circuit.cut(k)
        assert cut.n_groups == k
        assert sorted(i for s in cut.supernodes for i in s.nodes) == expected
    assert 1 <= circuit.grouping.default_groups <= n


def test_supernode_fields_and_children(tiny) -> None:
    _, graph, circuit = tiny
    coords = graph.selected_feature_coords.tolist()
    for sn in circuit.cut(2).supernodes:
        layers = [coords[i][0] for i in sn.nodes]
        assert sn.layer_span == (min(layers), max(layers))
        assert sn.positions == sorted({coords[i][1] for i in sn.nodes})
        assert sn.members == [f"{coords[i][0]}_{coords[i][2]}_{coords[i][1]}" for i in sn.nodes]
        kids = sn.children
        if len(sn.nodes) == 1:
            assert kids == []
        else:
            assert len(kids) == 2
            assert sorted(kids[0].nodes + kids[1].nodes) == sn.nodes


def test_ablating_a_supernode_matches_its_direct_edges_exactly(tiny) -> None:
    model, _, circuit = tiny
    report = circuit.cut(3).validate(model)
    assert len(report.effects) == 3
    for e in report.effects:
        # exact up to the edges' storage dtype (float32)
        assert e.measured_direct == pytest.approx(e.predicted_direct, rel=1e-5, abs=1e-6)
        assert math.isfinite(e.predicted) and math.isfinite(e.measured)
    assert report.direct_max_error < 1e-5
    assert 0.0 <= report.sign_agreement <= 1.0
    data = report.to_json()
    assert set(data["effects"][0]) >= {"predicted", "measured", "sign_agrees", "label"}
    assert "sign agreement" in report.table()


def test_json_and_summary(tiny) -> None:
    _, _, circuit = tiny
    c: Circuit = circuit.cut(2)
    data = json.loads(json.dumps(c.to_json(), allow_nan=False))
    assert len(data["supernodes"]) == 2
    ids = {s["id"] for s in data["supernodes"]}
    assert any(e["source"] in ids for e in data["edges"])
    assert "| sn0 |" in c.summary()


def test_find_circuit_is_exported_from_the_package_root() -> None:
    import circuitlab

    assert circuitlab.find_circuit is find_circuit and circuitlab.Circuit is Circuit
    assert "find_circuit" in circuitlab.__all__
