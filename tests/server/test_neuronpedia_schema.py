"""Graph files follow the constraints of Neuronpedia's published graph schema (restated in
``helpers.NEURONPEDIA_SCHEMA``), so they upload there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import torch

from circuitlab.attribution import attribute
from circuitlab.graph.export import create_graph_files

from .helpers import NEURONPEDIA_SCHEMA, small_graph
from conftest import PROMPT, build  # pyright: ignore[reportAttributeAccessIssue]  (tests/conftest.py)


def _check(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    jsonschema.validate(data, NEURONPEDIA_SCHEMA)
    return data


def test_a_hand_built_graph_file_follows_the_schema(tmp_path: Path) -> None:
    create_graph_files(small_graph(), "small", tmp_path)
    _check(tmp_path / "small.json")


@pytest.mark.parametrize("max_feature_nodes", [None, 5])
def test_attributed_graph_files_follow_the_schema(
    tmp_path: Path, max_feature_nodes: int | None
) -> None:
    """An uncapped graph used to write ``max_feature_nodes: null`` (the schema wants an integer)."""
    model = build("llama", dtype=torch.float32)
    graph = attribute(model, PROMPT, max_feature_nodes=max_feature_nodes, batch_size=16)
    create_graph_files(graph, "g", tmp_path)
    data = _check(tmp_path / "g.json")
    settings = data["metadata"]["generation_settings"]
    assert settings.get("max_feature_nodes") == max_feature_nodes
    assert settings["batch_size"] == 16
