"""Graph files with ``circuit_suggestions``: the page's copy of the hierarchy cuts to the same
supernodes as ``Circuit.cut``, every shown cluster is labelled, and the file stays within
Neuronpedia's schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from circuitlab.attribution import attribute
from circuitlab.circuits import find_circuit
from circuitlab.circuits.hierarchy import Dendrogram
from circuitlab.circuits.labels import is_automatic
from circuitlab.graph.export import create_graph_files
from server.helpers import NEURONPEDIA_SCHEMA, small_graph

from conftest import PROMPT, build


@pytest.fixture(scope="module")
def tiny():
    model = build("llama", "plt")
    graph = attribute(model, PROMPT, max_n_logits=3, desired_logit_prob=0.99)
    return model, graph


def test_suggestions_cut_like_the_circuit(tiny, tmp_path: Path) -> None:
    model, graph = tiny
    circuit = find_circuit(graph, model=model, edge_threshold=1.0)
    path = create_graph_files(graph, "g", tmp_path, 0.8, 1.0, suggestions=circuit)
    data = json.loads(path.read_text())
    jsonschema.validate(data, NEURONPEDIA_SCHEMA)
    s = data["circuit_suggestions"]
    n = len(s["features"])
    assert n == int(circuit.grouping.features.numel()) >= 4
    d = Dendrogram(n, np.array(s["merges"]), np.array(s["heights"]), np.zeros(n - 1, np.int64))
    for k in range(1, s["max_groups"] + 1):
        labels = d.cut(k)
        groups = [sorted(s["features"][i] for i in np.flatnonzero(labels == g)) for g in range(k)]
        assert groups == [sorted(sn.members) for sn in circuit.cut(k).supernodes]
    assert s["default_groups"] == circuit.grouping.default_groups
    shown = {sn.cluster for k in range(1, s["max_groups"] + 1) for sn in circuit.cut(k).supernodes}
    assert shown | set(range(n)) <= {int(c) for c in s["labels"]}
    assert all(is_automatic(v) for v in s["labels"].values())
    node_ids = {node["node_id"] for node in data["nodes"]}
    assert set(s["features"]) <= node_ids  # grouped features are kept features


def test_suggestions_are_off_by_default_and_refuse_another_graph(tiny, tmp_path: Path) -> None:
    _, graph = tiny
    path = create_graph_files(small_graph(), "small", tmp_path, 1.0, 1.0)
    assert "circuit_suggestions" not in json.loads(path.read_text())
    path = create_graph_files(small_graph(), "small", tmp_path, 1.0, 1.0, suggestions=True)
    s = json.loads(path.read_text())["circuit_suggestions"]
    assert sorted(s["features"]) == ["0_0_1", "0_4_2", "1_1_1", "1_2_2"]
    with pytest.raises(ValueError, match="another graph"):
        create_graph_files(small_graph(), "x", tmp_path, suggestions=find_circuit(graph))
