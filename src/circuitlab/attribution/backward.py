"""The transpose of the local replacement model, applied to many targets at once.

With attention patterns and norm scales frozen and MLPs replaced by (linear skip + constant),
the residual stream is linear in the node values. So instead of re-running the prompt through
autograd for every batch of targets, the sweep below applies the transposed map directly,
layer by layer from the top: frozen post-MLP norm, the skip path, the pre-MLP norm, the
attention value/output path ``P^T`` per head, the pre-attention norm. At each layer the
gradient at the write point is contracted with the sources written there (``Sources.read``),
and targets read at that layer inject their encoder rows.

The pre-attention and pre-MLP norms (scale ``s`` per position, weight ``w``, centring ``C``
for LayerNorm) are folded in once per prompt instead of being applied to every gradient: the
attention path's output weights become ``W_V diag(w) C`` and ``s`` of the key position scales
the transposed pattern; target read vectors and the skip path get ``diag(w) C`` too, so a
layer's update of the gradient is one in-place matmul. Gemma's extra post-norms stay explicit.

Two savings come from causality and depth: a batch of targets at positions ``<= p`` only needs
positions ``0..p``, and targets at layers ``<= l`` need no work above ``l``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.norms import norm_transpose
from ..models.session import Capture
from ..replacement import ReplacementModel
from .offload import SpillFile
from .sources import Sources


@dataclass
class _Layer:
    """Frozen pieces of one block, with the pre-attention and pre-MLP norms folded in.

    ``pattern_t [heads, k, q]``: the transposed pattern (a view of ``[heads, q, k]``), each key
    row ``k`` scaled by the pre-attention norm's scale ``s1[k]``; ``W_V [kv_heads * d_head, d]`` already multiplied by
    that norm's ``diag(w) C``; ``ln2 [pos, 1]`` the pre-MLP norm's scale (None when targets read
    before it), its ``diag(w) C`` folded into ``W_skip`` and applied to read vectors.
    """

    pattern_t: torch.Tensor
    post_attn: torch.Tensor | None
    ln2: torch.Tensor | None
    post_mlp: torch.Tensor | None
    W_V: torch.Tensor  # [kv_heads * d_head, d]
    W_O: torch.Tensor  # [d, heads * d_head]
    W_skip: torch.Tensor | None  # [d, d]: gradient at the write point -> at the read point


class FrozenBackward:
    """Transposed local replacement model of one captured prompt."""

    def __init__(
        self,
        model: ReplacementModel,
        capture: Capture,
        dtype: torch.dtype,
        *,
        consume: bool = False,
        spill: SpillFile | None = None,
    ):
        """``consume``: take the capture's patterns (they leave ``capture.patterns``) and scale
        them in place instead of copying them: one copy of ``[layers, heads, pos, pos]``
        instead of two. ``spill``: park the frozen patterns in that file (``offload="disk"``)."""
        self.model = model
        ad, spec, tc = model.adapter, model.spec, model.transcoders
        self.n_heads, self.n_kv, self.d_head = spec.n_heads, spec.n_kv_heads, spec.d_head
        self.dtype = dtype
        self.read_at_resid_mid = tc.input_hook == "hook_resid_mid"
        self.write_after_post_norm = tc.output_hook == "hook_mlp_out"
        eye = torch.eye(spec.d_model, dtype=dtype, device=model.device)
        one = torch.ones(1, 1, dtype=dtype, device=model.device)
        self.layers: list[_Layer] = []
        for layer in range(spec.n_layers):
            block = model.block(layer)
            attn = block.get_submodule(ad.attn)
            ln1 = block.get_submodule(ad.ln1)
            ln2 = block.get_submodule(ad.ln2)
            s1 = capture.scales["ln1"][layer][0].to(dtype)  # [pos, 1]
            pattern = _scaled_pattern(capture, layer, s1[:, 0], dtype, consume)  # [heads, q, k]
            if spill is not None:
                pattern = spill.put(pattern)
            skip = tc.skip(layer, eye) if tc.has_skip else None  # rows: skip(e_i) -> W_skip.T
            W_skip = None if skip is None else skip.T.contiguous()
            if W_skip is not None and not self.read_at_resid_mid:
                W_skip = norm_transpose(ad.norm, ln2, W_skip, one)
            self.layers.append(
                _Layer(
                    pattern_t=pattern.transpose(1, 2),
                    post_attn=capture.scales["post_attn_norm"][layer][0]
                    if ad.post_attn_norm
                    else None,
                    ln2=None if self.read_at_resid_mid else capture.scales["ln2"][layer][0],
                    post_mlp=capture.scales["post_mlp_norm"][layer][0]
                    if ad.post_mlp_norm
                    else None,
                    W_V=norm_transpose(ad.norm, ln1, ad.value_weight(attn).to(dtype), one),
                    W_O=ad.out_weight(attn).to(dtype),
                    W_skip=W_skip,
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

    def _attention_t(self, lay: _Layer, g: torch.Tensor, out: torch.Tensor) -> None:
        """Adds the transposed attention path of ``g [batch, pos, d]`` into ``out`` (same shape).

        ``x -> C(sum_h P_h x W_V,h W_O,h * s1 * w)`` transposed, with the norm folded into
        ``pattern_t`` and ``W_V``. The head projection is computed transposed, ``W_O^T g^T
        [heads * d_head, batch * pos]``, so that each head's block ``[d_head * batch, q]`` is a
        matrix the pattern multiplies from the right without a copy; heads sharing a value head
        (GQA) accumulate into one block of ``gv [kv_heads * d_head, batch * pos]``, and a single
        product with all of ``W_V`` (inner size ``kv_heads * d_head``) adds the result.
        """
        b, p, d = g.shape
        dh, group = self.d_head, self.n_heads // self.n_kv
        gz = torch.mm(lay.W_O.t(), g.reshape(b * p, d).t()).view(self.n_heads, dh * b, p)
        gv = torch.zeros(self.n_kv, dh * b, p, dtype=g.dtype, device=g.device)
        pattern = lay.pattern_t.transpose(1, 2)  # [heads, q, k]
        for h in range(self.n_heads):
            causal_matmul(gz[h], pattern[h, :p, :p], gv[h // group])
        out.view(b * p, d).addmm_(gv.view(self.n_kv * dh, b * p).t(), lay.W_V)

    def _attention_at(
        self, lay: _Layer, v: torch.Tensor, positions: torch.Tensor, out: torch.Tensor
    ) -> None:
        """``_attention_t`` for gradients that are non-zero at one position each: ``v [n, d]``
        at ``positions [n]``, added into ``out [n, pos, d]``.

        Targets just injected at this layer are such gradients; projecting them at their own
        position only skips the ``W_O`` product at every other position (all zero).
        """
        n, p, d = out.shape
        dh, group = self.d_head, self.n_heads // self.n_kv
        z = (v @ lay.W_O).view(n, self.n_kv, group, dh)  # [n, kv_heads, heads per kv, d_head]
        pattern = lay.pattern_t.transpose(1, 2)  # [heads, q, k]
        rows = pattern[:, positions, :p].permute(1, 2, 0).reshape(n, p, self.n_kv, group)
        gv = torch.einsum("nkvg,nvge->nkve", rows, z)  # [n, k, kv_heads, d_head]
        out.view(n * p, d).addmm_(gv.reshape(n * p, self.n_kv * dh), lay.W_V)

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
        Targets given in that order (``layers`` not increasing) get a view of the work buffer
        ``[batch, n_cols + 1]`` back instead of a reordered copy.
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
                if lay.W_skip is not None:
                    sk = gw @ lay.W_skip
                    if lay.ln2 is not None:
                        sk *= lay.ln2[:p].to(self.dtype)
                    g[:na] += sk
            if nf > na:
                # Targets read at this layer: their gradient is their read vector at their
                # own position, so their attention below takes that position only.
                new, at = torch.arange(na, nf), positions[na:nf]
                v = vectors[na:nf]
                if lay.ln2 is not None:
                    block = self.model.block(layer).get_submodule(ad.ln2)
                    v = norm_transpose(ad.norm, block, v, lay.ln2[at].to(self.dtype))
                g[new, at] += v
                if lay.post_attn is not None and ad.post_attn_norm is not None:
                    block = self.model.block(layer).get_submodule(ad.post_attn_norm)
                    v = norm_transpose(ad.norm, block, v, lay.post_attn[at].to(self.dtype))
                self._attention_at(lay, v, at, g[na:nf])
            # Attention block: g[:na] is now the gradient at the residual between the blocks.
            if na:
                gl = g[:na]
                ga = (
                    gl
                    if lay.post_attn is None
                    else self._norm_t(ad.post_attn_norm, layer, gl, lay.post_attn)
                )
                self._attention_t(lay, ga, gl)
        sources.read_tokens(out, g)
        if bool((order == torch.arange(batch, device=order.device)).all()):
            return out[:, :-1]  # already in order (``attribute`` sorts): no copy of the rows
        result = torch.empty_like(out[:, :-1])
        result[order] = out[:, :-1]
        return result


#: Key positions per block of ``causal_matmul``.
ATTENTION_BLOCK = 256


def causal_matmul(x: torch.Tensor, pattern: torch.Tensor, out: torch.Tensor) -> None:
    """``out += x @ pattern`` for a causal ``pattern [q, k]`` (zero where ``k > q``) and ``x [n,
    q]``: the keys of block ``[lo, hi)`` only read queries ``>= lo``, which skips the zero half
    of the product on long prompts (56% of the flops at 2,048 positions)."""
    p = x.shape[1]
    for lo in range(0, p, ATTENTION_BLOCK):
        hi = min(lo + ATTENTION_BLOCK, p)
        out[:, lo:hi].addmm_(x[:, lo:], pattern[lo:, lo:hi])


def _scaled_pattern(
    capture: Capture, layer: int, s1: torch.Tensor, dtype: torch.dtype, consume: bool
) -> torch.Tensor:
    """Layer ``layer``'s pattern ``[heads, q, k]`` with each key column ``k`` scaled by the
    pre-attention norm's scale ``s1 [pos]``; taken out of ``capture`` and scaled in place when
    ``consume`` (and the dtype already matches)."""
    if not consume:
        return capture.patterns[layer][0].to(dtype) * s1
    pattern = capture.patterns.pop(layer)[0]
    if pattern.dtype != dtype:
        pattern = pattern.to(dtype)
    return pattern.mul_(s1)
