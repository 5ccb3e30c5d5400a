"""The heads view's backend: analysis, patching and path patching streamed over a websocket,
presets, bad requests, graph prompts, cancellation."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from circuitlab.graph.export import create_graph_files
from circuitlab.heads import LabModel, Target, path_patch
from circuitlab.models.tiny import tiny_model
from circuitlab.server import build_app, create_app
from circuitlab.server.heads import HeadsLab, StreamCancelled

from .helpers import LabClient, small_graph
from conftest import build  # pyright: ignore[reportAttributeAccessIssue]  (tests/conftest.py)


@pytest.fixture(scope="module")
def heads() -> HeadsLab:
    return HeadsLab.from_replacement_models({"tiny": build("llama", n_layers=2)})


@pytest.fixture
def client(heads: HeadsLab, tmp_path: Path):
    graph = small_graph()
    create_graph_files(graph, "small", tmp_path, 1.0, 1.0)
    graph.save(tmp_path / "small.safetensors")
    heads.graph_dir = tmp_path
    with LabClient(create_app(tmp_path, heads=heads)) as c:
        yield c


def run(ws: Any, request: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    ws.send_json(request)
    accepted = ws.receive_json()
    assert accepted["type"] == "accepted"
    events = []
    while (msg := ws.receive_json())["type"] != "end":
        assert msg["type"] == "heads" and msg["run"] == accepted["run"]
        events.append(msg)
    return events, msg


def test_analysis_streams_layer_by_layer(client: TestClient) -> None:
    assert client.get("/api/info").json()["heads_models"] == ["tiny"]
    with client.websocket_connect("/api/heads/ws") as ws:
        events, end = run(ws, {"type": "analysis", "prompt": "the capital of", "answer": "France"})
    assert end["status"] == "done", end
    assert [e["event"] for e in events] == ["start", "layer", "layer", "done"]
    start = events[0]
    assert start["tokens"][1:] == ["the", "capital", "of"] and start["n_heads"] >= 1
    assert start["target"]["answer"] == "France"
    head = events[1]["heads"][0]
    assert len(head["pattern"]) == 4 and head["class"] and "induction" in head["scores"]


def test_analysis_of_a_graph_uses_its_tokens_and_the_probe_works(client: TestClient) -> None:
    with client.websocket_connect("/api/heads/ws") as ws:
        events, end = run(ws, {"type": "analysis", "slug": "small"})
        assert end["status"] == "done", end
        assert events[0]["token_ids"] == [0, 3, 4]  # small.safetensors' own tokens
        events, end = run(ws, {"type": "analysis", "probe": 5})
        assert end["status"] == "done" and len(events[0]["tokens"]) == 11  # bos + 2 x 5


def test_patching_streams_each_kind_and_layer(client: TestClient) -> None:
    request = {
        "type": "patching",
        "clean": "the capital of France",
        "corrupted": "the capital of Texas",
        "answer": "Paris",
        "wrong": "Austin",
        "kinds": ["head", "resid"],
    }
    with client.websocket_connect("/api/heads/ws") as ws:
        events, end = run(ws, request)
    assert end["status"] == "done", end
    patches = [(e["kind"], e["layer"]) for e in events if e["event"] == "patch"]
    assert patches == [("head", 0), ("head", 1), ("resid", 0), ("resid", 1)]
    resid_last = next(e for e in events if e["event"] == "patch" and e["kind"] == "resid")
    assert resid_last["values"][4] == 1.0  # the whole residual at the differing token


@pytest.mark.parametrize(
    ("receivers", "inputs"), [("logits", None), (["1.0"], "q"), (["1.1"], "kv")]
)
def test_path_patching_streams_the_recovery_of_path_patch(
    client: TestClient, heads: HeadsLab, receivers: Any, inputs: str | None
) -> None:
    clean, corrupted = "the capital of France", "the capital of Texas"
    request = {
        "type": "path_patching",
        "clean": clean,
        "corrupted": corrupted,
        "answer": "Paris",
        "wrong": "Austin",
        "receivers": receivers,
    }
    if inputs:
        request["inputs"] = inputs
    with client.websocket_connect("/api/heads/ws") as ws:
        events, end = run(ws, request)
        assert end["status"] == "done", end
        _, end = run(ws, {**request, "receivers": ["7.0"]})  # a head the model does not have
        assert end["status"] == "failed" and "L7H0 does not exist" in end["error"], end
        _, end = run(ws, request)  # the socket lives on
        assert end["status"] == "done", end
    lab = heads.models["tiny"]
    recv = "logits" if receivers == "logits" else [(1, int(receivers[0][2:]))]
    want = path_patch(
        lab, clean, corrupted, Target("Paris", "Austin"), receivers=recv, inputs=inputs or "qkv"
    )
    assert [e["event"] for e in events] == ["start"] + ["path"] * lab.n_layers + ["done"]
    start = events[0]
    assert start["receivers"] == want.receivers.label() and start["n_heads"] == lab.n_heads
    assert start["clean_metric"] == round(want.clean_metric, 4)
    assert [e["layer"] for e in events[1:-1]] == list(range(lab.n_layers))
    grid = [e["values"] for e in events[1:-1]]
    assert grid == [[round(v, 4) for v in row] for row in want.recovery.tolist()]
    assert any(v != 0 for v in grid[0])  # layer-0 senders reach the receivers


@pytest.mark.parametrize(
    "request_, message",
    [
        ({"type": "nope"}, "unknown request type"),
        (["x"], "send"),
        ({"type": "analysis", "prompt": ""}, "prompt"),
        ({"type": "analysis", "prompt": "the " * 200}, "up to 128"),
        ({"type": "analysis", "prompt": "x", "wrong": "a"}, "needs an answer"),
        ({"type": "analysis", "prompt": "the capital", "answer": "capital of"}, "2 tokens"),
        ({"type": "analysis", "slug": "../x"}, "slug"),
        ({"type": "analysis", "slug": "missing"}, "no graph"),
        ({"type": "analysis", "probe": 1000}, "probe"),
        ({"type": "analysis", "prompt": "x", "model": "other"}, "unknown model"),
        ({"type": "patching", "clean": "the capital", "corrupted": "the"}, "same token length"),
        ({"type": "patching", "clean": "a", "corrupted": "b", "kinds": ["x"]}, "kinds"),
        ({"type": "path_patching", "clean": "a", "corrupted": "b", "receivers": "x"}, "LAYER.HEAD"),
        ({"type": "path_patching", "clean": "a", "corrupted": "b", "receivers": [1]}, "LAYER.HEAD"),
        ({"type": "path_patching", "clean": "a", "corrupted": "b", "receivers": ["9.0"]}, "exist"),
        (
            {"type": "path_patching", "clean": "a", "corrupted": "b", "receivers": ["0.1"]},
            "layer 0",
        ),
        (
            {
                "type": "path_patching",
                "clean": "a",
                "corrupted": "b",
                "receivers": ["1.0"],
                "inputs": "x",
            },
            "q, k, v",
        ),
        (
            {"type": "path_patching", "clean": "the capital", "corrupted": "the"},
            "same token length",
        ),
    ],
)
def test_bad_requests_end_with_one_line(client: TestClient, request_: Any, message: str) -> None:
    with client.websocket_connect("/api/heads/ws") as ws:
        _, end = run(ws, request_)
        assert end["status"] == "failed" and message in end["error"], end
        _, end = run(ws, {"type": "analysis", "probe": 3})  # the socket lives on
        assert end["status"] == "done"


def test_presets_are_built_for_the_model(client: TestClient) -> None:
    presets = {p["name"]: p for p in client.get("/api/heads/presets").json()["presets"]}
    assert {"ioi", "induction", "factual"} <= set(presets)
    ioi = presets["ioi"]
    assert ioi["answer"] == " Mary" and ioi["roles"] and ioi["circuit"]


def test_presets_say_whether_they_fit_the_models_vocabulary(client: TestClient) -> None:
    """The tiny word-level tokenizer knows neither name of IOI: the preset says so instead of
    failing once run."""
    presets = {p["name"]: p for p in client.get("/api/heads/presets").json()["presets"]}
    ioi = presets["ioi"]
    assert ioi["fits"] is False and "vocabulary" in ioi["why"] and "'Mary'" in ioi["why"]


def test_a_preset_fits_a_tokenizer_that_knows_its_words() -> None:
    from circuitlab.heads.presets import PRESETS, unfit_reason

    from conftest import word_tokenizer  # pyright: ignore[reportAttributeAccessIssue]

    built = PRESETS["induction"].build(None)
    tok = word_tokenizer("The cat sat on the mat rug .".split())
    assert unfit_reason(built, tok, 64) is None
    assert "beyond the model's vocabulary" in (unfit_reason(built, tok, 5) or "")
    short = word_tokenizer("The cat sat on the mat .".split())  # no 'rug'
    assert "'rug'" in (unfit_reason(built, short, 64) or "")
    assert "no tokenizer" in (unfit_reason(built, None, 64) or "")


def test_no_heads_model_means_no_heads_routes(tmp_path: Path) -> None:
    with LabClient(create_app(tmp_path)) as c:
        assert c.get("/api/info").json()["heads"] is False
        assert c.get("/api/heads/presets").status_code == 404
        with pytest.raises(Exception):  # noqa: B017 (closed with 1008)
            with c.websocket_connect("/api/heads/ws") as ws:
                ws.receive_json()


def test_other_origins_are_refused(client: TestClient) -> None:
    with pytest.raises(Exception):  # noqa: B017
        with client.websocket_connect(
            "/api/heads/ws", headers={"Origin": "http://evil.example"}
        ) as ws:
            ws.receive_json()


def test_a_cancelled_stream_stops_at_its_next_event(heads: HeadsLab) -> None:
    stop = threading.Event()
    seen: list[str] = []

    def send(event: dict[str, Any]) -> None:
        seen.append(event["event"])
        stop.set()  # cancel after the first event

    with pytest.raises(StreamCancelled):
        heads.run({"type": "analysis", "prompt": "the capital of"}, send, stop)
    assert seen == ["start"]
    assert not heads.locks["tiny"].locked()


def test_a_tracing_server_runs_heads_under_the_tracing_lock(tmp_path: Path) -> None:
    rm = build("llama", n_layers=2)
    app = build_app(tmp_path, models={"tiny": rm})
    try:
        assert app.state.heads.locks["tiny"] is app.state.tracer.model_lock("tiny")
        assert app.state.heads.models["tiny"].model is rm.model  # same weights, no copy
    finally:
        app.state.tracer.close()


def test_heads_models_alone_give_a_heads_only_server(tmp_path: Path) -> None:
    lab = LabModel.wrap(tiny_model("gpt2", n_layers=2))
    with LabClient(build_app(tmp_path, heads_models={"g": lab})) as c:
        info = c.get("/api/info").json()
        assert info["heads_models"] == ["g"] and info["tracing"] is False
        with c.websocket_connect("/api/heads/ws") as ws:
            events, end = run(ws, {"type": "analysis", "probe": 4})
        assert end["status"] == "done" and len(events) == 2 + 2
