"""The lab server's HTTP API: page, graph files, feature ranges, annotation saves, bad input."""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from circuitlab.server import create_app

from .helpers import LabClient


def test_page_and_bundle_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "assets/app.js" in page.text
    js = client.get("/assets/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "http://" not in page.text and "https://" not in page.text  # nothing from the network


def test_graph_metadata_lists_graphs(client: TestClient) -> None:
    graphs = client.get("/data/graph-metadata.json").json()["graphs"]
    assert [g["slug"] for g in graphs] == ["small"]  # the file written by create_graph_files


def test_graph_metadata_is_built_when_missing(client: TestClient, graph_dir: Path) -> None:
    (graph_dir / "graph-metadata.json").unlink()
    slugs = sorted(
        g["slug"] for g in client.get("/graph_data/graph-metadata.json").json()["graphs"]
    )
    assert slugs == ["ct-graph", "small"]


def test_graph_files_are_gzipped_when_accepted(client: TestClient) -> None:
    plain = client.get("/data/small.json", headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    raw = client.get("/data/small.json", headers={"Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip"
    assert raw.json() == plain.json()  # the client inflates it


def test_feature_files_support_byte_ranges(client: TestClient, features_dir: Path) -> None:
    index = json.loads(gzip.decompress(client.get("/features/index.json.gz").content))
    entry = index[0]
    start, end = entry["offsets"][4], entry["offsets"][5]
    part = client.get(
        f"/features/{entry['filename']}", headers={"Range": f"bytes={start}-{end - 1}"}
    )
    assert part.status_code == 206
    assert part.headers["content-range"].startswith(f"bytes {start}-{end - 1}/")
    (n,) = struct.unpack("<I", part.content[:4])
    assert json.loads(zlib.decompress(part.content[4 : 4 + n]))["index"] == 4
    whole = client.get(f"/features/{entry['filename']}")
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    tail = client.get(f"/features/{entry['filename']}", headers={"Range": "bytes=-3"})
    assert tail.content == whole.content[-3:]
    bad = client.get(f"/features/{entry['filename']}", headers={"Range": "bytes=999999-"})
    assert bad.status_code == 416


def test_annotations_are_saved_into_the_graph_file(client: TestClient, graph_dir: Path) -> None:
    q = {
        "pinnedIds": ["0_0_1", "1_1_1"],
        "supernodes": [["capital", "0_0_1", "1_1_1"]],
        "clerps": [[5, "a label"]],
        "pruningThreshold": 0.6,
        "linkType": "both",
        "clickedId": "0_0_1",
        "sg_pos": {"0_0_1": [10, 20]},
    }
    r = client.post("/save_graph/small", json={"qParams": q})
    assert r.status_code == 200, r.text
    data = json.loads((graph_dir / "small.json").read_text())
    assert (
        data["qParams"] == {**q, "version": 1} and len(data["nodes"]) > 0
    )  # the rest is untouched
    assert not [p for p in graph_dir.iterdir() if p.name.startswith(".")]


def test_circuit_tracer_style_saves_are_accepted(client: TestClient, graph_dir: Path) -> None:
    q = {"pinnedIds": "0_5_1,1_3_1", "supernodes": "[]", "linkType": "both", "clickedId": ""}
    assert client.post("/save_graph/ct-graph", json=q).status_code == 200
    assert json.loads((graph_dir / "ct-graph.json").read_text())["qParams"] == {**q, "version": 1}


@pytest.mark.parametrize(
    "path",
    [
        "/data/../graphs/small.json",
        "/data/..%2Fgraphs%2Fsmall.json",
        "/data/%2e%2e/%2e%2e/etc/passwd",
        "/data/..%2F..%2F..%2Fetc%2Fpasswd",
        "/graph_data/%2Fetc%2Fpasswd",
        "/data/.small.json.tmp",
        "/features/..%2F..%2Fgraphs%2Fsmall.json",
        "/features/%2e%2e/transcoders/features/index.json.gz",
        "/assets/..%2F..%2Fserver%2Fapp.py",
        "/data/small.safetensors",
    ],
)
def test_path_traversal_is_refused(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404, (path, r.status_code)


def test_symlinks_out_of_the_folder_are_refused(client: TestClient, graph_dir: Path) -> None:
    secret = graph_dir.parent / "secret.json"
    secret.write_text("{}")
    (graph_dir / "link.json").symlink_to(secret)
    assert client.get("/data/link.json").status_code == 404


@pytest.mark.parametrize("slug", ["..", "..%2Fsmall", "nope", "a%00b"])
def test_saving_to_bad_slugs_is_refused(client: TestClient, slug: str) -> None:
    r = client.post(f"/save_graph/{slug}", json={"qParams": {}})
    assert r.status_code in (400, 404, 405), (slug, r.status_code)  # 405: "/" after ".."


def test_bad_annotation_bodies_are_refused(client: TestClient, graph_dir: Path) -> None:
    before = (graph_dir / "small.json").read_bytes()
    assert (
        client.post(
            "/save_graph/small", content=b"{not json", headers={"Content-Type": "application/json"}
        ).status_code
        == 400
    )
    assert client.post("/save_graph/small", json={"qParams": [1, 2]}).status_code == 422
    assert client.post("/save_graph/small", json={"qParams": {"pinnedIds": [1]}}).status_code == 422
    assert (
        client.post("/save_graph/small", json={"qParams": {"supernodes": [["a", 3]]}}).status_code
        == 422
    )
    plain = client.post("/save_graph/small", content=b"{}", headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415  # a form post from another site cannot write
    assert (graph_dir / "small.json").read_bytes() == before


def test_oversized_bodies_are_refused(graph_dir: Path) -> None:
    with LabClient(create_app(graph_dir, max_body=1000)) as c:
        big = {"qParams": {"clickedId": "x" * 5000}}
        assert c.post("/save_graph/small", json=big).status_code == 413

        def chunks():  # no Content-Length: the cap applies while reading
            for _ in range(10):
                yield b" " * 500

        r = c.post(
            "/save_graph/small", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 413


def test_other_hosts_and_origins_are_refused(client: TestClient) -> None:
    assert client.get("/data/small.json", headers={"Host": "evil.example"}).status_code == 403
    r = client.post(
        "/save_graph/small", json={"qParams": {}}, headers={"Origin": "http://evil.example"}
    )
    assert r.status_code == 403
    same = client.post(
        "/save_graph/small", json={"qParams": {}}, headers={"Origin": "http://127.0.0.1"}
    )
    assert same.status_code == 200


def test_without_features_dir_features_are_absent(graph_dir: Path) -> None:
    with LabClient(create_app(graph_dir)) as c:
        assert c.get("/features/index.json.gz").status_code == 404
        info = c.get("/api/info").json()
        assert info["features"] is False and info["tracing"] is False
        assert c.get("/api/jobs").status_code == 404
        assert c.post("/api/trace", json={"prompt": "x"}).status_code == 404


def test_missing_folders_are_reported(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        create_app(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="index.json.gz"):
        create_app(tmp_path, tmp_path)


def test_stores_written_by_the_dashboard_builder_are_served(
    graph_dir: Path, tmp_path: Path
) -> None:
    from circuitlab.features.store import write_store

    from .helpers import feature_record

    write_store(tmp_path / "built", [[feature_record(0, f) for f in range(3)]])
    with LabClient(create_app(graph_dir, tmp_path / "built")) as c:
        index = json.loads(gzip.decompress(c.get("/features/index.json.gz").content))
        entry = index[0]
        start, end = entry["offsets"][2], entry["offsets"][3]
        part = c.get(
            f"/features/{entry['filename']}", headers={"Range": f"bytes={start}-{end - 1}"}
        )
        (n,) = struct.unpack("<I", part.content[:4])
        assert json.loads(zlib.decompress(part.content[4 : 4 + n]))["index"] == 2
