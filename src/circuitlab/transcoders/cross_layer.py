"""Cross-layer transcoders (CLT): a feature read at layer ``l`` writes to every layer ``>= l``."""

from __future__ import annotations

import torch
from torch import nn

from .activations import Activation
from .base import Transcoders
from .rows import ParameterRows, Rows


class CrossLayerTranscoder(Transcoders):
    """A cross-layer transcoder.

    Shapes: ``W_enc [n_layers, d_t, d_model]``, ``b_enc [n_layers, d_t]``, ``b_dec [n_layers,
    d_model]``; ``W_dec[l]`` is ``[d_t, n_layers - l, d_model]`` (in memory or lazy ``Rows``);
    optional ``W_skip [n_layers, d_model, d_model]`` with ``skip_l(x) = x @ W_skip[l].T``.
    ``activations[l]`` is layer ``l``'s activation function (JumpReLU thresholds differ per layer).
    """

    is_cross_layer = True

    def __init__(
        self,
        W_enc: torch.Tensor,
        b_enc: torch.Tensor,
        W_dec: list[torch.Tensor | Rows],
        b_dec: torch.Tensor,
        activations: list[Activation],
        W_skip: torch.Tensor | None = None,
        *,
        input_hook: str = "hook_resid_mid",
        output_hook: str = "hook_mlp_out",
        name: str | None = None,
        model_name: str | None = None,
    ):
        n_layers, d_t, d_model = W_enc.shape
        super().__init__()
        if len(W_dec) != n_layers or len(activations) != n_layers:
            raise ValueError(
                f"A CLT with {n_layers} encoder layers needs {n_layers} decoders and activations; "
                f"got {len(W_dec)} and {len(activations)}."
            )
        self.dec: list[Rows] = []
        for layer, d in enumerate(W_dec):
            if isinstance(d, torch.Tensor):  # registered so that ``.to()`` moves it
                param = nn.Parameter(d, requires_grad=False)
                self.register_parameter(f"W_dec_{layer}", param)
                d = ParameterRows(self, f"W_dec_{layer}")
            self.dec.append(d)
        for layer, dec in enumerate(self.dec):
            want = (d_t, n_layers - layer, d_model)
            if tuple(dec.shape) != want:
                raise ValueError(f"W_dec_{layer} has shape {tuple(dec.shape)}; expected {want}.")
        self.W_enc = nn.Parameter(W_enc, requires_grad=False)
        self.b_enc = nn.Parameter(b_enc, requires_grad=False)
        self.b_dec = nn.Parameter(b_dec, requires_grad=False)
        self.W_skip = None if W_skip is None else nn.Parameter(W_skip, requires_grad=False)
        self.activations = nn.ModuleList(activations)
        self.n_layers, self.d_transcoder, self.d_model = n_layers, d_t, d_model
        self.input_hook = input_hook
        self.output_hook = output_hook
        self.name = name
        self.model_name = model_name

    def pre_activations(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        return x @ self.W_enc[layer].to(x.dtype).T + self.b_enc[layer].to(x.dtype)

    def activate(self, layer: int, pre: torch.Tensor) -> torch.Tensor:
        return self.activations[layer](pre)

    def encoder_rows(self, layer: int, features: torch.Tensor) -> torch.Tensor:
        return self.W_enc[layer][features.to(self.W_enc.device)]

    def encoder_bias(self, layer: int) -> torch.Tensor:
        return self.b_enc[layer]

    def decoder_rows(self, layer: int, features: torch.Tensor) -> torch.Tensor:
        return self.dec[layer].rows(features)

    def decoder_bias(self, layer: int) -> torch.Tensor:
        return self.b_dec[layer]

    def skip(self, layer: int, x: torch.Tensor) -> torch.Tensor | None:
        return None if self.W_skip is None else x @ self.W_skip[layer].to(x.dtype).T

    @property
    def has_skip(self) -> bool:
        return self.W_skip is not None
