"""A graph file whose header was edited badly is refused naming the field and its format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from circuitlab.graph import load_graph

from .builders import hand_graph


def _with_header(tmp_path: Path, **changes: Any) -> Path:
    """A saved graph whose JSON header has ``changes``."""
    path = tmp_path / "g.safetensors"
    hand_graph().save(path)
    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    metadata["graph"] = json.dumps({**json.loads(metadata["graph"]), **changes})
    save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize(
    "targets, fragment",
    [
        ([["tok0"], ["tok1", 101]], r"logit_targets\[0\] is \['tok0'\]"),
        (["a", "b"], r"logit_targets\[0\] is 'a'"),
        ([["tok0", "x"], ["tok1", 101]], r"logit_targets\[0\] is \['tok0', 'x'\]"),
        ({"tok0": 100}, "logit_targets is dict"),
    ],
)
def test_bad_logit_targets_name_the_expected_format(
    tmp_path: Path, targets: Any, fragment: str
) -> None:
    path = _with_header(tmp_path, logit_targets=targets)
    with pytest.raises(ValueError, match=fragment) as e:
        load_graph(path)
    text = str(e.value)
    assert str(path) in text and "[[token_str, vocab_idx], ...]" in text
    assert "unpack" not in text
