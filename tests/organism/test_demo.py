"""``circuitlab demo`` runs the organism end to end and writes files the lab serves."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jsonschema
import pytest

from circuitlab.cli import main
from server.helpers import NEURONPEDIA_SCHEMA


def test_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "'Austin'" in out
    assert "Texas features at 'Dallas'" in out
    assert "target 'Sacramento'" in out
    assert "circuitlab serve --graph_file_dir" in out
    graph = json.loads((tmp_path / "graphs" / "organism-dallas.json").read_text())
    assert graph["metadata"]["slug"] == "organism-dallas"
    jsonschema.validate(graph, NEURONPEDIA_SCHEMA)  # uploads to Neuronpedia as it is
    clerps = [n.get("clerp", "") for n in graph["nodes"]]
    assert any("Texas (state)" in c for c in clerps)
    assert (tmp_path / "features" / "index.json.gz").is_file()
    meta = json.loads((tmp_path / "graphs" / "graph-metadata.json").read_text())
    assert any(g["slug"] == "organism-dallas" for g in meta["graphs"])


def test_demo_serve_opens_a_lab_that_can_trace_with_the_organism(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-m", "circuitlab", "demo", "--out", str(tmp_path)]
    proc = subprocess.Popen([*argv, "--serve", "--port", str(port)], stdout=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        info = None
        for _ in range(300):
            try:
                info = httpx.get(f"{base}/api/info").json()
                break
            except httpx.TransportError:
                assert proc.poll() is None, "the demo exited before serving"
                time.sleep(0.2)
        assert info is not None and info["tracing"] and info["models"] == ["organism"]
        body = {"prompt": "Fact: the capital of the state containing Houston is", "slug": "h"}
        job = httpx.post(f"{base}/api/trace", json=body).json()["job"]
        for _ in range(300):
            jobs = httpx.get(f"{base}/api/jobs").json()["jobs"]
            status = next(j["status"] for j in jobs if j["id"] == job["id"])
            if status in ("done", "error"):
                break
            time.sleep(0.2)
        assert status == "done"
        assert (tmp_path / "graphs" / "h.json").is_file()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
