"""The transcoder-set fingerprint: the same files give the same one however they are loaded;
different sets give different ones; graphs keep theirs on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuitlab.attribution import attribute
from circuitlab.graph import Graph
from circuitlab.transcoders import (
    load_transcoders,
    random_cross_layer_transcoder,
    random_transcoder_set,
    transcoder_fingerprint,
)

from conftest import PROMPT, build  # pyright: ignore[reportAttributeAccessIssue]


@pytest.mark.parametrize("kind", ["plt", "clt"])
def test_the_same_files_give_the_same_fingerprint_in_any_dtype(kind: str, tmp_path: Path) -> None:
    if kind == "plt":
        tc = random_transcoder_set(3, 16, 24, skip=True, seed=5)
    else:
        tc = random_cross_layer_transcoder(3, 16, 24, seed=5)
    tc.save(str(tmp_path))
    want = transcoder_fingerprint(tc)
    assert want.startswith("tcs1-")
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for lazy in (False, True):
            loaded = load_transcoders(tmp_path, dtype=dtype, lazy_encoder=lazy)
            assert transcoder_fingerprint(loaded) == want, (dtype, lazy)


def test_different_sets_give_different_fingerprints() -> None:
    prints = {
        transcoder_fingerprint(random_transcoder_set(2, 16, 24, seed=1)),
        transcoder_fingerprint(random_transcoder_set(2, 16, 24, seed=2)),
        transcoder_fingerprint(random_transcoder_set(2, 16, 32, seed=1)),
        transcoder_fingerprint(random_cross_layer_transcoder(2, 16, 24, seed=1)),
    }
    assert len(prints) == 4


def test_a_graph_records_and_keeps_its_transcoder_set(tmp_path: Path) -> None:
    model = build("llama")
    graph = attribute(model, PROMPT)
    assert graph.transcoder_fingerprint == transcoder_fingerprint(model.transcoders)
    graph.save(tmp_path / "g.safetensors")
    assert Graph.load(tmp_path / "g.safetensors").transcoder_fingerprint == (
        graph.transcoder_fingerprint
    )
