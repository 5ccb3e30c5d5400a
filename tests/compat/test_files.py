"""``create_graph_files`` and ``serve`` with circuit-tracer's calls."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import jsonschema
import pytest
import torch

import circuitlab
from circuitlab.compat.circuit_tracer import Graph, ReplacementModel, attribute
from circuitlab.compat.circuit_tracer.frontend.local_server import serve
from circuitlab.compat.circuit_tracer.utils import create_graph_files
from circuitlab.graph.export import create_graph_files as native_create_graph_files
from circuitlab.server.running import free_port
from server.helpers import NEURONPEDIA_SCHEMA

from .conftest import PROMPT


@pytest.fixture(scope="module")
def disk_graph(tiny_dirs: tuple[Path, Path]) -> Graph:
    model = ReplacementModel.from_pretrained(str(tiny_dirs[0]), str(tiny_dirs[1]), device="cpu")
    return attribute(PROMPT, model, batch_size=64)


def _nodes_and_links(path: Path) -> tuple[list[dict], list[dict]]:
    data = json.loads(path.read_text())
    return data["nodes"], data["links"]


def _uploadable(path: Path) -> dict:
    """The graph file, checked against Neuronpedia's upload schema (issue 19 item 6)."""
    data = json.loads(path.read_text())
    jsonschema.validate(data, NEURONPEDIA_SCHEMA)
    return data


def test_create_graph_files_matches_the_native_export(disk_graph: Graph, tmp_path: Path) -> None:
    create_graph_files(disk_graph, "compat", tmp_path / "a", node_threshold=0.7)
    _uploadable(tmp_path / "a" / "compat.json")
    native_create_graph_files(disk_graph, "compat", tmp_path / "b", node_threshold=0.7)
    assert _nodes_and_links(tmp_path / "a" / "compat.json") == _nodes_and_links(
        tmp_path / "b" / "compat.json"
    )
    meta = json.loads((tmp_path / "a" / "graph-metadata.json").read_text())
    assert [g["slug"] for g in meta["graphs"]] == ["compat"]


def test_create_graph_files_reads_a_pt_path_and_decodes_with_its_tokenizer(
    disk_graph: Graph, tmp_path: Path
) -> None:
    pt = tmp_path / "graph.pt"
    disk_graph.to_pt(pt)
    create_graph_files(str(pt), "from-pt", tmp_path / "out", scan="tiny-scan")
    data = _uploadable(tmp_path / "out" / "from-pt.json")
    # decoded with the tokenizer cfg.tokenizer_name names, not <id> placeholders
    assert data["metadata"]["prompt_tokens"][1:3] == ["the", "capital"]
    assert data["metadata"]["scan"] == "tiny-scan"


def test_create_graph_files_reads_a_native_saved_graph(disk_graph: Graph, tmp_path: Path) -> None:
    path = tmp_path / "graph.safetensors"
    disk_graph.save(path)
    create_graph_files(path, "native", tmp_path / "out")
    _uploadable(tmp_path / "out" / "native.json")
    assert isinstance(circuitlab.load_graph(path), circuitlab.Graph)


def test_serve_returns_a_server_that_stops(disk_graph: Graph, tmp_path: Path) -> None:
    create_graph_files(disk_graph, "served", tmp_path)
    server = serve(data_dir=tmp_path, port=free_port())
    try:
        with urllib.request.urlopen(server.url + "graph_data/served.json", timeout=10) as r:
            assert json.loads(r.read())["metadata"]["slug"] == "served"
    finally:
        server.stop()
    server.stop()  # twice is fine
    positional = serve(tmp_path, None, free_port())  # PyPI 0.5.0's (data_dir, frontend_dir, port)
    positional.stop()
    with pytest.raises(FileNotFoundError, match="circuitlab features build"):
        serve(tmp_path, features_dir=tmp_path, port=free_port())  # the repository's form


def test_imported_graph_keeps_the_circuit_tracer_config(disk_graph: Graph, tmp_path: Path) -> None:
    pt = tmp_path / "graph.pt"
    disk_graph.to_pt(pt)
    back = Graph.from_pt(pt)
    assert back.cfg == disk_graph.cfg
    assert back.cfg.dtype == torch.float32


def test_error_ids_in_circuit_tracers_form_on_request(disk_graph: Graph, tmp_path: Path) -> None:
    create_graph_files(disk_graph, "ours", tmp_path, node_threshold=1.0, edge_threshold=1.0)
    create_graph_files(
        disk_graph,
        "ct",
        tmp_path,
        node_threshold=1.0,
        edge_threshold=1.0,
        error_ids="circuit-tracer",
    )
    ours, ct = (_uploadable(tmp_path / f"{s}.json") for s in ("ours", "ct"))
    errors = [n for n in ct["nodes"] if n["feature_type"] == "mlp reconstruction error"]
    assert errors
    for node in errors:
        assert node["node_id"] == f"0_{node['layer']}_{node['ctx_idx']}"
        assert node["jsNodeId"] == f"{node['layer']}_{node['ctx_idx']}-0"
    renamed = {a["node_id"]: b["node_id"] for a, b in zip(ours["nodes"], ct["nodes"], strict=True)}
    assert [(renamed[e["source"]], renamed[e["target"]], e["weight"]) for e in ours["links"]] == [
        (e["source"], e["target"], e["weight"]) for e in ct["links"]
    ]
