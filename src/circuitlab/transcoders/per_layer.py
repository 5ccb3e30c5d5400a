"""Per-layer transcoders (PLT): one transcoder per MLP, each decoding into its own layer."""

from __future__ import annotations

import torch
from torch import nn

from .activations import Activation
from .base import Transcoders
from .rows import ParameterRows, Rows


class SingleLayerTranscoder(nn.Module):
    """The transcoder of one layer.

    Shapes: ``W_enc [d_t, d_model]``, ``b_enc [d_t]``, ``W_dec [d_t, d_model]`` (in memory or a
    lazy ``Rows`` source), ``b_dec [d_model]``, optional ``W_skip [d_model, d_model]`` with
    ``skip(x) = x @ W_skip.T``.
    """

    def __init__(
        self,
        W_enc: torch.Tensor | Rows,
        b_enc: torch.Tensor,
        W_dec: torch.Tensor | Rows,
        b_dec: torch.Tensor,
        activation: Activation,
        W_skip: torch.Tensor | None = None,
    ):
        super().__init__()
        # In-memory weights are registered parameters (so ``.to()`` moves them) behind a
        # ``ParameterRows`` view; lazy ones stay ``Rows`` sources that read on demand.
        enc, dec = self._rows("W_enc_data", W_enc), self._rows("W_dec_data", W_dec)
        if enc.shape != dec.shape:
            raise ValueError(f"W_enc {enc.shape} and W_dec {dec.shape} must have the same shape.")
        self.enc: Rows = enc
        self.dec: Rows = dec
        self.b_enc = nn.Parameter(b_enc, requires_grad=False)
        self.b_dec = nn.Parameter(b_dec, requires_grad=False)
        self.W_skip = None if W_skip is None else nn.Parameter(W_skip, requires_grad=False)
        self.activation = activation
        self._W_enc_full: torch.Tensor | None = None

    def _rows(self, name: str, w: torch.Tensor | Rows) -> Rows:
        if not isinstance(w, torch.Tensor):
            return w
        param = nn.Parameter(w, requires_grad=False)
        self.register_parameter(name, param)
        return ParameterRows(self, name)

    @property
    def d_transcoder(self) -> int:
        return self.enc.shape[0]

    @property
    def d_model(self) -> int:
        return self.enc.shape[1]

    @property
    def W_enc(self) -> torch.Tensor:
        """``[d_t, d_model]`` (read once and kept if the encoder is lazy)."""
        if isinstance(self.enc, ParameterRows):
            return self.enc.tensor
        if self._W_enc_full is None:
            self._W_enc_full = self.enc.full()
        return self._W_enc_full

    @property
    def W_dec(self) -> torch.Tensor:
        """``[d_t, d_model]``; reads the whole file when the decoder is lazy."""
        return self.dec.full()

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        W = self.W_enc.to(x.dtype)
        return x @ W.T + self.b_enc.to(x.dtype)

    def skip(self, x: torch.Tensor) -> torch.Tensor | None:
        return None if self.W_skip is None else x @ self.W_skip.to(x.dtype).T


class TranscoderSet(Transcoders):
    """Per-layer transcoders for layers ``0 .. n_layers-1``, all of one width."""

    is_cross_layer = False

    def __init__(
        self,
        layers: list[SingleLayerTranscoder],
        *,
        input_hook: str = "mlp.hook_in",
        output_hook: str = "hook_mlp_out",
        name: str | None = None,
        model_name: str | None = None,
    ):
        super().__init__()
        if not layers:
            raise ValueError("A TranscoderSet needs at least one layer.")
        widths = {t.d_transcoder for t in layers}
        d_models = {t.d_model for t in layers}
        if len(widths) != 1 or len(d_models) != 1:
            raise ValueError(
                f"All layers must share d_transcoder and d_model; got widths {sorted(widths)} "
                f"and d_model {sorted(d_models)}."
            )
        skips = {t.W_skip is not None for t in layers}
        if len(skips) != 1:
            raise ValueError("Either every layer has W_skip or none does.")
        self.layers = nn.ModuleList(layers)
        self.n_layers = len(layers)
        self.d_transcoder = widths.pop()
        self.d_model = d_models.pop()
        self.input_hook = input_hook
        self.output_hook = output_hook
        self.name = name
        self.model_name = model_name

    def _layer(self, layer: int) -> SingleLayerTranscoder:
        return self.layers[layer]  # type: ignore[return-value]

    def pre_activations(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        return self._layer(layer).pre_activations(x)

    def activate(self, layer: int, pre: torch.Tensor) -> torch.Tensor:
        return self._layer(layer).activation(pre)

    def encoder_rows(self, layer: int, features: torch.Tensor) -> torch.Tensor:
        t = self._layer(layer)
        if t._W_enc_full is not None:
            return t._W_enc_full[features.to(t._W_enc_full.device)]
        return t.enc.rows(features)

    def encoder_bias(self, layer: int) -> torch.Tensor:
        return self._layer(layer).b_enc

    def decoder_rows(self, layer: int, features: torch.Tensor) -> torch.Tensor:
        return self._layer(layer).dec.rows(features)[:, None, :]

    def decoder_bias(self, layer: int) -> torch.Tensor:
        return self._layer(layer).b_dec

    def skip(self, layer: int, x: torch.Tensor) -> torch.Tensor | None:
        return self._layer(layer).skip(x)

    @property
    def has_skip(self) -> bool:
        return self._layer(0).W_skip is not None

    @property
    def activation(self) -> Activation:
        """The activation of layer 0 (all layers share its kind)."""
        return self._layer(0).activation
