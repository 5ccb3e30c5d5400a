"""Tracing jobs: a prompt becomes a graph file; one job at a time per model; cancel; websocket."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from circuitlab.server import Job, Progress, Tracer, create_app

from .helpers import LabClient, small_graph
from conftest import build  # pyright: ignore[reportAttributeAccessIssue]  (tests/conftest.py)


@pytest.fixture(scope="module")
def tiny_model():
    return build("llama", n_layers=2, d_model=16, d_transcoder=32)


def test_a_traced_prompt_becomes_a_graph_file(tiny_model, tmp_path: Path) -> None:
    tracer = Tracer({"tiny": tiny_model}, tmp_path)
    events: list[dict] = []
    tracer.subscribe(events.append)
    job = tracer.submit("the capital of", ["France"], slug="capital")
    done = tracer.wait(job.id, timeout=120)
    tracer.close()
    assert done.status == "done", done.error
    data = json.loads((tmp_path / "capital.json").read_text())
    assert data["metadata"]["prompt_tokens"][-1].strip() == "of"
    logits = [n["clerp"] for n in data["nodes"] if n["feature_type"] == "logit"]
    assert len(logits) == 1 and logits[0].startswith('Output "France" (p=')
    assert (tmp_path / "capital.safetensors").is_file()
    phases = [e["phase"] for e in events if e["status"] == "running"]
    assert "sources" in phases and "feature rows" in phases  # progress followed the engine
    assert events[-1]["status"] == "done" and events[-1]["progress"] == 1.0


def test_one_job_runs_at_a_time_per_model_and_queued_jobs_cancel(tmp_path: Path) -> None:
    started, release = threading.Event(), threading.Event()
    running = []

    def slow(_model: object, job: Job, progress: Progress):
        running.append(job.id)
        assert len(running) - len(finished) == 1  # never two at once
        started.set()
        release.wait(10)
        progress.update("feature rows", 0.5)
        finished.append(job.id)
        return small_graph()

    finished: list[str] = []
    tracer = Tracer({"m": object()}, tmp_path, run_fn=slow)
    a = tracer.submit("first")
    assert started.wait(10)
    b = tracer.submit("second")
    c = tracer.submit("third")
    statuses = {j["id"]: j["status"] for j in tracer.jobs()}
    assert statuses == {a.id: "running", b.id: "queued", c.id: "queued"}
    tracer.cancel(b.id)
    release.set()
    assert tracer.wait(a.id).status == "done"
    assert tracer.wait(c.id).status == "done"
    assert tracer.get(b.id).status == "cancelled"  # type: ignore[union-attr]
    assert finished == [a.id, c.id]
    tracer.close()


def test_a_running_job_stops_at_its_next_step_when_cancelled(tmp_path: Path) -> None:
    started, release = threading.Event(), threading.Event()

    def slow(_model: object, job: Job, progress: Progress):
        started.set()
        release.wait(10)
        progress.update("feature rows", 0.5)  # raises JobCancelled
        raise AssertionError("not reached")

    tracer = Tracer({"m": object()}, tmp_path, run_fn=slow)
    job = tracer.submit("x", slug="never")
    assert started.wait(10)
    tracer.cancel(job.id)
    release.set()
    assert tracer.wait(job.id).status == "cancelled"
    assert not (tmp_path / "never.json").exists()
    tracer.close()


def test_progress_publishes_phases_and_last_rows_but_throttles_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Progress, "min_interval", 1e9)  # nothing is published for its time
    published: list[tuple[str, int]] = []
    job = Job(id="j", model="m", prompt="p", targets=[], slug="s")
    progress = Progress(job, lambda j: published.append((j.phase, j.done)))
    for phase in ("forward", "sources"):
        progress.attribution(phase, 0, 1)
    for done in range(1, 1001):
        progress.attribution("feature rows", done, 1000)
    assert published == [
        ("forward", 0),
        ("sources", 0),
        ("feature rows", 1),
        ("feature rows", 1000),
    ]


def test_cancel_stops_a_real_attribution_within_a_batch_and_the_next_job_runs(
    tiny_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Progress, "min_interval", 0.0)  # see every one-row batch
    tracer = Tracer({"tiny": tiny_model}, tmp_path, attribute_kwargs={"batch_size": 1})
    seen: list[dict] = []
    state = {"cancelled_at": 0}

    def follow(event: dict) -> None:
        seen.append(event)
        if event["phase"] == "feature rows" and event["done"] >= 1 and not state["cancelled_at"]:
            state["cancelled_at"] = event["done"]
            tracer.cancel(event["id"])  # from the worker thread, mid-phase

    tracer.subscribe(follow)
    job = tracer.submit("the capital of", slug="stopped")
    assert tracer.wait(job.id, timeout=120).status == "cancelled"
    rows = [e for e in seen if e["id"] == job.id and e["phase"] == "feature rows"]
    # the next one-row batch raised: nothing was reported past the row where cancel came
    assert rows[-1]["done"] == state["cancelled_at"] < rows[-1]["total"]
    assert not (tmp_path / "stopped.json").exists()
    assert not [j for j in tracer.jobs() if j["status"] in ("queued", "running")]
    again = tracer.wait(tracer.submit("the capital of", slug="after").id, timeout=120)
    assert again.status == "done", again.error
    assert (tmp_path / "after.json").is_file()
    progress = [e["progress"] for e in seen if e["id"] == again.id]
    assert progress == sorted(progress) and progress[-1] == 1.0
    tracer.close()


def test_failures_are_reported_and_the_worker_survives(tiny_model, tmp_path: Path) -> None:
    tracer = Tracer({"tiny": tiny_model}, tmp_path)
    bad = tracer.wait(tracer.submit("the capital of", ["not one token"]).id, timeout=120)
    assert bad.status == "failed" and bad.error
    good = tracer.wait(tracer.submit("the capital of").id, timeout=120)
    assert good.status == "done", good.error
    tracer.close()


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"prompt": ""}, 422, "prompt"),
        ({"prompt": 3}, 422, "prompt"),
        ({"prompt": "x" * 5000}, 422, "at most 4000"),
        ({"prompt": "x", "targets": [1]}, 422, "targets"),
        ({"prompt": "x", "model": "other"}, 400, "unknown model"),
        ({"prompt": "x", "slug": "../up"}, 422, "slug"),
        (["x"], 422, "body"),
    ],
)
def test_bad_trace_requests_are_refused(
    tmp_path: Path, body: object, status: int, message: str
) -> None:
    tracer = Tracer({"m": object()}, tmp_path, run_fn=lambda *_: small_graph())
    with LabClient(create_app(tmp_path, tracer=tracer)) as c:
        r = c.post("/api/trace", json=body)
        assert r.status_code == status and message in r.json()["detail"]
        assert c.delete("/api/jobs/nope").status_code == 404


def test_jobs_are_followed_over_the_websocket(tmp_path: Path) -> None:
    tracer = Tracer({"m": object()}, tmp_path, run_fn=lambda *_: small_graph())
    with LabClient(create_app(tmp_path, tracer=tracer)) as c:
        with c.websocket_connect("/api/ws") as ws:
            assert ws.receive_json() == {"type": "jobs", "jobs": []}
            job = c.post("/api/trace", json={"prompt": "hello", "slug": "hi"}).json()["job"]
            seen = []
            while not seen or seen[-1]["status"] != "done":
                msg = ws.receive_json()
                assert msg["type"] == "job" and msg["job"]["id"] == job["id"]
                seen.append(msg["job"])
        assert c.get("/api/jobs").json()["jobs"][0]["status"] == "done"
        assert c.get("/data/hi.json").status_code == 200
        assert "hi" in [g["slug"] for g in c.get("/data/graph-metadata.json").json()["graphs"]]


def test_websockets_from_other_origins_are_refused(tmp_path: Path) -> None:
    tracer = Tracer({"m": object()}, tmp_path, run_fn=lambda *_: small_graph())
    with LabClient(create_app(tmp_path, tracer=tracer)) as c:
        with pytest.raises(Exception):  # noqa: B017 (the close code is what matters)
            with c.websocket_connect("/api/ws", headers={"Origin": "http://evil.example"}) as ws:
                ws.receive_json()
