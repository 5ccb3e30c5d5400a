"""Loading a Hugging Face causal LM from a hub id, a local directory or a ``.gguf`` file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from .adapters import Adapter, adapter_for
from .hub import hub_fetch, hub_kwargs, resolve_model_ref
from .session import ensure_circuitlab_attention


@dataclass(frozen=True)
class ModelSpec:
    """Sizes of a loaded model (read from its config)."""

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    vocab_size: int


def model_spec(model: nn.Module) -> ModelSpec:
    cfg: Any = model.config
    cfg = getattr(cfg, "text_config", None) or cfg
    n_heads = cfg.num_attention_heads
    d_model = cfg.hidden_size
    return ModelSpec(
        n_layers=cfg.num_hidden_layers,
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=getattr(cfg, "num_key_value_heads", None) or n_heads,
        d_head=getattr(cfg, "head_dim", None) or d_model // n_heads,
        vocab_size=cfg.vocab_size,
    )


def _split_gguf(ref: str) -> tuple[str, str | None]:
    p = Path(ref)
    if p.suffix == ".gguf":
        if not p.is_file():
            raise FileNotFoundError(f"GGUF file {ref} does not exist; check the path.")
        return str(p.parent), p.name
    return ref, None


def load_config(ref: str) -> tuple[Any, str, dict[str, Any]]:
    """The transformers config of ``ref`` (as ``load_model`` takes it), the folder or hub id it
    was read from, and the keyword arguments that read it (the GGUF file name; cache-only
    look-ups when the hub is out of reach), to pass on to the model and tokenizer loaders."""
    path, gguf = _split_gguf(resolve_model_ref(ref))
    kwargs: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
    if Path(path).exists():
        config = AutoConfig.from_pretrained(path, **kwargs)
    else:  # a hub id: the model and tokenizer loaders then look it up the same way
        config = hub_fetch("model", ref, AutoConfig.from_pretrained, path, **kwargs)
        kwargs.update(hub_kwargs())
    return config, path, kwargs


def load_model(
    ref: str | nn.Module,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    check_config: Callable[[Any], None] | None = None,
) -> tuple[nn.Module, PreTrainedTokenizerBase | None, Adapter]:
    """Loads ``ref`` (hub id, local directory, ``.gguf`` file, ``"smollm2"`` for the packaged
    SmolLM2-135M, or an already built model).

    Returns the model in eval mode with frozen parameters and circuitlab's attention
    implementation, its tokenizer (None if it has none) and its family adapter. An
    unsupported architecture raises before any weights are read, and so does ``check_config``
    (called with the transformers config of a ``ref`` that is not a built model).
    """
    dtype = dtype or torch.float32
    if isinstance(ref, nn.Module):
        model = ref
        model_type = cast(Any, model).config.model_type
        adapter = adapter_for(model_type)
    else:
        config, path, kwargs = load_config(str(ref))
        adapter = adapter_for(config.model_type)
        if check_config is not None:
            check_config(config)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
        if tokenizer is None:
            try:
                tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
            except (OSError, ValueError):
                tokenizer = None
    model = cast(nn.Module, model).to(dtype=dtype)
    if device is not None:
        model = model.to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    ensure_circuitlab_attention(model)
    return model, tokenizer, adapter
