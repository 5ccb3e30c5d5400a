"""Loading a Hugging Face causal LM from a hub id, a local directory or a ``.gguf`` file."""

from __future__ import annotations

import warnings
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
from .tokens import context_length, is_placeholder_tokenizer

# A folder holding none of these has no tokenizer (transformers 5 would answer a placeholder).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "spiece.model",
    "vocab.json",
    "vocab.txt",
)


@dataclass(frozen=True)
class ModelSpec:
    """Sizes of a loaded model (read from its config); ``context_length`` is None when the
    config names no limit."""

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    vocab_size: int
    context_length: int | None = None


def spec_from_config(config: object) -> ModelSpec:
    """The ``ModelSpec`` of a transformers config (its ``text_config`` where it has one)."""
    cfg: Any = getattr(config, "text_config", None) or config
    n_heads = cfg.num_attention_heads
    d_model = cfg.hidden_size
    return ModelSpec(
        n_layers=cfg.num_hidden_layers,
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=getattr(cfg, "num_key_value_heads", None) or n_heads,
        d_head=getattr(cfg, "head_dim", None) or d_model // n_heads,
        vocab_size=cfg.vocab_size,
        context_length=context_length(cfg),
    )


def model_spec(model: nn.Module) -> ModelSpec:
    return spec_from_config(model.config)


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


def load_tokenizer(ref: str | PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """A tokenizer given explicitly: a local folder, a hub id or a tokenizer object.

    Raises ``ValueError`` when it cannot be loaded or is a placeholder (only special tokens).
    """
    if isinstance(ref, str):
        try:
            if Path(ref).exists():
                tok = AutoTokenizer.from_pretrained(ref)
            else:
                tok = hub_fetch("tokenizer", ref, AutoTokenizer.from_pretrained, ref)
        except (OSError, ValueError) as e:
            raise ValueError(
                f"Could not load the tokenizer {ref!r} ({type(e).__name__}: {e}); pass a folder "
                "holding tokenizer files (tokenizer.json, ...), a hub id or a tokenizer object."
            ) from None
    else:
        tok = ref
    if is_placeholder_tokenizer(tok):
        raise ValueError(
            f"The tokenizer {getattr(tok, 'name_or_path', '') or type(tok).__name__!r} has only "
            "special tokens: it is transformers' placeholder for a folder without tokenizer "
            "files, not the model's tokenizer. Pass the model's real tokenizer."
        )
    return tok


def find_tokenizer(path: str, **kwargs: Any) -> PreTrainedTokenizerBase | None:
    """The tokenizer saved with the model at ``path`` (a folder or hub id; ``kwargs`` as from
    ``load_config``), or None when there is none.

    A local folder without tokenizer files, a tokenizer that fails to load (with a warning)
    and a placeholder tokenizer (``is_placeholder_tokenizer``) all count as none: the model
    then takes token ids as they are, with no BOS added.
    """
    folder = Path(path)
    if folder.is_dir() and not kwargs.get("gguf_file"):
        if not any((folder / f).is_file() for f in TOKENIZER_FILES):
            return None
    try:
        tok = AutoTokenizer.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as e:
        if folder.is_dir():
            warnings.warn(
                f"The tokenizer files in {path} could not be loaded ({type(e).__name__}: {e}); "
                "the model takes token ids only.",
                stacklevel=3,
            )
        return None
    return None if is_placeholder_tokenizer(tok) else tok


def load_model(
    ref: str | nn.Module,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    tokenizer: str | PreTrainedTokenizerBase | None = None,
    check_config: Callable[[Any], None] | None = None,
) -> tuple[nn.Module, PreTrainedTokenizerBase | None, Adapter]:
    """Loads ``ref`` (hub id, local directory, ``.gguf`` file, ``"smollm2"`` for the packaged
    SmolLM2-135M, or an already built model).

    Returns the model in eval mode with frozen parameters and circuitlab's attention
    implementation, its tokenizer and its family adapter. The tokenizer is ``tokenizer``
    (a folder, hub id or tokenizer object; see ``load_tokenizer``) when given, else the one
    saved with the model (``find_tokenizer``), else None. An unsupported architecture raises
    before any weights are read, and so does ``check_config`` (called with the transformers
    config of a ``ref`` that is not a built model).
    """
    dtype = dtype or torch.float32
    tok = load_tokenizer(tokenizer) if tokenizer is not None else None
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
        if tok is None:
            tok = find_tokenizer(path, **kwargs)
    model = cast(nn.Module, model).to(dtype=dtype)
    if device is not None:
        model = model.to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    ensure_circuitlab_attention(model)
    return model, tok, adapter
