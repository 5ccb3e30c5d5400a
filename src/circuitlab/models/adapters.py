"""Per-architecture facts, in one table.

An ``Adapter`` says where a Hugging Face causal LM keeps its embeddings, blocks, norms,
attention, MLP and unembedding, what kind of norm it uses, and how to read its attention value
and output weights. Everything else in circuitlab is written once against this table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, cast

import torch
from torch import nn

NormKind = Literal["layernorm", "rms", "rms_gemma"]


@dataclass(frozen=True)
class Adapter:
    """Where one family keeps its parts (module paths relative to the ``*ForCausalLM``).

    Block-relative names: ``ln1`` before attention, ``post_attn_norm`` after it (Gemma),
    ``ln2`` before the MLP, ``post_mlp_norm`` after it (Gemma).
    ``value_weight(attn)`` is ``W_V [n_kv_heads * d_head, d_model]`` (``v = x @ W_V.T``) and
    ``out_weight(attn)`` is ``W_O [d_model, n_heads * d_head]`` (``out = z @ W_O.T``).
    ``out_proj`` is the attention's output projection, relative to ``attn``; its input is
    ``z [b, pos, n_heads * d_head]``, the heads' outputs side by side (per-head analysis).
    ``qkv_proj`` names the query, key and value projections relative to ``attn`` (outputs
    ``[b, pos, n_heads * d_head]`` for queries, ``[b, pos, n_kv_heads * d_head]`` for keys and
    values, before any q/k norm or rotary embedding); one name means a fused projection whose
    output is queries, keys and values side by side (GPT-2's ``c_attn``).
    ``qk_norm`` names the per-head query and key norms relative to ``attn`` (Qwen-3, Gemma-3:
    applied to each head's vector after the projection, before the rotary embedding), and
    ``attn_softcap_attr`` the config attribute of the attention-score soft-cap (Gemma-2:
    ``softcap * tanh(score / softcap)`` before the softmax).
    """

    family: str
    model_types: tuple[str, ...]
    norm: NormKind
    blocks: str
    embed: str
    final_norm: str
    unembed: str
    ln1: str
    attn: str
    ln2: str
    mlp: str
    value_weight: Callable[[nn.Module], torch.Tensor]
    out_weight: Callable[[nn.Module], torch.Tensor]
    post_attn_norm: str | None = None
    post_mlp_norm: str | None = None
    softcap_attr: str | None = None
    out_proj: str = "o_proj"
    qkv_proj: tuple[str, ...] = ("q_proj", "k_proj", "v_proj")
    qk_norm: tuple[str, str] | None = None
    attn_softcap_attr: str | None = None


def _weight(attn: nn.Module, name: str) -> torch.Tensor:
    return cast(torch.Tensor, attn.get_submodule(name).weight)


def _linear_v(attn: nn.Module) -> torch.Tensor:
    return _weight(attn, "v_proj")


def _linear_o(attn: nn.Module) -> torch.Tensor:
    return _weight(attn, "o_proj")


def _gpt2_v(attn: nn.Module) -> torch.Tensor:
    w = _weight(attn, "c_attn")  # Conv1D [d_model, 3 * d_model]: x @ w
    d = w.shape[0]
    return w[:, 2 * d :].T


def _gpt2_o(attn: nn.Module) -> torch.Tensor:
    return _weight(attn, "c_proj").T


_LLAMA_LIKE = dict(
    norm="rms",
    blocks="model.layers",
    embed="model.embed_tokens",
    final_norm="model.norm",
    unembed="lm_head",
    ln1="input_layernorm",
    attn="self_attn",
    ln2="post_attention_layernorm",
    mlp="mlp",
    value_weight=_linear_v,
    out_weight=_linear_o,
)

_GEMMA_LIKE = dict(
    _LLAMA_LIKE,
    norm="rms_gemma",
    ln2="pre_feedforward_layernorm",
    post_attn_norm="post_attention_layernorm",
    post_mlp_norm="post_feedforward_layernorm",
    softcap_attr="final_logit_softcapping",
    attn_softcap_attr="attn_logit_softcapping",
)

ADAPTERS: tuple[Adapter, ...] = (
    Adapter(
        family="gpt2",
        model_types=("gpt2",),
        norm="layernorm",
        blocks="transformer.h",
        embed="transformer.wte",
        final_norm="transformer.ln_f",
        unembed="lm_head",
        ln1="ln_1",
        attn="attn",
        ln2="ln_2",
        mlp="mlp",
        value_weight=_gpt2_v,
        out_weight=_gpt2_o,
        out_proj="c_proj",
        qkv_proj=("c_attn",),
    ),
    Adapter(family="llama", model_types=("llama",), **_LLAMA_LIKE),  # type: ignore[arg-type]
    Adapter(family="mistral", model_types=("mistral",), **_LLAMA_LIKE),  # type: ignore[arg-type]
    Adapter(family="qwen2", model_types=("qwen2",), **_LLAMA_LIKE),  # type: ignore[arg-type]
    Adapter(
        family="qwen3",
        model_types=("qwen3",),
        qk_norm=("q_norm", "k_norm"),
        **_LLAMA_LIKE,  # type: ignore[arg-type]
    ),
    Adapter(family="gemma2", model_types=("gemma2",), **_GEMMA_LIKE),  # type: ignore[arg-type]
    Adapter(
        family="gemma3",
        model_types=("gemma3_text",),
        qk_norm=("q_norm", "k_norm"),
        **_GEMMA_LIKE,  # type: ignore[arg-type]
    ),
)


class UnsupportedArchitectureError(ValueError):
    """The model's architecture has no adapter."""


def supported_model_types() -> list[str]:
    return sorted(t for a in ADAPTERS for t in a.model_types)


def adapter_for(model_type: str) -> Adapter:
    """The adapter for a Hugging Face ``config.model_type``."""
    for a in ADAPTERS:
        if model_type in a.model_types:
            return a
    raise UnsupportedArchitectureError(
        f"circuitlab has no adapter for model_type {model_type!r}. Supported: "
        f"{', '.join(supported_model_types())}. Add an entry to circuitlab/models/adapters.py "
        "to support a new family."
    )


def get_module(root: nn.Module, path: str) -> nn.Module:
    """``root.get_submodule`` with a clear error."""
    try:
        return root.get_submodule(path)
    except AttributeError as e:
        raise UnsupportedArchitectureError(
            f"Expected a module at {path!r} in {type(root).__name__}; this checkpoint's layout "
            "differs from its adapter."
        ) from e
