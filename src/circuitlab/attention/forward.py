"""The local replacement model applied forward: node contributions carried up the residual.

With attention patterns, norm scales and MLP errors frozen, the residual stream is linear in
the node values, so any set of node writes can be pushed up through the frozen blocks
(pre-attention norm, values, pattern, output, Gemma's post-norms; the transcoders' linear skip
path) with no constants: the result is exactly those nodes' part of the residual. Head
loadings push one source (``source_writes``); the QK sweep pushes every node at once
(``node_writes``), which leaves the bias part of a query or key as ``value - nodes' part``.
The frozen pieces are the graph engine's own (``FrozenBackward``'s folded norms and patterns),
so forward and backward sweeps agree to rounding.
"""

from __future__ import annotations

from typing import cast

import torch

from .frozen import FrozenPrompt


def forward_fields(
    fp: FrozenPrompt, writes: torch.Tensor, embed: torch.Tensor, stop: int
) -> list[torch.Tensor]:
    """``f[L] [p, d]`` for ``L = 0 .. stop``: the residual entering layer ``L`` (``stop ==
    n_layers``: after the last block) made by ``writes [n_layers, p, d]`` (added at each
    layer's MLP write point) and ``embed [p, d]`` (the embedding output), positions ``< p``."""
    model, bw = fp.model, fp.backward
    ad, tc = model.adapter, model.transcoders
    p = embed.shape[0]
    f = embed.to(fp.dtype)
    fields = [f]
    for layer in range(stop):
        lay = bw.layers[layer]
        v = f @ lay.W_V.T  # ln1's w and centring folded in; its scale is in pattern_t
        a = heads_forward(fp, lay.pattern_t[:, :p, :p], v) @ lay.W_O.T
        if lay.post_attn is not None:
            a = _lin_norm(fp, ad.post_attn_norm, layer, a, lay.post_attn[:p])  # type: ignore[arg-type]
        f = f + a
        w = writes[layer]
        if tc.has_skip:
            read = f if lay.ln2 is None else _lin_norm(fp, ad.ln2, layer, f, lay.ln2[:p])
            w = w + tc.skip(layer, read.to(model.dtype)).to(fp.dtype)  # type: ignore[union-attr]
        if lay.post_mlp is not None and not bw.write_after_post_norm:
            w = _lin_norm(fp, ad.post_mlp_norm, layer, w, lay.post_mlp[:p])  # type: ignore[arg-type]
        f = f + w
        fields.append(f)
    return fields


def source_writes(fp: FrozenPrompt, col: int, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(writes [n_layers, p, d], embed [p, d])`` of the single source column ``col``."""
    model, src = fp.model, fp.sources
    d = src.tokens.shape[1]
    writes = torch.zeros(model.n_layers, p, d, dtype=fp.dtype)
    embed = torch.zeros(p, d, dtype=fp.dtype)
    n_feat = src.n_features
    if col < n_feat:
        layer, pos, feat = fp.features.indices[col].tolist()
        if pos < p:
            dec = model.transcoders.decoder_rows(layer, torch.tensor([feat]))[0].to(fp.dtype)
            writes[layer : layer + dec.shape[0], pos] = float(fp.features.values[col]) * dec
    elif col < src.token_col:
        layer, pos = divmod(col - n_feat, src.n_pos)
        if pos < p:
            writes[layer, pos] = src.errors[layer, pos]
    elif col - src.token_col < p:
        embed[col - src.token_col] = src.tokens[col - src.token_col]
    return writes, embed


def node_writes(fp: FrozenPrompt, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(writes [n_layers, p, d], embed [p, d])`` of every source column at once: what each
    MLP wrote in the recorded forward less its ``b_dec`` and its skip path's output (so the
    active features' decoded vectors plus the error node), zero at the positions whose
    features and errors the graph zeroes (the BOS); and the token embeddings."""
    model, cap = fp.model, fp.capture
    tc = model.transcoders
    reads, writes = cap.stacked_reads()[:, :p], cap.stacked_writes()[:, :p].to(fp.dtype, copy=True)
    for layer in range(model.n_layers):
        writes[layer] -= tc.decoder_bias(layer).to(fp.dtype)
        skip = tc.skip(layer, reads[layer])
        if skip is not None:
            writes[layer] -= skip.to(fp.dtype)
    writes[:, model.zero_positions] = 0
    return writes, fp.sources.tokens[:p].to(fp.dtype)


def heads_forward(fp: FrozenPrompt, pattern_t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``z [p, n_heads * d_head]``: every head's pattern applied to values ``v [p, kv * d]``."""
    spec = fp.model.spec
    p = v.shape[0]
    vh = v.view(p, spec.n_kv_heads, spec.d_head)
    vh = vh.repeat_interleave(spec.n_heads // spec.n_kv_heads, dim=1)
    return torch.einsum("hkq,khd->qhd", pattern_t, vh).reshape(p, -1)


def _lin_norm(fp: FrozenPrompt, name: str, layer: int, x: torch.Tensor, scale: torch.Tensor):
    """A frozen norm's linear part applied forward: ``C(x) * s * w`` (no bias)."""
    ad = fp.model.adapter
    module = fp.model.block(layer).get_submodule(name)
    w = cast(torch.Tensor, module.weight).to(x.dtype)
    w = 1.0 + w if ad.norm == "rms_gemma" else w
    if ad.norm == "layernorm":
        x = x - x.mean(-1, keepdim=True)
    return x * scale.to(x.dtype) * w
