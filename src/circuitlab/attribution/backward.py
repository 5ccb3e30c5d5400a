"""The transpose of the local replacement model, applied to many targets at once.

With attention patterns and norm scales frozen and MLPs replaced by (linear skip + constant),
the residual stream is linear in the node values. So instead of re-running the prompt through
autograd for every batch of targets, the sweep below applies the transposed map directly,
layer by layer from the top: frozen post-MLP norm, the skip path, the pre-MLP norm, the
attention value/output path ``P^T`` per head, the pre-attention norm. At each layer the
gradient at the write point is contracted with the sources written there (``Sources.read``),
and targets read at that layer inject their encoder rows.

Two savings come from causality and depth: a batch of targets at positions ``<= p`` only needs
positions ``0..p``, and targets at layers ``<= l`` need no work above ``l``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.norms import norm_transpose
from ..models.session import Capture
from ..replacement import ReplacementModel
from .sources import Sources


@dataclass
class _Layer:
    """Frozen pieces of one block: patterns ``[heads, q, k]``, scales ``[pos, 1]``, weights."""

    pattern: torch.Tensor
    ln1: torch.Tensor
    post_attn: torch.Tensor | None
    ln2: torch.Tensor
    post_mlp: torch.Tensor | None
    W_V: torch.Tensor  # [kv_heads * d_head, d]
    W_O: torch.Tensor  # [d, heads * d_head]
    W_skip: torch.Tensor | None  # [d, d], skip(x) = x @ W_skip.T


class FrozenBackward:
    """Transposed local replacement model of one captured prompt."""

    def __init__(self, model: ReplacementModel, capture: Capture, dtype: torch.dtype):
        self.model = model
        ad, spec, tc = model.adapter, model.spec, model.transcoders
        self.n_heads, self.n_kv, self.d_head = spec.n_heads, spec.n_kv_heads, spec.d_head
        self.dtype = dtype
        self.read_at_resid_mid = tc.input_hook == "hook_resid_mid"
        self.write_after_post_norm = tc.output_hook == "hook_mlp_out"
        eye = torch.eye(spec.d_model, dtype=dtype, device=model.device)
        self.layers: list[_Layer] = []
        for layer in range(spec.n_layers):
            block = model.block(layer)
            attn = block.get_submodule(ad.attn)
            skip = tc.skip(layer, eye) if tc.has_skip else None  # rows: skip(e_i) -> W_skip.T
            self.layers.append(
                _Layer(
                    pattern=capture.patterns[layer][0].to(dtype),
                    ln1=capture.scales["ln1"][layer][0],
                    post_attn=capture.scales["post_attn_norm"][layer][0]
                    if ad.post_attn_norm
                    else None,
                    ln2=capture.scales["ln2"][layer][0],
                    post_mlp=capture.scales["post_mlp_norm"][layer][0]
                    if ad.post_mlp_norm
                    else None,
                    W_V=ad.value_weight(attn).to(dtype),
                    W_O=ad.out_weight(attn).to(dtype),
                    W_skip=None if skip is None else skip.T.contiguous(),
                )
            )
        assert capture.final_scale is not None
        self.final_scale = capture.final_scale[0]

    def _norm_t(
        self, name: str | None, layer: int | None, g: torch.Tensor, scale: torch.Tensor
    ) -> torch.Tensor:
        ad = self.model.adapter
        if layer is None:
            module = self.model.module(ad.final_norm)
        else:
            module = self.model.block(layer).get_submodule(name)  # type: ignore[arg-type]
        return norm_transpose(ad.norm, module, g, scale[: g.shape[1]])

    def _attention_t(self, lay: _Layer, g: torch.Tensor) -> torch.Tensor:
        """Transpose of ``x -> sum_h P_h x W_V,h W_O,h`` for ``g [batch, pos, d]``."""
        b, p, _ = g.shape
        gz = (g @ lay.W_O).view(b, p, self.n_heads, self.d_head).transpose(1, 2)  # [b, h, p, dh]
        gv = torch.einsum("hqk,bhqd->bhkd", lay.pattern[:, :p, :p], gz)
        if self.n_kv != self.n_heads:
            gv = gv.view(b, self.n_kv, self.n_heads // self.n_kv, p, self.d_head).sum(2)
        return gv.transpose(1, 2).reshape(b, p, -1) @ lay.W_V

    def rows(
        self,
        sources: Sources,
        layers: torch.Tensor,
        positions: torch.Tensor,
        vectors: torch.Tensor,
    ) -> torch.Tensor:
        """Edges ``[batch, n_cols]`` into targets read at ``(layers[b], positions[b])``.

        ``vectors [batch, d]`` are the targets' read directions: encoder rows for features
        (layer < n_layers, read at the transcoder input point) or logit directions (layer ==
        n_layers, read at the final norm's output).
        """
        ad = self.model.adapter
        n_layers = len(self.layers)
        batch = layers.shape[0]
        p = int(positions.max()) + 1
        vectors = vectors.to(self.dtype)
        rows = torch.arange(batch, device=vectors.device)
        out = torch.zeros(batch, sources.n_cols + 1, dtype=self.dtype, device=vectors.device)
        g = torch.zeros(batch, p, vectors.shape[1], dtype=self.dtype, device=vectors.device)
        top = layers == n_layers
        if top.any():
            g_final = torch.zeros_like(g)
            g_final[rows[top], positions[top]] = vectors[top]
            g = self._norm_t(None, None, g_final, self.final_scale)
        for layer in range(min(int(layers.max()), n_layers - 1), -1, -1):
            lay = self.layers[layer]
            # MLP block: g is the gradient at the residual after this layer.
            gw = g
            if lay.post_mlp is not None and not self.write_after_post_norm:
                gw = self._norm_t(ad.post_mlp_norm, layer, g, lay.post_mlp)
            sources.read(out, layer, gw)
            g_read = gw @ lay.W_skip if lay.W_skip is not None else torch.zeros_like(g)
            here = layers == layer
            if here.any():
                g_read[rows[here], positions[here]] += vectors[here]
            if not self.read_at_resid_mid:
                g_read = self._norm_t(ad.ln2, layer, g_read, lay.ln2)
            g = g + g_read
            # Attention block: g is now the gradient at the residual between the two blocks.
            ga = (
                g
                if lay.post_attn is None
                else self._norm_t(ad.post_attn_norm, layer, g, lay.post_attn)
            )
            g = g + self._norm_t(ad.ln1, layer, self._attention_t(lay, ga), lay.ln1)
        sources.read_tokens(out, g)
        return out[:, :-1]
