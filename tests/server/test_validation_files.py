"""Validation files beside the graphs: listed, served like graph files, never taken for graphs,
never overwritten by annotation saves."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from .helpers import diff_record, faithfulness_record


def test_validation_files_are_listed_and_served(client: TestClient, graph_dir: Path) -> None:
    (graph_dir / "small.faithfulness.json").write_text(json.dumps(faithfulness_record()))
    (graph_dir / "small__vs__ct-graph.diff.json").write_text(json.dumps(diff_record()))
    (graph_dir / "agg.json").write_text(json.dumps({"kind": "circuitlab.aggregate", "graphs": []}))
    (graph_dir / "graph-metadata.json").unlink(missing_ok=True)
    listed = client.get("/api/validation").json()
    assert listed == {
        "faithfulness": ["small"],
        "diffs": [{"file": "small__vs__ct-graph.diff.json", "a": "small", "b": "ct-graph"}],
    }
    slugs = [g["slug"] for g in client.get("/data/graph-metadata.json").json()["graphs"]]
    assert sorted(slugs) == ["ct-graph", "small"]  # validation files are not graphs
    r = client.get("/data/small.faithfulness.json", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.json()["kind"] == "circuitlab.faithfulness"
    assert client.get("/data/small__vs__ct-graph.diff.json").json()["node_overlap"] == 0.43
    for bad in ("../small.faithfulness.json", "%2e%2e/x.diff.json", ".small.diff.json"):
        assert client.get(f"/data/{bad}").status_code == 404


def test_annotations_are_never_saved_into_validation_files(
    client: TestClient, graph_dir: Path
) -> None:
    path = graph_dir / "small.faithfulness.json"
    path.write_text(json.dumps(faithfulness_record()))
    before = path.read_bytes()
    r = client.post("/save_graph/small.faithfulness", json={"qParams": {"pinnedIds": []}})
    assert r.status_code == 409 and "not a graph file" in r.json()["detail"]
    assert path.read_bytes() == before
