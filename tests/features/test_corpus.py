"""Corpora (text, JSONL) and their fixed-length windows with a BOS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from circuitlab.features.corpus import batched_windows, bos_token_id, open_corpus, token_windows

from conftest import tiny_tokenizer


def test_text_and_jsonl_corpora(tmp_path: Path) -> None:
    txt = tmp_path / "a.txt"
    txt.write_text("the capital\nof Texas\n\n\nis Austin\n")
    assert list(open_corpus(str(txt))) == ["the capital\nof Texas", "is Austin"]
    jl = tmp_path / "b.jsonl"
    jl.write_text(json.dumps({"text": "a b", "body": "c"}) + "\n\n" + json.dumps({"text": "d"}))
    assert list(open_corpus(str(jl))) == ["a b", "d"]
    assert next(iter(open_corpus(f"{jl}:body"))) == "c"
    with pytest.raises(ValueError, match="no 'body' field"):
        list(open_corpus(f"{jl}:body"))
    with pytest.raises(FileNotFoundError, match="neither"):
        open_corpus(str(tmp_path / "missing.txt"))


def test_windows_are_bos_plus_consecutive_stream_chunks() -> None:
    tok = tiny_tokenizer()
    texts = ["the capital of Texas is Austin", "a b c d", "Paris France"]
    windows = list(token_windows(texts, tok, context=4))
    bos, eos = bos_token_id(tok), tok.eos_token_id
    stream: list[int] = []
    for t in texts:
        stream += tok(t, add_special_tokens=False).input_ids + [eos]
    assert len(windows) == len(stream) // 3
    for i, w in enumerate(windows):
        assert w.shape == (4,) and int(w[0]) == bos
        assert w[1:].tolist() == stream[3 * i : 3 * i + 3]
    batches = list(batched_windows(windows, 2))
    assert [b.shape[0] for b in batches] == [2] * (len(windows) // 2) + [1] * (len(windows) % 2)
    assert torch.equal(torch.cat(batches), torch.stack(windows))


def test_window_needs_room_for_a_token() -> None:
    with pytest.raises(ValueError, match="context=1"):
        next(token_windows(["a"], tiny_tokenizer(), context=1))
