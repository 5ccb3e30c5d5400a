"""Nothing is lost: a trace never overwrites a graph, concurrent annotation saves conflict
instead of dropping pins, and killed or failed writes leave no orphans behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from circuitlab.atomic import TEMP_SUFFIX
from circuitlab.graph import Graph
from circuitlab.server import Job, Progress, Tracer, create_app

from .helpers import small_graph

ORIGIN = "http://127.0.0.1"  # the lab's own page on a loopback bind


def lab(app: object) -> TestClient:
    return TestClient(app, base_url=ORIGIN)  # type: ignore[arg-type]


@pytest.fixture
def tracing(graph_dir: Path) -> Iterator[tuple[TestClient, threading.Event]]:
    """A tracing lab over ``graph_dir`` whose jobs finish when ``release`` is set."""
    release = threading.Event()

    def slow(_model: object, _job: Job, _progress: Progress) -> Graph:
        release.wait(30)
        return small_graph()

    tracer = Tracer({"m": object()}, graph_dir, run_fn=slow)
    with lab(create_app(graph_dir, tracer=tracer)) as c:
        yield c, release
    release.set()
    tracer.close()


# ---- item 9: traces never overwrite ----------------------------------------------------------
def test_tracing_to_an_existing_slug_is_refused(tracing, graph_dir: Path) -> None:
    c, release = tracing
    c.post("/save_graph/small", json={"qParams": {"pinnedIds": ["0_0_1"]}})
    before = {p.name: p.read_bytes() for p in graph_dir.iterdir()}
    r = c.post("/api/trace", json={"prompt": "again", "slug": "small"})
    assert r.status_code == 409
    assert "'small' already exists" in r.json()["detail"] and r.json()["slug"] == "small"
    release.set()
    assert {p.name: p.read_bytes() for p in graph_dir.iterdir()} == before  # pins kept
    assert c.get("/api/jobs").json()["jobs"] == []


def test_a_slug_being_traced_is_taken(tracing) -> None:
    c, release = tracing
    first = c.post("/api/trace", json={"prompt": "one", "slug": "mine"})
    assert first.status_code == 200
    second = c.post("/api/trace", json={"prompt": "two", "slug": "mine"})
    assert second.status_code == 409 and first.json()["job"]["id"] in second.json()["detail"]
    release.set()


def test_traces_without_a_slug_get_fresh_ones(tracing, graph_dir: Path) -> None:
    c, release = tracing
    slugs = {c.post("/api/trace", json={"prompt": f"p{i}"}).json()["job"]["slug"] for i in range(3)}
    assert len(slugs) == 3 and not any((graph_dir / f"{s}.json").exists() for s in slugs)
    release.set()
    tracer: Tracer = c.app.state.tracer  # type: ignore[attr-defined]
    assert tracer._fresh_slug("small") == "small-2"  # a derived name that is taken moves on


def test_a_failed_trace_leaves_no_half_graph(graph_dir: Path) -> None:
    def bad(_model: object, _job: Job, _progress: Progress) -> Graph:
        graph = small_graph()
        graph.activation_values[0] = float("nan")  # the graph file cannot be written
        return graph

    before = sorted(p.name for p in graph_dir.iterdir())
    tracer = Tracer({"m": object()}, graph_dir, run_fn=bad)
    job = tracer.wait(tracer.submit("x", slug="broken").id)
    tracer.close()
    assert job.status == "failed" and job.error
    assert sorted(p.name for p in graph_dir.iterdir()) == before  # no .safetensors, no temp
    slugs = [
        g["slug"] for g in json.loads((graph_dir / "graph-metadata.json").read_text())["graphs"]
    ]
    assert "broken" not in slugs


def test_a_trace_writes_both_files(graph_dir: Path) -> None:
    tracer = Tracer({"m": object()}, graph_dir, run_fn=lambda *_: small_graph())
    job = tracer.wait(tracer.submit("x", slug="whole").id)
    tracer.close()
    assert job.status == "done", job.error
    assert (graph_dir / "whole.json").is_file() and (graph_dir / "whole.safetensors").is_file()
    assert Graph.load(graph_dir / "whole.safetensors").n_layers == 2
    assert not [p for p in graph_dir.iterdir() if p.name.endswith(TEMP_SUFFIX)]


# ---- item 11: concurrent annotation saves ----------------------------------------------------
def saved_view(graph_dir: Path, slug: str = "small") -> dict:
    return json.loads((graph_dir / f"{slug}.json").read_text())["qParams"]


def test_a_stale_save_conflicts_instead_of_dropping_pins(client: TestClient, graph_dir: Path):
    read_a = read_b = saved_view(graph_dir).get("version", 0)  # two pages open the graph
    a = client.post(
        "/save_graph/small", json={"qParams": {"pinnedIds": ["0_0_1"]}, "version": read_a}
    )
    assert a.status_code == 200 and a.json() == {"saved": "small", "version": read_a + 1}
    assert a.headers["ETag"] == f'"{read_a + 1}"'
    b = client.post(
        "/save_graph/small", json={"qParams": {"pinnedIds": ["1_1_1"]}, "version": read_b}
    )
    assert b.status_code == 409
    answer = b.json()
    assert answer["version"] == read_a + 1 and answer["qParams"]["pinnedIds"] == ["0_0_1"]
    assert saved_view(graph_dir)["pinnedIds"] == ["0_0_1"]  # A's pins are still there
    merged = {"pinnedIds": ["0_0_1", "1_1_1"]}  # B merges and saves on the current version
    again = client.post("/save_graph/small", json={"qParams": merged, "version": answer["version"]})
    assert again.status_code == 200 and again.json()["version"] == read_a + 2
    assert saved_view(graph_dir) == {**merged, "version": read_a + 2}


def test_if_match_carries_the_version_too(client: TestClient, graph_dir: Path) -> None:
    ok = client.post("/save_graph/small", json={"qParams": {}}, headers={"If-Match": '"0"'})
    assert ok.status_code == 200 and ok.json()["version"] == 1
    stale = client.post("/save_graph/small", json={"qParams": {}}, headers={"If-Match": '"0"'})
    assert stale.status_code == 409 and stale.headers["ETag"] == '"1"'
    weak = client.post("/save_graph/small", json={"qParams": {}}, headers={"If-Match": 'W/"1"'})
    assert weak.status_code == 200
    bad = client.post("/save_graph/small", json={"qParams": {}}, headers={"If-Match": "x"})
    assert bad.status_code == 422 and "If-Match" in bad.json()["detail"]


def test_saves_without_a_version_still_work(client: TestClient, graph_dir: Path) -> None:
    """circuit-tracer's page posts the bare view, with no version: last writer wins."""
    for pins in ("0_5_1", "1_3_1"):
        r = client.post("/save_graph/ct-graph", json={"pinnedIds": pins, "linkType": "both"})
        assert r.status_code == 200, r.text
    assert saved_view(graph_dir, "ct-graph")["pinnedIds"] == "1_3_1"


def test_concurrent_versioned_saves_let_exactly_one_win(client: TestClient, graph_dir: Path):
    results: list[int] = []

    def save(i: int) -> None:
        body = {"qParams": {"pinnedIds": [f"{i}_0_1"]}, "version": 0}
        results.append(client.post("/save_graph/small", json=body).status_code)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200, 409, 409, 409]
    assert saved_view(graph_dir)["version"] == 1


# ---- item 13: stale temporaries ------------------------------------------------------------
def test_stale_temporaries_are_removed_when_the_lab_starts(graph_dir: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])  # a writer that has died
    proc.wait()
    stale = graph_dir / f".small.json.{proc.pid}.q1w2e3r4{TEMP_SUFFIX}"
    stale.write_bytes(b"\0" * 4096)
    live = graph_dir / f".other.json.{os.getpid()}.a1s2d3f4{TEMP_SUFFIX}"  # being written
    live.write_bytes(b"{")
    with lab(create_app(graph_dir)) as c:
        assert c.get("/data/graph-metadata.json").status_code == 200
    assert not stale.exists() and live.exists()
