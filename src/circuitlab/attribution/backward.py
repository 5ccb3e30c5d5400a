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

        Targets are processed highest layer first: above its read layer a target's gradient is
        zero, so at each layer only the prefix of targets already injected is computed on.
        """
        ad = self.model.adapter
        n_layers = len(self.layers)
        batch = layers.shape[0]
        order = torch.argsort(layers, descending=True, stable=True)
        layers, positions, vectors = layers[order], positions[order], vectors[order].to(self.dtype)
        # n_above[l]: targets read above layer l's MLP input; n_from[l]: read at l or above.
        counts = torch.bincount(layers.cpu(), minlength=n_layers + 1)
        n_from = (counts.flip(0).cumsum(0).flip(0)).tolist()
        n_above = n_from[1:]
        p = int(positions.max()) + 1
        out = torch.zeros(batch, sources.n_cols + 1, dtype=self.dtype, device=vectors.device)
        g = torch.zeros(batch, p, vectors.shape[1], dtype=self.dtype, device=vectors.device)
        n_top = n_from[n_layers]
        if n_top:
            g_final = torch.zeros_like(g[:n_top])
            g_final[torch.arange(n_top), positions[:n_top]] = vectors[:n_top]
            g[:n_top] = self._norm_t(None, None, g_final, self.final_scale)
        for layer in range(min(int(layers[0]), n_layers - 1), -1, -1):
            lay = self.layers[layer]
            na, nf = n_above[layer], n_from[layer]
            # MLP block: g is the gradient at the residual after this layer.
            gw = g[:na]
            if lay.post_mlp is not None and not self.write_after_post_norm:
                gw = self._norm_t(ad.post_mlp_norm, layer, gw, lay.post_mlp)
            if na:
                sources.read(out[:na], layer, gw)
            g_read = g.new_zeros(nf, p, g.shape[2])
            if lay.W_skip is not None and na:
                g_read[:na] = gw @ lay.W_skip
            if nf > na:
                here = torch.arange(na, nf)
                g_read[here, positions[na:nf]] += vectors[na:nf]
            if not self.read_at_resid_mid:
                g_read = self._norm_t(ad.ln2, layer, g_read, lay.ln2)
            gl = g[:nf]
            gl += g_read
            # Attention block: gl is now the gradient at the residual between the two blocks.
            ga = (
                gl
                if lay.post_attn is None
                else self._norm_t(ad.post_attn_norm, layer, gl, lay.post_attn)
            )
            gl += self._norm_t(ad.ln1, layer, self._attention_t(lay, ga), lay.ln1)
        sources.read_tokens(out, g)
        result = torch.empty_like(out[:, :-1])
        result[order] = out[:, :-1]
        return result
