"""Steering from the page's API: set or scale graph nodes, compare logits and continuations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from circuitlab.server import Tracer, create_app

from .helpers import LabClient
from conftest import build  # pyright: ignore[reportAttributeAccessIssue]  (tests/conftest.py)


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("steer")
    tracer = Tracer({"tiny": build("llama")}, folder)
    job = tracer.wait(tracer.submit("the capital of", slug="cap").id, timeout=120)
    assert job.status == "done", job.error
    data = json.loads((folder / "cap.json").read_text())
    features = [
        n["node_id"] for n in data["nodes"] if n["feature_type"] == "cross layer transcoder"
    ]
    yield folder, tracer, features
    tracer.close()


def test_steering_changes_the_next_token_distribution(
    traced: tuple[Path, Tracer, list[str]],
) -> None:
    folder, tracer, features = traced
    with LabClient(create_app(folder, tracer=tracer)) as c:
        assert c.get("/api/info").json()["steering"] is True
        r = c.post(
            "/api/steer",
            json={"slug": "cap", "node_ids": features[:3], "scale": 20.0, "max_new_tokens": 3},
        )
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["n_interventions"] >= 1
        before, after = out["original"]["top"], out["steered"]["top"]
        assert len(before) == len(after) == 8
        assert [t["prob"] for t in before] != [t["prob"] for t in after]
        assert isinstance(out["steered"]["completion"], str)
        ablate = c.post("/api/steer", json={"slug": "cap", "node_ids": ["0_-1_1"], "value": 0})
        assert ablate.status_code == 200, ablate.text  # error nodes can be set too


@pytest.mark.parametrize(
    "body, status",
    [
        ({"slug": "cap", "node_ids": []}, 422),
        ({"slug": "cap", "node_ids": ["E_3_1"]}, 400),
        ({"slug": "cap", "node_ids": ["3_5_2"]}, 400),  # a logit node
        ({"slug": "cap", "node_ids": [1]}, 422),
        ({"slug": "cap", "node_ids": ["0_1_1"], "value": "big"}, 422),
        ({"slug": "cap", "node_ids": ["0_1_1"], "value": 1, "scale": 2}, 422),
        ({"slug": "../x", "node_ids": ["0_1_1"]}, 422),
        ({"slug": "nope", "node_ids": ["0_1_1"]}, 404),
    ],
)
def test_bad_steering_requests_are_refused(
    traced: tuple[Path, Tracer, list[str]], body: dict, status: int
) -> None:
    folder, tracer, _ = traced
    with LabClient(create_app(folder, tracer=tracer)) as c:
        assert c.post("/api/steer", json=body).status_code == status
