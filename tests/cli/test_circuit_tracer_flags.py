"""circuit-tracer 0.5.0's command lines run on ``circuitlab``: ``attribute`` with ``--backend``,
``--lazy-decoder`` / ``--lazy-encoder`` and ``-o x.pt`` (a graph circuit-tracer reads), and
``start-server``, each with circuit-tracer's meaning (real tiny model, real server)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from circuitlab.cli import main
from circuitlab.graph import Graph, import_circuit_tracer_pt

PROMPT = "the capital of Texas is"
PEER = Path(os.environ.get("CIRCUITLAB_PEER_PYTHON", "/work/ct-venv/bin/python"))


def _attribute(tiny_dirs: tuple[Path, Path], *flags: str) -> int:
    model, tc = tiny_dirs
    return main(["attribute", "-p", PROMPT, "-t", str(tc), "-m", str(model), *flags])


def test_circuit_tracer_flags_give_circuitlabs_graph(
    tiny_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    native = tmp_path / "native.safetensors"
    assert _attribute(tiny_dirs, "-o", str(native)) == 0
    for backend in ("transformerlens", "nnsight"):
        out = tmp_path / f"{backend}.safetensors"
        flags = ["--backend", backend, "--lazy-decoder", "--lazy-encoder", "--dtype", "fp32"]
        assert _attribute(tiny_dirs, *flags, "-o", str(out)) == 0
        torch.testing.assert_close(
            Graph.load(out).adjacency_matrix, Graph.load(native).adjacency_matrix
        )


def test_pt_output_holds_the_graph_and_the_models_cfg(
    tiny_dirs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    native, pt = tmp_path / "g.safetensors", tmp_path / "g.pt"
    assert _attribute(tiny_dirs, "-o", str(native)) == 0
    assert _attribute(tiny_dirs, "--graph_output_path", str(pt)) == 0
    assert f"saved {pt}" in capsys.readouterr().out
    back, ours = import_circuit_tracer_pt(pt), Graph.load(native)
    torch.testing.assert_close(back.adjacency_matrix, ours.adjacency_matrix.float())
    assert torch.equal(back.selected_features, ours.selected_features)
    assert back.logit_targets == ours.logit_targets
    cfg = back.settings["cfg"]
    assert cfg["tokenizer_name"] == str(tiny_dirs[0]) and cfg["d_model"] == 16
    assert cfg["n_layers"] == 2 and cfg["original_architecture"] == "LlamaForCausalLM"


PEER_READ = r"""
import json, sys
from safetensors.torch import save_file
from circuit_tracer.graph import Graph
g = Graph.from_pt(sys.argv[1])
save_file({"adjacency": g.adjacency_matrix.contiguous(),
           "selected": g.selected_features.contiguous()}, sys.argv[2])
print(json.dumps({"input_string": g.input_string, "d_model": g.cfg.d_model,
                  "tokens": [t.token_str for t in g.logit_targets]}))
"""


def test_circuit_tracer_reads_the_pt_output(tiny_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    if not PEER.is_file():
        pytest.skip(f"circuit-tracer's venv python {PEER} is missing (set CIRCUITLAB_PEER_PYTHON)")
    pt, native = tmp_path / "g.pt", tmp_path / "g.safetensors"
    assert _attribute(tiny_dirs, "-o", str(pt)) == 0
    assert _attribute(tiny_dirs, "-o", str(native)) == 0
    read = subprocess.run(
        [str(PEER), "-c", PEER_READ, str(pt), str(tmp_path / "peer.safetensors")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert read.returncode == 0, read.stderr
    facts = json.loads(read.stdout.strip().splitlines()[-1])
    ours = Graph.load(native)
    peer = load_file(tmp_path / "peer.safetensors")
    torch.testing.assert_close(peer["adjacency"], ours.adjacency_matrix.float())
    assert torch.equal(peer["selected"], ours.selected_features)
    assert facts == {
        "input_string": ours.input_string,
        "d_model": 16,
        "tokens": [t.token_str for t in ours.logit_targets],
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_start_server_serves_the_graph_files(tiny_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    files = tmp_path / "graphs"
    assert _attribute(tiny_dirs, "--slug", "texas", "--graph_file_dir", str(files)) == 0
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "circuitlab", "start-server"]
        + ["--graph_file_dir", str(files), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/data/texas.json"
        for _ in range(300):  # the server starts in a few seconds on a loaded machine
            if server.poll() is not None:
                pytest.fail(f"start-server exited: {server.stderr.read() if server.stderr else ''}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    assert json.loads(r.read())["metadata"]["slug"] == "texas"
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail(f"start-server did not answer on port {port}")
    finally:
        server.terminate()
        server.communicate(timeout=30)  # reaps it and closes its pipe


def test_graph_files_carry_suggestions_and_attention_on_request(
    tiny_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    """``--suggestions`` and ``--attention`` put the page's circuit suggestions and the
    precomputed attention results into the graph file; without them the file has neither."""
    files = tmp_path / "files"
    files.mkdir()
    assert _attribute(tiny_dirs, "--slug", "plain", "--graph_file_dir", str(files)) == 0
    plain = json.loads((files / "plain.json").read_text())
    assert "circuit_suggestions" not in plain and "attention" not in plain
    flags = ["--slug", "rich", "--graph_file_dir", str(files), "--suggestions", "--attention"]
    assert _attribute(tiny_dirs, *flags) == 0
    rich = json.loads((files / "rich.json").read_text())
    ids = {n["node_id"] for n in rich["nodes"]}
    assert set(rich["circuit_suggestions"]["features"]) <= ids
    assert rich["attention"]["flows"] and rich["attention"]["qk"]
    assert rich["nodes"] == plain["nodes"] and rich["links"] == plain["links"]
