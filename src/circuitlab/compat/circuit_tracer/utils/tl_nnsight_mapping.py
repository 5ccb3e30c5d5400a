"""``UnifiedConfig``: circuit-tracer's model summary (``model.cfg``, ``graph.cfg``).

Built from a transformers config; fields, names and ``to_dict``/``from_dict`` as in
circuit-tracer 0.5.0, so code reading ``cfg.n_layers`` or ``cfg.tokenizer_name`` runs unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch


@dataclass
class UnifiedConfig:
    """Sizes and names of a model, with circuit-tracer's (TransformerLens') field names."""

    n_layers: int
    d_model: int
    d_head: int
    n_heads: int
    d_mlp: int
    d_vocab: int
    tokenizer_name: str
    model_name: str
    original_architecture: str
    n_key_value_heads: int | None = None
    dtype: Any | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set (None left out)."""
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any]) -> UnifiedConfig:
        """From a dict holding at least the required fields (extra keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in config_dict.items() if k in names})


def config_from_hf(
    config: Any,
    *,
    name: str = "",
    dtype: torch.dtype | None = None,
    architecture: str | None = None,
) -> UnifiedConfig:
    """The ``UnifiedConfig`` of a transformers config (its ``text_config`` where it has one);
    ``architecture`` (the model's class name) stands in where the config names none."""
    cfg: Any = getattr(config, "text_config", None) or config
    n_heads = int(cfg.num_attention_heads)
    d_model = int(cfg.hidden_size)
    architectures = getattr(config, "architectures", None) or [
        architecture or type(config).__name__
    ]
    name = name or str(getattr(config, "_name_or_path", "") or "")
    d_mlp = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None)
    return UnifiedConfig(
        n_layers=int(cfg.num_hidden_layers),
        d_model=d_model,
        d_head=int(getattr(cfg, "head_dim", None) or d_model // n_heads),
        n_heads=n_heads,
        d_mlp=int(d_mlp or 4 * d_model),
        d_vocab=int(cfg.vocab_size),
        tokenizer_name=name,
        model_name=name,
        original_architecture=str(architectures[0]),
        n_key_value_heads=getattr(cfg, "num_key_value_heads", None),
        dtype=dtype,
    )


def convert_nnsight_config_to_transformerlens(config: Any) -> UnifiedConfig:
    """A ``UnifiedConfig`` from a ``UnifiedConfig`` (returned as is) or a transformers config."""
    if isinstance(config, UnifiedConfig):
        return config
    return config_from_hf(config)
