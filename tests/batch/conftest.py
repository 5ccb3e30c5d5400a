"""A tiny Llama with a tokenizer and transcoders saved to disk, and a prompt file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from circuitlab.models.tiny import tiny_model
from circuitlab.transcoders import random_transcoder_set

from conftest import tiny_tokenizer

PROMPTS = [
    {"prompt": "the capital of France is"},
    {"id": "dallas", "prompt": "the capital of state containing Dallas is", "target": " Austin"},
    {"prompt": "a b c d", "logit_diff": ["a", "b"]},
    {"id": "texas", "prompt": "the capital of Texas is"},
    {"prompt": "Paris is the capital of"},
    {"id": "bad", "prompt": "the state", "target": "no-such-word"},
]


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(model_dir, transcoder_dir)``; the transcoders name the model as ``model_name``."""
    root = tmp_path_factory.mktemp("tiny")
    model_dir, tc_dir = root / "model", root / "tc"
    model: Any = tiny_model("llama", n_layers=2, d_model=16)
    model.save_pretrained(model_dir)
    tok: Any = tiny_tokenizer()  # pyright: ignore[reportCallIssue]  (the root conftest)
    tok.save_pretrained(model_dir)
    tc = random_transcoder_set(2, 16, 32, activation="jump_relu")
    tc.model_name = str(model_dir)
    tc.save(str(tc_dir))
    return model_dir, tc_dir


@pytest.fixture
def prompt_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in PROMPTS) + "\n")
    return path
