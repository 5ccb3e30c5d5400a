"""circuit-tracer 0.5.0 (the peer venv) loads trained transcoders and computes what we compute.

Runs the peer's own loader in a subprocess with ``/work/ct-venv/bin/python`` (or
``$CIRCUITLAB_PEER_PYTHON``) and compares its encodings and reconstructions with ours. Skipped
when that interpreter or its circuit_tracer is missing. circuit-tracer's loader ignores
``activation: topk`` and a CLT's ``W_skip.safetensors``, so the cases here are a JumpReLU PLT
with a skip connection and a ReLU CLT.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from circuitlab.models.tiny import tiny_model
from circuitlab.transcoders.training import TrainConfig, train_transcoders

# the root tests/conftest.py (on sys.path), not tests/transcoders/conftest.py
from conftest import WORDS, tiny_tokenizer  # pyright: ignore[reportAttributeAccessIssue]

PEER = Path(os.environ.get("CIRCUITLAB_PEER_PYTHON", "/work/ct-venv/bin/python"))

SCRIPT = r"""
import sys, torch
from safetensors.torch import load_file, save_file
from circuit_tracer.utils.hf_utils import load_transcoder_from_hub
io = sys.argv[1]
x = load_file(io)["x"]
out = {}
for n, tc_dir in enumerate(sys.argv[2:]):
    tc, _ = load_transcoder_from_hub(tc_dir, device=torch.device("cpu"), dtype=torch.float32,
                                     lazy_encoder=False, lazy_decoder=False)
    with torch.no_grad():
        acts = tc.encode(x)
        recon = tc.decode(acts, x) if hasattr(tc, "transcoders") else tc(x)
    out[f"acts_{n}"], out[f"recon_{n}"] = acts.contiguous(), recon.contiguous()
    print(type(tc).__name__)
save_file(out, io + ".out")
"""

CASES = [  # (kind, activation, skip, circuit-tracer's class)
    ("plt", "jump_relu", True, "TranscoderSet"),
    ("clt", "relu", False, "CrossLayerTranscoder"),
]


def test_circuit_tracer_loads_trained_transcoders(tmp_path: Path) -> None:
    if not PEER.is_file():
        pytest.skip(f"circuit-tracer's venv python {PEER} is missing (set CIRCUITLAB_PEER_PYTHON)")
    texts = [" ".join(WORDS[i % len(WORDS)] for i in range(j, j + 20)) for j in range(60)]
    trained, dirs = [], []
    for n, (kind, activation, skip, _) in enumerate(CASES):
        cfg = TrainConfig(
            kind=kind,
            activation=activation,
            skip=skip,
            d_transcoder=24,
            n_tokens=256,
            batch_size=64,
            buffer_tokens=256,
            context=16,
            lr=1e-2,
        )
        hf = tiny_model("llama", dtype=torch.float32)
        out = tmp_path / f"run{n}"
        tc = train_transcoders(hf, texts, out, cfg, tokenizer=tiny_tokenizer(), verbose=False)
        trained.append(tc)
        dirs.append(str((out / "transcoders").resolve()))  # circuit-tracer needs absolute dirs
    x = torch.randn(2, 7, 16, generator=torch.Generator().manual_seed(0))
    io = tmp_path / "io.safetensors"
    save_file({"x": x}, str(io))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    run = subprocess.run(
        [str(PEER), "-c", SCRIPT, str(io), *dirs],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    if "No module named 'circuit_tracer'" in run.stderr:
        pytest.skip(f"{PEER} has no circuit_tracer (pip install circuit-tracer==0.5.0 there)")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == [case[3] for case in CASES]
    peer = load_file(str(io) + ".out")
    for n, ours in enumerate(trained):
        with torch.no_grad():
            acts = torch.stack([ours.encode(layer, x[layer]) for layer in range(2)])
            torch.testing.assert_close(peer[f"acts_{n}"], acts, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(peer[f"recon_{n}"], ours(x), rtol=1e-5, atol=1e-5)
