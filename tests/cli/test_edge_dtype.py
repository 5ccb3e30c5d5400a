"""``--edge_dtype``: the CLI stores edges in half precision when asked, and the estimate follows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from circuitlab.cli import main
from circuitlab.graph import Graph


def test_attribute_stores_edges_in_the_dtype_asked_for(
    tiny_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    _, tc = tiny_dirs
    argv = ["attribute", "-p", "the capital of Texas is", "-t", str(tc)]
    full, half = tmp_path / "f32.safetensors", tmp_path / "bf16.safetensors"
    assert main([*argv, "-o", str(full)]) == 0
    assert main([*argv, "-o", str(half), "--edge_dtype", "bfloat16"]) == 0
    g32, g16 = Graph.load(full), Graph.load(half)
    assert g32.edge_dtype == torch.float32 and g16.edge_dtype == torch.bfloat16
    assert torch.allclose(g16.edges.float(), g32.edges, rtol=2**-8, atol=1e-6)


def test_estimate_memory_follows_the_edge_dtype(
    tiny_dirs: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    _, tc = tiny_dirs
    argv = ["estimate-memory", "-t", str(tc), "--n-tokens", "64", "--json"]
    sizes = {}
    for dtype in ("float32", "bfloat16"):
        assert main([*argv, "--edge_dtype", dtype]) == 0
        sizes[dtype] = json.loads(capsys.readouterr().out)["parts"]
    assert sizes["bfloat16"]["edge rows"] * 2 == pytest.approx(
        sizes["float32"]["edge rows"], rel=0.01
    )
