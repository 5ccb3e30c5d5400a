"""The level-of-detail routes: the strongest links first, a node set's links above a weight,
the rest of the file unchanged; bad requests get clear 4xx answers; a saved file is re-read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from circuitlab.graph import link_sidecar
from circuitlab.graph.link_sidecar import (
    read_link_sidecar,
    sidecar_path,
    write_graph_sidecar,
    write_link_sidecar,
)
from circuitlab.server import lod
from circuitlab.server.lod import LinkIndex


def file_links(graph_dir: Path, slug: str = "small") -> list[dict[str, Any]]:
    return json.loads((graph_dir / f"{slug}.json").read_text())["links"]


def test_the_strongest_links_come_first_and_the_rest_of_the_file_unchanged(
    client: TestClient, graph_dir: Path
) -> None:
    data = json.loads((graph_dir / "small.json").read_text())
    links = data["links"]
    top = client.get("/api/lod/small?links=3").json()
    ranked = sorted(links, key=lambda link: -abs(link["weight"]))
    assert top["links"] == ranked[:3]
    assert top["lod"] == {
        "links_total": len(links),
        "links_sent": 3,
        "min_abs_weight": abs(ranked[2]["weight"]),
    }
    assert {k: v for k, v in top.items() if k not in ("links", "lod")} == {
        k: v for k, v in data.items() if k != "links"
    }
    whole = client.get("/api/lod/small").json()
    assert sorted(map(json.dumps, whole["links"])) == sorted(map(json.dumps, links))


def test_edges_of_a_node_set_above_a_weight(client: TestClient, graph_dir: Path) -> None:
    nodes = [n["node_id"] for n in json.loads((graph_dir / "small.json").read_text())["nodes"]]
    links = file_links(graph_dir)
    got = client.post("/api/lod/small/edges", json={"nodes": ["1_1_1"], "min_abs_weight": 0.5})
    answer = got.json()
    pairs = {
        (nodes[s], nodes[t], w)
        for s, t, w in zip(answer["source"], answer["target"], answer["weight"], strict=True)
    }
    expected = {
        (x["source"], x["target"], x["weight"])
        for x in links
        if "1_1_1" in (x["source"], x["target"]) and abs(x["weight"]) >= 0.5
    }
    assert pairs == expected and expected and not answer["truncated"]
    assert answer["weight"] == sorted(answer["weight"], key=lambda w: -abs(w))
    one = client.post("/api/lod/small/edges", json={"limit": 1}).json()
    assert len(one["weight"]) == 1 and one["truncated"]
    assert abs(one["weight"][0]) == max(abs(x["weight"]) for x in links)


def test_bad_requests_say_what_is_wrong(client: TestClient) -> None:
    assert client.get("/api/lod/small?links=-1").status_code == 400
    assert client.get("/api/lod/nothing").status_code == 404
    assert client.get("/api/lod/..%2Fsmall").status_code in (400, 404)
    unknown = client.post("/api/lod/small/edges", json={"nodes": ["9_9_9"]})
    assert unknown.status_code == 404 and "9_9_9" in unknown.json()["detail"]
    assert client.post("/api/lod/small/edges", json={"limit": "all"}).status_code == 400
    assert client.post("/api/lod/small/edges", json={"min_abs_weight": -1}).status_code == 400
    assert client.post("/api/lod/small/edges", content=b"{}").status_code == 415


def test_a_saved_file_is_read_again(client: TestClient) -> None:
    assert client.get("/api/lod/small").json()["qParams"]["pinnedIds"] == []
    saved = client.post("/save_graph/small", json={"qParams": {"pinnedIds": ["1_1_1"]}})
    assert saved.status_code == 200
    assert client.get("/api/lod/small").json()["qParams"]["pinnedIds"] == ["1_1_1"]


def test_circuit_tracer_files_with_repeated_ids_index_the_first(tmp_path: Path) -> None:
    nodes = [{"node_id": "a"}, {"node_id": "b"}, {"node_id": "a"}]
    links = [
        {"source": "a", "target": "b", "weight": 2.0},
        {"source": "b", "target": "b", "weight": 5.0},  # a self-loop: skipped, as the page does
        {"source": "x", "target": "b", "weight": 9.0},  # an unknown node: skipped
        {"source": "b", "target": "a"},  # no weight: 0, as the page reads it
    ]
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"nodes": nodes, "links": links}))
    index = LinkIndex.read(path)
    assert index.source.tolist() == [0, 1] and index.target.tolist() == [1, 0]
    assert index.weight.tolist() == [2.0, 0.0]


def _graph_file(path: Path, links: list[dict[str, Any]]) -> Path:
    nodes = [{"node_id": i} for i in ("a", "b", "c", 'q"ü')]
    path.write_text(json.dumps({"metadata": {"slug": path.stem}, "nodes": nodes, "links": links}))
    return path


def test_a_big_file_keeps_its_sorted_links_in_a_sidecar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lod, "SIDECAR_MIN_LINKS", 2)
    links = [
        {"source": "a", "target": "b", "weight": 1.0},
        {"source": "b", "target": "c", "weight": -3.0},
        {"source": 'q"ü', "target": "a", "weight": 2.5},
    ]
    path = _graph_file(tmp_path / "g.json", links)
    parsed = LinkIndex.read(path)
    stored = read_link_sidecar(path)
    assert stored is not None and sidecar_path(path).name == "g.links.npz"
    assert stored.weight.tolist() == [-3.0, 2.5, 1.0]
    again = LinkIndex.read(path)  # from the sidecar
    assert again.head == parsed.head and again.ids == parsed.ids
    assert again.source.tolist() == parsed.source.tolist() == [1, 3, 0]
    assert json.loads(again.strongest_json(2)) == parsed.strongest(2)
    # The file changes: the sidecar of the old version is ignored, then rewritten.
    _graph_file(path, [*links, {"source": "c", "target": "a", "weight": 9.0}])
    assert read_link_sidecar(path) is None
    assert LinkIndex.read(path).weight.tolist() == [9.0, -3.0, 2.5, 1.0]
    assert read_link_sidecar(path) is not None


def test_create_graph_files_writes_the_sidecar_of_big_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    links = [{"source": "a", "target": "b", "weight": w} for w in (1.0, -2.0, 0.5)]
    path = _graph_file(tmp_path / "g.json", links)
    data = json.loads(path.read_text())
    assert write_graph_sidecar(path, data) is None  # small: the server parses it fast
    monkeypatch.setattr(link_sidecar, "SIDECAR_MIN_LINKS", 2)
    assert write_graph_sidecar(path, data) == sidecar_path(path)
    stored = read_link_sidecar(path)
    assert stored is not None and stored.weight.tolist() == [-2.0, 1.0, 0.5]
    assert json.loads(stored.head) == {k: v for k, v in data.items() if k != "links"}


def test_a_sidecar_naming_other_nodes_is_not_trusted(tmp_path: Path) -> None:
    links = [{"source": "a", "target": "b", "weight": 1.0}]
    path = _graph_file(tmp_path / "g.json", links)
    bad = (np.array([7], np.int32), np.array([0], np.int32), np.array([5.0]))  # node 7: none
    write_link_sidecar(path, b'{"nodes":[{"node_id":"a"}]}', bad)
    assert read_link_sidecar(path) is not None  # current by its version, but
    index = LinkIndex.read(path)  # its columns do not fit its nodes: the file is parsed
    assert index.weight.tolist() == [1.0] and len(index.ids) == 4
