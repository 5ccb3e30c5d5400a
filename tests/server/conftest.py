"""Fixtures for the server tests: a graph folder, a dashboard store, a test client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from circuitlab.graph.export import create_graph_files
from circuitlab.server import create_app

from .helpers import (
    LabClient,
    circuit_tracer_graph,
    feature_record,
    small_graph,
    write_feature_store,
)


@pytest.fixture
def graph_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "graphs"
    create_graph_files(small_graph(), "small", folder, 1.0, 1.0)
    import json

    (folder / "ct-graph.json").write_text(json.dumps(circuit_tracer_graph()))
    return folder


@pytest.fixture
def features_dir(tmp_path: Path) -> Path:
    records = {0: {0: feature_record(0, 0), 4: feature_record(0, 4)}, 1: {1: feature_record(1, 1)}}
    write_feature_store(tmp_path / "transcoders", records, 8)
    return tmp_path / "transcoders"


@pytest.fixture
def client(graph_dir: Path, features_dir: Path) -> Iterator[TestClient]:
    with LabClient(create_app(graph_dir, features_dir)) as c:
        yield c
