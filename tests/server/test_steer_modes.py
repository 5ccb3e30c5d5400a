"""The page's steering runs the CLI's intervention modes: on the shipped organism, the server's
answer in a mode equals the library's and the CLI's in that mode, and names the mode."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import torch
from fastapi.testclient import TestClient

from circuitlab.attribution import attribute
from circuitlab.cli import main
from circuitlab.graph.export import create_graph_files
from circuitlab.interventions import node_interventions
from circuitlab.organism import (
    DALLAS_PROMPT,
    load_organism,
    organism_paths,
    shipped_state_features,
    state_swap,
)
from circuitlab.replacement import ReplacementModel
from circuitlab.server import Tracer, create_app


@pytest.fixture(scope="module")
def organism() -> ReplacementModel:
    return load_organism()


@pytest.fixture(scope="module")
def texas(organism: ReplacementModel) -> list[str]:
    """The node ids of the demo's Texas features at "Dallas": what its swap sets to 0."""
    assert organism.tokenizer is not None
    ids = organism.ensure_tokenized(DALLAS_PROMPT).tolist()
    pos = organism.tokenizer.convert_ids_to_tokens(ids).index("Dallas")
    swap = state_swap(shipped_state_features(organism_paths()), pos, "Texas", "California")
    return [f"{iv.layer}_{iv.feature}_{pos}" for iv in swap if iv.value == 0.0]


@pytest.fixture(scope="module")
def client(
    organism: ReplacementModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    folder = tmp_path_factory.mktemp("steer-modes")
    graph = attribute(organism, DALLAS_PROMPT)
    create_graph_files(graph, "dallas", folder, tokenizer=organism.tokenizer)
    graph.save(folder / "dallas.safetensors")
    tracer = Tracer({"organism": organism}, folder)
    with TestClient(create_app(folder, tracer=tracer), base_url="http://127.0.0.1") as c:
        yield c


def _austin(organism: ReplacementModel, constrained: range | None, ivs: list) -> float:
    assert organism.tokenizer is not None
    austin = organism.tokenizer("Austin", add_special_tokens=False).input_ids[0]
    logits = organism.feature_intervention(
        DALLAS_PROMPT, ivs, constrained_layers=constrained, return_activations=False
    ).logits[-1]
    return float(torch.softmax(logits.float(), -1)[austin])


def _steer(c: TestClient, ids: list[str], **mode: object) -> dict:
    body = {"slug": "dallas", "node_ids": ids, "value": 0, "max_new_tokens": 0, **mode}
    r = c.post("/api/steer", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _p(side: dict, token: str) -> float:
    return next(t["prob"] for t in side["top"] if t["token"] == token)


@pytest.mark.parametrize(
    "fields, layers, name",
    [
        ({}, None, "iterative"),
        ({"constrained_layers": "0-1"}, range(0, 2), "constrained"),
        ({"constrained_layers": [0, 1]}, range(0, 2), "constrained"),
        ({"constrained_layers": "all"}, range(0, 4), "direct"),
    ],
)
def test_the_server_steers_in_the_mode_asked_as_the_library_does(
    client: TestClient,
    organism: ReplacementModel,
    texas: list[str],
    fields: dict,
    layers: range | None,
    name: str,
) -> None:
    out = _steer(client, texas, **fields)
    assert out["mode"]["name"] == name
    assert out["mode"]["constrained_layers"] == (None if layers is None else list(layers))
    want = _austin(organism, layers, node_interventions(texas, value=0.0))
    assert _p(out["steered"], "Austin") == pytest.approx(want, abs=1e-6)
    assert _p(out["original"], "Austin") == pytest.approx(_austin(organism, None, []), abs=1e-6)


def test_constrained_steering_lowers_austin_as_the_demos_cli_experiment_does(
    client: TestClient, texas: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = _steer(client, texas, constrained_layers="0-1")
    assert out["mode"]["label"] == "constrained to layers 0-1, attention frozen"
    before, after = _p(out["original"], "Austin"), _p(out["steered"], "Austin")
    assert after < before / 2  # 0.865 -> 0.096
    paths = organism_paths()
    argv = ["intervene", "-m", str(paths.model), "-t", str(paths.transcoders)]
    argv += ["-p", DALLAS_PROMPT, "--target", "Austin", "--nodes", *texas, "--node-value", "0"]
    assert main([*argv, "--constrained-layers", "0-1"]) == 0
    m = re.search(r"target 'Austin': .* p (\d\.\d+) -> (\d\.\d+)", capsys.readouterr().out)
    assert m, "the CLI printed no target line"
    assert (float(m[1]), float(m[2])) == (round(before, 3), round(after, 3))


def test_a_mode_the_interventions_cannot_act_in_is_refused(
    client: TestClient, texas: list[str]
) -> None:
    r = client.post(
        "/api/steer",
        json={"slug": "dallas", "node_ids": texas, "value": 0, "constrained_layers": "2-3"},
    )
    assert r.status_code == 400 and "no effect" in r.json()["detail"]
    for bad in ("9", "1-0", "x", [7]):
        body = {"slug": "dallas", "node_ids": texas, "value": 0, "constrained_layers": bad}
        assert client.post("/api/steer", json=body).status_code in (400, 422), bad
