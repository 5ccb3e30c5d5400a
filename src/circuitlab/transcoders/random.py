"""Random transcoders for tests, benchmarks and examples (no files, no network)."""

from __future__ import annotations

import torch

from .activations import Activation, JumpReLU, ReLU, TopK
from .cross_layer import CrossLayerTranscoder
from .per_layer import SingleLayerTranscoder, TranscoderSet


def _activation(kind: str, d_t: int, k: int, g: torch.Generator, dtype: torch.dtype) -> Activation:
    if kind == "jump_relu":
        return JumpReLU(torch.rand(d_t, generator=g, dtype=dtype) * 0.5)
    if kind == "topk":
        return TopK(k)
    if kind == "relu":
        return ReLU()
    raise ValueError(f"Unknown activation {kind!r}; use relu, jump_relu or topk.")


def random_transcoder_set(
    n_layers: int,
    d_model: int,
    d_transcoder: int,
    *,
    activation: str = "jump_relu",
    skip: bool = False,
    k: int = 8,
    input_hook: str = "mlp.hook_in",
    output_hook: str = "hook_mlp_out",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    scale: float = 1.0,
) -> TranscoderSet:
    """Per-layer transcoders with weights ``uniform(-scale, scale) / sqrt(d)``."""
    g = torch.Generator().manual_seed(seed)

    def u(*shape: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=g, dtype=dtype) * 2 - 1) * scale / shape[-1] ** 0.5

    layers = [
        SingleLayerTranscoder(
            W_enc=u(d_transcoder, d_model),
            b_enc=u(d_transcoder),
            W_dec=u(d_transcoder, d_model),
            b_dec=u(d_model),
            activation=_activation(activation, d_transcoder, k, g, dtype),
            W_skip=u(d_model, d_model) if skip else None,
        )
        for _ in range(n_layers)
    ]
    return TranscoderSet(layers, input_hook=input_hook, output_hook=output_hook, name="random-plt")


def random_cross_layer_transcoder(
    n_layers: int,
    d_model: int,
    d_transcoder: int,
    *,
    activation: str = "jump_relu",
    skip: bool = False,
    k: int = 8,
    input_hook: str = "hook_resid_mid",
    output_hook: str = "hook_mlp_out",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    scale: float = 1.0,
) -> CrossLayerTranscoder:
    """A cross-layer transcoder with weights ``uniform(-scale, scale) / sqrt(d)``."""
    g = torch.Generator().manual_seed(seed)

    def u(*shape: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=g, dtype=dtype) * 2 - 1) * scale / shape[-1] ** 0.5

    return CrossLayerTranscoder(
        W_enc=u(n_layers, d_transcoder, d_model),
        b_enc=u(n_layers, d_transcoder),
        W_dec=[
            u(d_transcoder, n_layers - layer, d_model) / (n_layers - layer) ** 0.5
            for layer in range(n_layers)
        ],
        b_dec=u(n_layers, d_model),
        activations=[_activation(activation, d_transcoder, k, g, dtype) for _ in range(n_layers)],
        W_skip=u(n_layers, d_model, d_model) if skip else None,
        input_hook=input_hook,
        output_hook=output_hook,
        name="random-clt",
    )
