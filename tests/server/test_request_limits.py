"""Bounded work and typed bodies: a feature cap, a bounded queue, the model's context, and a 422
naming the field for a body that does not fit (deep nesting, NaN, Infinity, wrong types)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from circuitlab.graph import Graph
from circuitlab.server import Job, Progress, Tracer, build_app, create_app
from circuitlab.server.jobs import DEFAULT_MAX_FEATURE_NODES, DEFAULT_MAX_PENDING

from .helpers import small_graph
from conftest import build  # pyright: ignore[reportAttributeAccessIssue]  (tests/conftest.py)

ORIGIN = "http://127.0.0.1"  # the lab's own page on a loopback bind


def lab(app: object) -> TestClient:
    return TestClient(app, base_url=ORIGIN)  # type: ignore[arg-type]


def post_raw(c: TestClient, url: str, text: str):
    return c.post(url, content=text, headers={"Content-Type": "application/json"})


@pytest.fixture(scope="module")
def tiny_model():
    return build("llama", n_layers=2, d_model=16, d_transcoder=32)


@pytest.fixture
def blocked(tmp_path: Path) -> Iterator[tuple[Tracer, threading.Event, threading.Event]]:
    """A tracer whose jobs wait for ``release`` (``started`` is set by the first)."""
    started, release = threading.Event(), threading.Event()

    def slow(_model: object, _job: Job, _progress: Progress) -> Graph:
        started.set()
        release.wait(30)
        return small_graph()

    tracer = Tracer({"m": object()}, tmp_path, run_fn=slow)
    yield tracer, started, release
    release.set()
    tracer.close()


def test_a_single_target_string_is_one_target(tmp_path: Path) -> None:
    tracer = Tracer({"m": object()}, tmp_path, run_fn=lambda *_: small_graph())
    with lab(create_app(tmp_path, tracer=tracer)) as c:
        r = c.post("/api/trace", json={"prompt": "capital of Texas", "targets": "Austin"})
        assert r.status_code == 200, r.text
        assert r.json()["job"]["targets"] == ["Austin"]  # not ["A", "u", "s", "t", "i", "n"]
        assert tracer.submit("x", "Austin").targets == ["Austin"]


def test_page_traces_are_capped_at_a_feature_count(tiny_model, tmp_path: Path) -> None:
    app = build_app(tmp_path, models={"tiny": tiny_model}, attribute_kwargs={"batch_size": 64})
    assert app.state.tracer.attribute_kwargs["max_feature_nodes"] == DEFAULT_MAX_FEATURE_NODES
    assert app.state.tracer.max_pending == DEFAULT_MAX_PENDING
    app.state.tracer.close()
    app = build_app(tmp_path, models={"tiny": tiny_model}, max_feature_nodes=100, max_pending=2)
    assert app.state.tracer.attribute_kwargs["max_feature_nodes"] == 100
    assert app.state.tracer.max_pending == 2
    app.state.tracer.close()
    # ``serve``'s flag default (None) means the default cap, not no cap
    t = Tracer({"tiny": tiny_model}, tmp_path, attribute_kwargs={"max_feature_nodes": None})
    assert t.attribute_kwargs["max_feature_nodes"] == DEFAULT_MAX_FEATURE_NODES
    t.close()
    tracer = Tracer({"tiny": tiny_model}, tmp_path, max_feature_nodes=3)
    job = tracer.wait(tracer.submit("the capital of Texas is", slug="capped").id, timeout=120)
    tracer.close()
    assert job.status == "done", job.error
    assert Graph.load(tmp_path / "capped.safetensors").selected_features.numel() <= 3


def test_a_full_queue_answers_busy(blocked: tuple[Tracer, threading.Event, threading.Event]):
    tracer, started, release = blocked
    with lab(create_app(tracer.graph_dir, tracer=tracer)) as c:
        assert c.post("/api/trace", json={"prompt": "first"}).status_code == 200
        assert started.wait(10)  # running: no longer waiting
        for i in range(DEFAULT_MAX_PENDING):
            assert c.post("/api/trace", json={"prompt": f"p{i}"}).status_code == 200
        r = c.post("/api/trace", json={"prompt": "one too many"})
        assert r.status_code == 503 and "busy" in r.json()["detail"]
        assert r.headers["Retry-After"]
        assert len(c.get("/api/jobs").json()["jobs"]) == DEFAULT_MAX_PENDING + 1
        release.set()


def test_prompts_longer_than_the_context_are_refused(tiny_model, tmp_path: Path) -> None:
    tracer = Tracer({"tiny": tiny_model}, tmp_path)
    with lab(create_app(tmp_path, tracer=tracer)) as c:
        r = c.post("/api/trace", json={"prompt": "the " * 300})  # 301 tokens with the BOS
        assert r.status_code == 422
        detail = r.json()["detail"]
        assert "prompt" in detail and "301" in detail and "256" in detail
        assert c.get("/api/jobs").json()["jobs"] == []


@pytest.mark.parametrize(
    "body, field",
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": 3}, "prompt"),
        ({"prompt": "x" * 5000}, "prompt"),
        ({"prompt": "x", "targets": [1]}, "targets[0]"),
        ({"prompt": "x", "targets": [""]}, "targets"),
        ({"prompt": "x", "targets": ["a"] * 17}, "targets"),
        ({"prompt": "x", "slug": "../up"}, "slug"),
        ({"prompt": "x", "model": 7}, "model"),
        (["x"], "body"),
    ],
)
def test_bad_trace_bodies_name_the_field(tmp_path: Path, body: object, field: str) -> None:
    tracer = Tracer({"m": object()}, tmp_path, run_fn=lambda *_: small_graph())
    with lab(create_app(tmp_path, tracer=tracer)) as c:
        r = c.post("/api/trace", json=body)
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith(f"{field}:"), r.json()["detail"]
    tracer.close()


@pytest.fixture
def steering(graph_dir: Path) -> Iterator[TestClient]:
    tracer = Tracer({"m": object()}, graph_dir, run_fn=lambda *_: small_graph())
    with lab(create_app(graph_dir, tracer=tracer)) as c:
        yield c
    tracer.close()


@pytest.mark.parametrize(
    "text, field",
    [
        ('{"slug": "small", "node_ids": ["0_0_1"], "max_new_tokens": Infinity}', "max_new_tokens"),
        ('{"slug": "small", "node_ids": ["0_0_1"], "max_new_tokens": 1e999}', "max_new_tokens"),
        ('{"slug": "small", "node_ids": ["0_0_1"], "max_new_tokens": 100000}', "max_new_tokens"),
        ('{"slug": "small", "node_ids": ["0_0_1"], "max_new_tokens": 2.5}', "max_new_tokens"),
        ('{"slug": "small", "node_ids": ["0_0_1"], "value": NaN}', "value"),
        ('{"slug": "small", "node_ids": ["0_0_1"], "scale": -Infinity}', "scale"),
        ('{"slug": "small", "node_ids": ["0_0_1"], "value": "big"}', "value"),
        ('{"slug": "small", "node_ids": ["0_0_1"], "value": true}', "value"),
        ('{"slug": "small", "node_ids": ["0_0_1"], "value": 1, "scale": 2}', "body"),
        ('{"slug": "small", "node_ids": []}', "node_ids"),
        ('{"slug": "small", "node_ids": [1]}', "node_ids[0]"),
        ('{"slug": "../x", "node_ids": ["0_0_1"]}', "slug"),
        ('{"node_ids": ["0_0_1"]}', "slug"),
    ],
)
def test_bad_steering_bodies_name_the_field(steering: TestClient, text: str, field: str):
    r = post_raw(steering, "/api/steer", text)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"{field}:"), r.json()["detail"]


def test_deeply_nested_json_is_refused_not_a_crash(client: TestClient, graph_dir: Path) -> None:
    before = (graph_dir / "small.json").read_bytes()
    for depth in (100_000, 40):
        text = '{"qParams": {"deep": ' + "[" * depth + "]" * depth + "}}"
        r = post_raw(client, "/save_graph/small", text)
        assert r.status_code == 422, r.text
        assert "nested deeper" in r.json()["detail"]
    assert (graph_dir / "small.json").read_bytes() == before


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_never_saved(client: TestClient, graph_dir: Path, number: str):
    before = (graph_dir / "small.json").read_bytes()
    text = '{"qParams": {"pruningThreshold": NUMBER, "pinnedIds": []}}'.replace("NUMBER", number)
    r = post_raw(client, "/save_graph/small", text)
    assert r.status_code == 422
    assert r.json()["detail"].startswith("qParams.pruningThreshold:")
    text = '{"qParams": {"sg_pos": {"a": [NUMBER]}}}'.replace("NUMBER", number)
    r = post_raw(client, "/save_graph/small", text)
    assert r.status_code == 422 and r.json()["detail"].startswith("qParams.sg_pos.a[0]:")
    assert (graph_dir / "small.json").read_bytes() == before
    json.loads(before, parse_constant=lambda c: pytest.fail(f"bare {c} in the graph file"))


@pytest.mark.parametrize(
    "qparams, field",
    [
        ({"pinnedIds": [1]}, "qParams.pinnedIds"),
        ({"supernodes": [["label", 3]]}, "qParams.supernodes"),
        ({"clickedId": None}, "qParams.clickedId"),
        ({"nodeLabels": []}, "qParams.nodeLabels"),
    ],
)
def test_bad_annotation_fields_are_named(client: TestClient, qparams: dict, field: str) -> None:
    r = client.post("/save_graph/small", json={"qParams": qparams})
    assert r.status_code == 422 and r.json()["detail"].startswith(f"{field}"), r.json()
