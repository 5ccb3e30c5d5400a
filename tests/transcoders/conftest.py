"""Shared fixtures for transcoder tests: equivalence checks and an offline Hugging Face cache."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from circuitlab.transcoders import Transcoders

Equivalent = Callable[[Transcoders, Transcoders], None]
HubCache = Callable[..., Path]


def _assert_equivalent(a: Transcoders, b: Transcoders) -> None:
    """Same shapes, hooks, pre-activations, activations, decoder rows and reconstructions."""
    assert (a.n_layers, a.d_model, a.d_transcoder) == (b.n_layers, b.d_model, b.d_transcoder)
    assert (a.input_hook, a.output_hook) == (b.input_hook, b.output_hook)
    assert a.is_cross_layer == b.is_cross_layer and a.has_skip == b.has_skip
    g = torch.Generator().manual_seed(1)
    x = torch.randn(a.n_layers, 6, a.d_model, generator=g, dtype=torch.float64)
    feats = torch.tensor([3, 0, 3, a.d_transcoder - 1, 1])
    for layer in range(a.n_layers):
        torch.testing.assert_close(
            a.pre_activations(layer, x[layer]), b.pre_activations(layer, x[layer])
        )
        torch.testing.assert_close(a.encode(layer, x[layer]), b.encode(layer, x[layer]))
        torch.testing.assert_close(a.decoder_rows(layer, feats), b.decoder_rows(layer, feats))
        torch.testing.assert_close(a.encoder_rows(layer, feats), b.encoder_rows(layer, feats))
        torch.testing.assert_close(a.decoder_bias(layer), b.decoder_bias(layer))
    torch.testing.assert_close(a(x), b(x))


@pytest.fixture
def assert_equivalent() -> Equivalent:
    return _assert_equivalent


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HubCache:
    """Builds repos in a Hugging Face cache layout under ``tmp_path`` and forces offline mode.

    ``add(repo_id, source_dir, subfolder="", revision="main", commit=...)`` copies ``source_dir``
    into ``snapshots/<commit>/<subfolder>`` and points ``refs/<revision>`` at it; it returns the
    cache directory to pass as ``cache_dir``.
    """
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hf-cache"

    def add(
        repo_id: str,
        source: Path,
        subfolder: str = "",
        revision: str = "main",
        commit: str = "0123456789abcdef0123456789abcdef01234567",
    ) -> Path:
        repo = cache / f"models--{repo_id.replace('/', '--')}"
        snapshot = repo / "snapshots" / commit
        shutil.copytree(source, snapshot / subfolder if subfolder else snapshot, dirs_exist_ok=True)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / revision).write_text(commit)
        return cache

    return add
