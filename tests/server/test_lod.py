"""The level-of-detail routes: the strongest links first, a node set's links above a weight,
the rest of the file unchanged; bad requests get clear 4xx answers; a saved file is re-read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

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
