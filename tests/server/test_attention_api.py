"""Attention results from the lab's API: head loadings, QK attributions and flows of a traced
graph equal the library's; bad requests get clear 4xx answers; the second ask is cached;
precomputed results in the graph file keep the Neuronpedia schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import torch

from circuitlab.attention import (
    FrozenPrompt,
    add_attention_results,
    path_head_loadings,
    qk_attribution,
)
from circuitlab.attention.records import qk_key
from circuitlab.graph import Graph
from circuitlab.server import Tracer, create_app

from .helpers import NEURONPEDIA_SCHEMA, LabClient
from conftest import build  # pyright: ignore[reportAttributeAccessIssue]  (tests/conftest.py)


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("attention")
    tracer = Tracer({"tiny": build("llama", n_layers=3)}, folder)
    job = tracer.wait(tracer.submit("the capital of the state", slug="cap").id, timeout=120)
    assert job.status == "done", job.error
    yield folder, tracer
    tracer.close()


def _cross_edge(folder: Path) -> tuple[str, str, float]:
    """The strongest link of the graph file from an earlier position to a feature."""
    data = json.loads((folder / "cap.json").read_text())
    for link in sorted(data["links"], key=lambda x: -abs(x["weight"])):
        s, t = link["source"], link["target"]
        if not t.startswith("E_") and t.split("_")[1] != "-1":
            if int(s.rsplit("_", 1)[1]) < int(t.split("_")[2]):
                return s, t, link["weight"]
    raise AssertionError("no cross-position edge")


def test_loadings_and_qk_equal_the_library_and_are_cached(traced: tuple[Path, Tracer]) -> None:
    folder, tracer = traced
    src, tgt, weight = _cross_edge(folder)
    rm = tracer.models["tiny"]
    fp = FrozenPrompt.build(rm, Graph.load(folder / "cap.safetensors"))
    with LabClient(create_app(folder, tracer=tracer)) as c:
        assert c.get("/api/info").json()["attention"] is True
        body = {"slug": "cap", "edges": [[src, tgt]]}
        first = c.post("/api/attention/loadings", json=body)
        assert first.status_code == 200, first.text
        assert first.json()["cached"] is False
        got = first.json()["result"]
        want = path_head_loadings(rm, fp, src, tgt)
        assert got["edge"] == pytest.approx(want.edge, rel=1e-9)
        assert got["edge"] == pytest.approx(weight, rel=1e-4)
        heads = torch.tensor(got["heads"], dtype=torch.float64)
        torch.testing.assert_close(heads, want.heads, rtol=1e-9, atol=1e-12)
        assert got["bypass"] == pytest.approx(want.bypass.tolist(), rel=1e-9, abs=1e-12)
        assert [tuple(t) for t in got["top"]][:3] == [pytest.approx(t) for t in want.top_heads(3)]
        again = c.post("/api/attention/loadings", json=body).json()
        assert again == {"result": got, "cached": True}
        assert c.app.state.attention.hits == 1  # type: ignore[attr-defined]

        q = {"slug": "cap", "layer": 1, "head": 1, "query_pos": -1, "key_pos": 2, "top_k": 5}
        r = c.post("/api/attention/qk", json=q)
        assert r.status_code == 200, r.text
        res = r.json()["result"]
        lib = qk_attribution(rm, fp, 1, 1, -1, 2, top_k=5)
        assert res["total"] == pytest.approx(lib.total, rel=1e-9)
        assert [p[:2] for p in res["pairs"]] == [[p.query_node, p.key_node] for p in lib.pairs]
        assert [p[2] for p in res["pairs"]] == pytest.approx([p.value for p in lib.pairs])
        assert res["key_marginals"][0][0] == next(iter(lib.key_marginals))
        assert c.post("/api/attention/qk", json=q).json()["cached"] is True

        flows = c.post("/api/attention/flows", json={"slug": "cap", "n": 3}).json()["result"]
        assert len(flows) == 3 and all(f["query_pos"] == fp.n_pos - 1 for f in flows)
        assert flows[0]["weight"] >= flows[-1]["weight"]


@pytest.mark.parametrize(
    "path, body, status, words",
    [
        (
            "qk",
            {"slug": "cap", "layer": 9, "head": 0, "query_pos": -1, "key_pos": 0},
            400,
            "layer=9",
        ),
        (
            "qk",
            {"slug": "cap", "layer": 0, "head": 99, "query_pos": -1, "key_pos": 0},
            400,
            "head=99",
        ),
        ("qk", {"slug": "cap", "layer": 0, "head": 0, "query_pos": 1, "key_pos": 3}, 400, "after"),
        (
            "qk",
            {"slug": "cap", "layer": 0, "head": 0, "query_pos": 50, "key_pos": 0},
            400,
            "outside",
        ),
        (
            "qk",
            {"slug": "cap", "layer": "1", "head": 0, "query_pos": 1, "key_pos": 0},
            422,
            "layer",
        ),
        ("qk", {"slug": "nope", "layer": 0, "head": 0, "query_pos": 1, "key_pos": 0}, 404, "nope"),
        ("loadings", {"slug": "cap", "edges": [["0_999_1", "1_0_2"]]}, 400, "Unknown source"),
        ("loadings", {"slug": "cap", "edges": [["E_0_0", "9_9_9"]]}, 400, "Unknown target"),
        ("loadings", {"slug": "cap", "edges": []}, 422, "edges"),
        ("loadings", {"slug": "../x", "edges": [["a", "b"]]}, 422, "slug"),
        ("flows", {"slug": "cap", "query_pos": 99}, 400, "query_pos=99"),
        ("flows", {"slug": "cap", "n": 0}, 422, "n"),
    ],
)
def test_bad_attention_requests_get_clear_errors(
    traced: tuple[Path, Tracer], path: str, body: dict, status: int, words: str
) -> None:
    folder, tracer = traced
    with LabClient(create_app(folder, tracer=tracer)) as c:
        r = c.post(f"/api/attention/{path}", json=body)
        assert r.status_code == status, r.text
        assert words in r.json()["detail"]


def test_without_a_model_or_safetensors_the_answer_says_what_to_do(
    traced: tuple[Path, Tracer], tmp_path: Path
) -> None:
    folder, tracer = traced
    with LabClient(create_app(folder)) as c:
        r = c.post("/api/attention/flows", json={"slug": "cap"})
        assert r.status_code == 404 and "--model" in r.json()["detail"]
        assert c.get("/api/info").json()["attention"] is False
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "cap.json").write_text((folder / "cap.json").read_text())
    with LabClient(create_app(lone, tracer=tracer)) as c:
        r = c.post("/api/attention/flows", json={"slug": "cap"})
        assert r.status_code == 422 and "cap.safetensors" in r.json()["detail"]


def test_precomputed_results_keep_the_schema_and_match(
    traced: tuple[Path, Tracer], tmp_path: Path
) -> None:
    folder, tracer = traced
    rm = tracer.models["tiny"]
    graph = Graph.load(folder / "cap.safetensors")
    path = tmp_path / "cap.json"
    path.write_text((folder / "cap.json").read_text())
    add_attention_results(rm, graph, path, n_edges=3, n_flows=2, top_k=4)
    data = json.loads(path.read_text())
    jsonschema.validate(data, NEURONPEDIA_SCHEMA)
    att = data["attention"]
    assert len(att["flows"]) == 2 and len(att["loadings"]) >= 1
    f = att["flows"][0]
    rec = att["qk"][qk_key(f["layer"], f["head"], f["query_pos"], f["key_pos"])]
    lib = qk_attribution(rm, graph, f["layer"], f["head"], f["query_pos"], f["key_pos"], top_k=4)
    assert rec["total"] == pytest.approx(lib.total)
    assert [p[:2] for p in rec["pairs"]] == [[p.query_node, p.key_node] for p in lib.pairs]
    for key, loads in att["loadings"].items():
        src, tgt = key.split("->")
        assert loads["edge"] == pytest.approx(path_head_loadings(rm, graph, src, tgt).edge)
