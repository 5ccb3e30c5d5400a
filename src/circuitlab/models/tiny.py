"""Tiny random models of every supported family, built from transformers configs.

Used by the tests, benchmarks and examples: no network, no files. Weights are re-drawn
uniformly at a scale that keeps activations of order one, so transcoder features fire.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma3TextConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen3Config,
)

FAMILIES = ("gpt2", "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3")


def tiny_config(
    family: str, *, n_layers: int = 2, d_model: int = 16, vocab: int = 64
) -> PretrainedConfig:
    """A small config of ``family`` (GQA, sliding windows, softcaps and q/k norms included)."""
    common: dict[str, Any] = dict(
        vocab_size=vocab,
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )
    if family == "gpt2":
        return GPT2Config(
            vocab_size=vocab,
            n_embd=d_model,
            n_layer=n_layers,
            n_head=4,
            n_inner=2 * d_model,
            n_positions=256,
            bos_token_id=0,
            eos_token_id=1,
        )
    if family == "llama":
        return LlamaConfig(**common)
    if family == "mistral":
        return MistralConfig(**common, sliding_window=5)
    if family == "qwen2":
        return Qwen2Config(**common)
    if family == "qwen3":
        return Qwen3Config(**common, head_dim=d_model // 4)
    if family == "gemma2":
        return Gemma2Config(
            **common,
            head_dim=d_model // 4,
            query_pre_attn_scalar=d_model // 4,
            sliding_window=5,
            final_logit_softcapping=30.0,
            attn_logit_softcapping=50.0,
        )
    if family == "gemma3":
        return Gemma3TextConfig(
            **common,
            head_dim=d_model // 4,
            query_pre_attn_scalar=d_model // 4,
            sliding_window=5,
            layer_types=[
                "sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)
            ],
        )
    raise ValueError(f"Unknown family {family!r}; use one of {', '.join(FAMILIES)}.")


def tiny_model(
    family: str, *, seed: int = 0, dtype: torch.dtype = torch.float32, **sizes: int
) -> PreTrainedModel:
    """A random ``*ForCausalLM`` of ``family`` in eval mode."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(
        tiny_config(family, **sizes), attn_implementation="eager"
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            u = torch.rand(p.shape, generator=g, dtype=p.dtype) * 2 - 1
            is_norm = "norm" in name or name.split(".")[-2].startswith("ln")
            if is_norm and name.endswith("weight"):
                # Gemma norms scale by (1 + w); the others by w.
                p.copy_(0.3 * u if family.startswith("gemma") else 1 + 0.3 * u)
            elif p.ndim == 1:
                p.copy_(0.1 * u)
            else:
                fan_in = (
                    p.shape[0]
                    if family == "gpt2" and "wte" not in name and "wpe" not in name
                    else p.shape[-1]
                )
                p.copy_(u * math.sqrt(3.0 / fan_in))
    return model.to(dtype).eval()
