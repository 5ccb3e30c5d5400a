"""The local replacement model applied forward: node contributions carried up the residual.

With attention patterns, norm scales and MLP errors frozen, the residual stream is linear in
the node values, so any set of node writes can be pushed up through the frozen blocks
(pre-attention norm, values, pattern, output, Gemma's post-norms; the transcoders' linear skip
path) with no constants: the result is exactly those nodes' part of the residual. The QK sweep
pushes every node at once (``node_writes``), which leaves the bias part of a query or key as
``value - nodes' part``; head loadings push one source, one block at a time
(``attention_forward``, ``mlp_forward``), keeping each head's output.

The frozen pieces are the graph engine's own (``FrozenBackward``'s folded norms and patterns),
so forward and backward sweeps agree to rounding. Every step takes a window of positions
``lo .. lo + m - 1`` (``lo`` 0: the prompt from its start): a field that is zero before ``lo``
stays zero there, since attention only reads earlier positions.
"""

from __future__ import annotations

from typing import cast

import torch

from .frozen import FrozenPrompt

#: Query positions per block of the causal pattern products (``heads_forward``,
#: ``transposed.heads_transposed``): a block of queries reads only the keys up to its last one,
#: which skips ~40% of a 256-position product.
CAUSAL_BLOCK = 64


def forward_fields(
    fp: FrozenPrompt, writes: torch.Tensor, embed: torch.Tensor, stop: int
) -> list[torch.Tensor]:
    """``f[L] [p, d]`` for ``L = 0 .. stop``: the residual entering layer ``L`` (``stop ==
    n_layers``: after the last block) made by ``writes [n_layers, p, d]`` (added at each
    layer's MLP write point) and ``embed [p, d]`` (the embedding output), positions ``< p``."""
    f = embed.to(fp.dtype)
    fields = [f]
    for layer in range(stop):
        f = f + attention_forward(fp, layer, f)[1]
        f = f + mlp_forward(fp, layer, f, writes[layer])
        fields.append(f)
    return fields


def attention_forward(
    fp: FrozenPrompt, layer: int, f: torch.Tensor, lo: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer ``layer``'s attention applied to the field ``f [m, d]`` (positions ``lo ..``):
    ``(z [m, n_heads * d_head], out [m, d])``, each head's pattern-weighted values and what
    the block adds to the residual (after Gemma's post-attention norm)."""
    lay = fp.backward.layers[layer]
    m = f.shape[0]
    pattern = lay.pattern_t.transpose(1, 2)[:, lo : lo + m, lo : lo + m]  # [heads, q, k]
    z = heads_forward(pattern, f @ lay.W_V.T, fp.model.spec.n_kv_heads)
    out = z @ lay.W_O.T
    if lay.post_attn is not None:
        out = _lin_norm(fp, fp.model.adapter.post_attn_norm, layer, out, lay.post_attn[lo : lo + m])  # type: ignore[arg-type]
    return z, out


def mlp_forward(
    fp: FrozenPrompt, layer: int, f: torch.Tensor, writes: torch.Tensor, lo: int = 0
) -> torch.Tensor:
    """What layer ``layer``'s MLP adds to the residual ``[m, d]``: ``writes [m, d]`` (the
    nodes written at its output) plus the transcoders' linear skip path of the field ``f [m,
    d]`` entering the MLP, through Gemma's post-feedforward norm where the nodes write before
    it."""
    bw, lay = fp.backward, fp.backward.layers[layer]
    m = f.shape[0]
    w = writes
    if lay.W_skip is not None:  # W_skip: the engine's transposed skip with ln2's w and C folded
        read = f if lay.ln2 is None else f * lay.ln2[lo : lo + m].to(f.dtype)
        w = w + read @ lay.W_skip.T
    if lay.post_mlp is not None and not bw.write_after_post_norm:
        w = _lin_norm(fp, fp.model.adapter.post_mlp_norm, layer, w, lay.post_mlp[lo : lo + m])  # type: ignore[arg-type]
    return w


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


def heads_forward(pattern: torch.Tensor, v: torch.Tensor, n_kv: int) -> torch.Tensor:
    """``z [m, n_heads * d_head]``: every head's causal ``pattern [n_heads, q, k]`` (``m x m``,
    zero above the diagonal) applied to the values ``v [m, n_kv * d_head]`` of its key-value
    head, a block of ``CAUSAL_BLOCK`` queries at a time (each reads only keys up to its last)."""
    n_heads, m = pattern.shape[0], v.shape[0]
    group, d_head = n_heads // n_kv, v.shape[1] // n_kv
    z = torch.empty(m, n_heads, d_head, dtype=v.dtype, device=v.device)
    vk = v.view(m, n_kv, d_head)
    for lo in range(0, m, CAUSAL_BLOCK):
        hi = min(lo + CAUSAL_BLOCK, m)
        for kv in range(n_kv):
            heads = slice(kv * group, (kv + 1) * group)
            z[lo:hi, heads] = torch.matmul(pattern[heads, lo:hi, :hi], vk[:hi, kv]).transpose(0, 1)
    return z.view(m, -1)


def _lin_norm(fp: FrozenPrompt, name: str, layer: int, x: torch.Tensor, scale: torch.Tensor):
    """A frozen norm's linear part applied forward: ``C(x) * s * w`` (no bias)."""
    ad = fp.model.adapter
    module = fp.model.block(layer).get_submodule(name)
    w = cast(torch.Tensor, module.weight).to(x.dtype)
    w = 1.0 + w if ad.norm == "rms_gemma" else w
    if ad.norm == "layernorm":
        x = x - x.mean(-1, keepdim=True)
    return x * scale.to(x.dtype) * w
