"""``estimate_memory``: structure, monotonicity, shapes read from files, and agreement with a
measured peak on a tiny model (within the documented ``TOLERANCE``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from circuitlab.attribution.memory import (
    TOLERANCE,
    ModelShapes,
    TranscoderShapes,
    estimate_memory,
    human,
    model_shapes,
    transcoder_shapes,
)
from circuitlab.models.tiny import tiny_model
from circuitlab.transcoders import random_transcoder_set

from conftest import tiny_tokenizer

MODEL = ModelShapes(30, 576, 9, 3, 64, 1536, 49152, 134_515_008, True)
TC = TranscoderShapes("plt", 30, 576, 4096, False, None)


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("mem")
    model: Any = tiny_model("llama", n_layers=2, d_model=16)
    model.save_pretrained(root / "model")
    tok: Any = tiny_tokenizer()  # pyright: ignore[reportCallIssue]
    tok.save_pretrained(root / "model")
    tc = random_transcoder_set(2, 16, 32, activation="jump_relu", skip=True)
    tc.model_name = str(root / "model")
    tc.save(str(root / "tc"))
    return root / "model", root / "tc"


def test_estimate_has_parts_phases_and_a_peak() -> None:
    est = estimate_memory(MODEL, TC, 32)
    assert est.peak == max(est.phases.values()) and est.peak_phase in est.phases
    assert set(est.phases) == {"load", "forward", "sweep", "graph", "scores"}
    assert {"runtime", "model weights", "edge rows", "graph rows"} <= set(est.parts)
    assert all(v >= 0 for k, v in est.parts.items() if not k.startswith("offload"))
    assert est.parts["model weights"] == MODEL.n_params * 4
    assert "predicted peak" in est.report() and json.dumps(est.to_json())
    assert human(1536) == "1.5 KiB"


@pytest.mark.parametrize(
    "option, small, large",
    [
        ("n_tokens", 8, 128),
        ("max_feature_nodes", 256, 8192),
        ("batch_size", 16, 512),
        ("l0", 8, 128),
        ("max_n_logits", 1, 50),
    ],
)
def test_estimate_grows_with_each_option(option: str, small: int, large: int) -> None:
    base: dict[str, Any] = dict(n_tokens=64)
    lo = estimate_memory(MODEL, TC, **{**base, option: small})
    hi = estimate_memory(MODEL, TC, **{**base, option: large})
    assert hi.peak > lo.peak


def test_loading_choices_and_offload_move_the_right_parts() -> None:
    lazy = estimate_memory(MODEL, TC, 64)
    eager = estimate_memory(MODEL, TC, 64, lazy_decoder=False)
    assert eager.phases["load"] - lazy.phases["load"] == 4096 * 576 * 30 * 4
    assert estimate_memory(MODEL, TC, 64, lazy_encoder=True).phases["load"] < lazy.phases["load"]
    disk = estimate_memory(MODEL, TC, 64, offload="disk")
    assert disk.phases["sweep"] < lazy.phases["sweep"]
    # offload="disk" sends each layer's pattern to the spill file as the forward computes it:
    # one layer's [heads, pos, pos] stays in memory instead of all 30.
    assert lazy.phases["forward"] - disk.phases["forward"] == 29 * 9 * 64 * 64 * 4
    assert disk.parts["attention patterns in a mapped file"] == 30 * 9 * 64 * 64 * 4
    assert estimate_memory(MODEL, TC, 64, dtype="bfloat16").peak < lazy.peak
    clt = TranscoderShapes("clt", 30, 576, 4096, False, None)
    assert estimate_memory(MODEL, clt, 64, lazy_decoder=False).peak > eager.peak
    with pytest.raises(ValueError, match="dtype"):
        estimate_memory(MODEL, TC, 64, dtype="int8")


def test_shapes_come_from_config_and_headers(tiny_dirs: tuple[Path, Path]) -> None:
    model_dir, tc_dir = tiny_dirs
    m = model_shapes(model_dir)
    hf: Any = tiny_model("llama", n_layers=2, d_model=16)
    assert (m.n_layers, m.d_model) == (2, 16)
    assert m.n_params == sum(p.numel() for p in hf.state_dict().values())
    tc, name = transcoder_shapes(tc_dir)
    assert (tc.kind, tc.n_layers, tc.d_model, tc.d_transcoder, tc.skip) == ("plt", 2, 16, 32, True)
    assert name == str(model_dir)


_CHILD = """
import json, sys, torch
from circuitlab.attribution import attribute
from circuitlab.batch import LoadSpec
from circuitlab.graph import compute_graph_scores
g = attribute(LoadSpec(sys.argv[1]).load(), torch.tensor(json.loads(sys.argv[2])))
compute_graph_scores(g)
# VmHWM, not ru_maxrss: Linux carries the parent's peak into ru_maxrss across fork + exec, so a
# big pytest parent (the whole suite collected: ~0.8 GB) would read as this child's peak.
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(int(hwm.split()[1]) * 1024)
"""


def test_estimate_is_within_tolerance_of_a_measured_peak(tiny_dirs: tuple[Path, Path]) -> None:
    model_dir, tc_dir = tiny_dirs
    ids = [0] + [3 + i % 14 for i in range(31)]
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tc_dir), json.dumps(ids)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    measured = int(proc.stdout.split()[-1])
    tc, _ = transcoder_shapes(tc_dir)
    predicted = estimate_memory(model_shapes(model_dir), tc, len(ids)).peak
    assert 1 / TOLERANCE <= measured / predicted <= TOLERANCE, (measured, predicted)


def test_the_block_layout_constant_matches_the_graph() -> None:
    from circuitlab.attribution import memory
    from circuitlab.graph import edges

    assert memory.POSITION_CHUNKS == edges.POSITION_CHUNKS


def test_the_chunk_constants_match_the_engine() -> None:
    from circuitlab.attribution import backward, cost, memory, sources

    assert memory.READ_CHUNK_ELEMENTS == sources.READ_CHUNK_ELEMENTS
    assert cost.ATTENTION_BLOCK == backward.ATTENTION_BLOCK
