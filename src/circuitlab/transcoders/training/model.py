"""The trainable form of per-layer and cross-layer transcoders (all layers in one module).

Shapes (``L`` layers, ``F = d_transcoder``, ``d = d_model``): ``W_enc [L, F, d]``,
``b_enc [L, F]``, ``b_dec [L, d]``, optional ``W_skip [L, d, d]`` (``skip(x) = x @ W_skip[l].T``),
JumpReLU ``threshold [L, F]``; per-layer ``W_dec [L, F, d]``, or for a CLT ``W_dec[l]
[F, L - l, d]`` (feature ``f`` of layer ``l`` writes ``W_dec[l][f, j]`` into layer ``l + j``).

Training works on *normalised* activations: layer ``l``'s inputs are divided by ``in_scale[l]``
and its MLP outputs by ``out_scale[l]``, both ``sqrt(E ||v||^2 / d)`` measured on the first
buffer, so one learning rate and one sparsity coefficient suit every layer and model.
``to_transcoders()`` folds the scales back into the weights: the saved transcoders read and
write raw activations.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..activations import Activation, JumpReLU, ReLU, TopK
from ..base import Transcoders
from ..cross_layer import CrossLayerTranscoder
from ..per_layer import SingleLayerTranscoder, TranscoderSet
from .jumprelu import jump_relu

KINDS = ("plt", "clt")
ACTIVATIONS = ("relu", "jump_relu", "topk")


class TrainableTranscoders(nn.Module):
    """Transcoders for all ``n_layers`` layers with trainable parameters (module docstring)."""

    in_scale: torch.Tensor
    out_scale: torch.Tensor

    def __init__(
        self,
        n_layers: int,
        d_model: int,
        d_transcoder: int,
        *,
        kind: str = "plt",
        activation: str = "jump_relu",
        k: int = 32,
        skip: bool = False,
        bandwidth: float = 0.1,
        init_threshold: float = 0.5,
        tanh_scale: float = 1.0,
        seed: int = 0,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"Unknown transcoder kind {kind!r}; use plt or clt.")
        if activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {activation!r}; use relu, jump_relu or topk.")
        if activation == "topk" and not 1 <= k <= d_transcoder:
            raise ValueError(f"TopK needs 1 <= k <= d_transcoder; got k={k}.")
        L, F, d = n_layers, d_transcoder, d_model
        self.n_layers, self.d_model, self.d_transcoder = L, d, F
        self.kind, self.activation, self.k = kind, activation, k
        self.bandwidth, self.tanh_scale = bandwidth, tanh_scale
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(L, F, d, generator=g)
        w /= w.norm(dim=-1, keepdim=True)
        # Encoder rows start as unit vectors; decoders as short copies of them (small output).
        self.W_enc = nn.Parameter(w.clone())
        self.b_enc = nn.Parameter(torch.zeros(L, F))
        if kind == "plt":
            self.W_dec = nn.Parameter(0.1 * w.clone())
        else:
            self.W_dec = nn.ParameterList(
                [
                    nn.Parameter(0.1 / math.sqrt(L - l) * w[l, :, None, :].repeat(1, L - l, 1))
                    for l in range(L)  # noqa: E741
                ]
            )
        self.b_dec = nn.Parameter(torch.zeros(L, d))
        self.W_skip = nn.Parameter(torch.zeros(L, d, d)) if skip else None
        self.threshold = (
            nn.Parameter(torch.full((L, F), init_threshold)) if activation == "jump_relu" else None
        )
        self.register_buffer("in_scale", torch.ones(L))
        self.register_buffer("out_scale", torch.ones(L))

    # ---- forward --------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Activations ``[L, n, F]`` of normalised inputs ``[L, n, d]``."""
        pre = torch.einsum("lnd,lfd->lnf", x, self.W_enc) + self.b_enc[:, None]
        if self.activation == "relu":
            return torch.relu(pre)
        if self.activation == "jump_relu":
            assert self.threshold is not None
            return jump_relu(pre, self.threshold[:, None, :], self.bandwidth)
        values, idx = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, idx, torch.relu(values))

    def decode(self, acts: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Normalised reconstructions ``[L, n, d]`` of the MLP outputs."""
        if isinstance(self.W_dec, nn.Parameter):
            out = torch.einsum("lnf,lfd->lnd", acts, self.W_dec)
        else:
            out = torch.zeros_like(x)
            for l, dec in enumerate(self.W_dec):  # noqa: E741
                out[l:] = out[l:] + torch.einsum("nf,fjd->jnd", acts[l], dec)
        out = out + self.b_dec[:, None]
        if self.W_skip is not None:
            out = out + torch.einsum("lnd,led->lne", x, self.W_skip)
        return out

    def decoder_norms(self) -> torch.Tensor:
        """``||W_dec_f||`` per feature ``[L, F]`` (over all output layers for a CLT)."""
        if isinstance(self.W_dec, nn.Parameter):
            return self.W_dec.norm(dim=-1)
        return torch.stack([dec.flatten(1).norm(dim=1) for dec in self.W_dec])

    def sparsity(self, acts: torch.Tensor) -> torch.Tensor:
        """Per-layer sparsity penalty ``[L]`` (mean over tokens), decoder-norm weighted.

        ReLU: ``Σ_f a_f ||d_f||`` (L1). JumpReLU: ``Σ_f tanh(c · a_f ||d_f||)`` (a smooth L0).
        TopK: none (the activation fixes L0).
        """
        if self.activation == "topk":
            return acts.new_zeros(self.n_layers)
        weighted = acts * self.decoder_norms()[:, None, :]
        if self.activation == "jump_relu":
            weighted = torch.tanh(self.tanh_scale * weighted)
        return weighted.sum(-1).mean(-1)

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keeps JumpReLU thresholds positive after an optimiser step."""
        if self.threshold is not None:
            self.threshold.clamp_(min=1e-4)

    # ---- export ---------------------------------------------------------------------------
    def _activation(self, layer: int) -> Activation:
        if self.activation == "relu":
            return ReLU()
        if self.activation == "topk":
            return TopK(self.k)
        assert self.threshold is not None
        return JumpReLU(self.threshold[layer].detach().clone())

    @torch.no_grad()
    def to_transcoders(
        self,
        *,
        input_hook: str,
        output_hook: str,
        model_name: str | None = None,
        name: str | None = None,
    ) -> Transcoders:
        """Inference transcoders on raw activations (the normalisation folded in)."""
        s_in, s_out = self.in_scale, self.out_scale
        W_enc = self.W_enc.detach() / s_in[:, None, None]
        b_dec = self.b_dec.detach() * s_out[:, None]
        W_skip = None
        if self.W_skip is not None:
            W_skip = self.W_skip.detach() * (s_out / s_in)[:, None, None]
        L = self.n_layers
        if isinstance(self.W_dec, nn.Parameter):
            layers = [
                SingleLayerTranscoder(
                    W_enc=W_enc[l].clone(),
                    b_enc=self.b_enc[l].detach().clone(),
                    W_dec=(self.W_dec[l].detach() * s_out[l]).clone(),
                    b_dec=b_dec[l].clone(),
                    activation=self._activation(l),
                    W_skip=None if W_skip is None else W_skip[l].clone(),
                )
                for l in range(L)  # noqa: E741
            ]
            return TranscoderSet(
                layers,
                input_hook=input_hook,
                output_hook=output_hook,
                name=name,
                model_name=model_name,
            )
        W_dec = [
            (dec.detach() * s_out[l:][None, :, None]).clone()
            for l, dec in enumerate(self.W_dec)  # noqa: E741
        ]
        return CrossLayerTranscoder(
            W_enc=W_enc.clone(),
            b_enc=self.b_enc.detach().clone(),
            W_dec=list(W_dec),
            b_dec=b_dec.clone(),
            activations=[self._activation(i) for i in range(L)],
            W_skip=W_skip,
            input_hook=input_hook,
            output_hook=output_hook,
            name=name,
            model_name=model_name,
        )
