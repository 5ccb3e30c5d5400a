"""The local replacement model transposed, one gradient field at a time, each head exposed.

The graph engine's sweep (``attribution.backward.FrozenBackward.rows``) carries a batch of
target gradients down the frozen model and reads every source at every layer. Head loadings
need something else from the same transposed map: one target's gradient over a window of
positions ``lo .. lo + m - 1`` (the positions between an edge's source and its target, the only
ones both of its sweeps reach), no readout, and at each attention layer the gradient at every
head's output (``gz``), where the head's loading is read. The steps below use the engine's
frozen pieces (``FrozenBackward.layers``: patterns with the pre-attention norm's scale, value
weights with its ``w`` and centring folded in), so they agree with its edges to rounding.
"""

from __future__ import annotations

import torch

from ..models.norms import norm_transpose
from .forward import CAUSAL_BLOCK
from .frozen import FrozenPrompt


def mlp_transposed(fp: FrozenPrompt, layer: int, g: torch.Tensor, lo: int = 0) -> torch.Tensor:
    """Carries the gradient ``g [m, d]`` at the residual after layer ``layer`` back across its
    MLP, in place (the transcoders' linear skip path; the MLP's output is otherwise a node).
    Returns the gradient at the MLP's write point (``[m, d]``: through Gemma's post-feedforward
    norm where the nodes write before it), which the nodes written there read."""
    bw, lay = fp.backward, fp.backward.layers[layer]
    m = g.shape[0]
    gw = g
    if lay.post_mlp is not None and not bw.write_after_post_norm:
        gw = _norm_t(fp, fp.model.adapter.post_mlp_norm, layer, g, lay.post_mlp[lo : lo + m])
    if lay.W_skip is not None:
        sk = gw @ lay.W_skip
        if lay.ln2 is not None:
            sk *= lay.ln2[lo : lo + m].to(g.dtype)
        g += sk
    return gw


def attention_transposed(
    fp: FrozenPrompt, layer: int, g: torch.Tensor, lo: int = 0
) -> torch.Tensor:
    """Carries ``g [m, d]`` at the residual after layer ``layer``'s attention back to the
    residual entering it, in place (``g += sum_h H_h^T g``). Returns ``gz [m, n_heads *
    d_head]``: the gradient at each head's pattern-weighted values (``z`` of
    ``forward.attention_forward``), so that ``<gz, z>`` head by head is what each head passes."""
    lay = fp.backward.layers[layer]
    m = g.shape[0]
    ga = g
    if lay.post_attn is not None:
        ga = _norm_t(fp, fp.model.adapter.post_attn_norm, layer, g, lay.post_attn[lo : lo + m])
    gz = ga @ lay.W_O
    pattern_t = lay.pattern_t[:, lo : lo + m, lo : lo + m]  # [heads, k, q]
    g.addmm_(heads_transposed(pattern_t, gz, fp.model.spec.n_kv_heads), lay.W_V)
    return gz


def heads_transposed(pattern_t: torch.Tensor, gz: torch.Tensor, n_kv: int) -> torch.Tensor:
    """``gv [m, n_kv * d_head]``: ``sum_h pattern_t[h] @ gz[:, h]`` over the query heads of
    each key-value head, for a causal ``pattern_t [n_heads, k, q]`` (zero where ``q < k``),
    a block of ``CAUSAL_BLOCK`` keys at a time (each reads only queries from its first on)."""
    n_heads, m = pattern_t.shape[0], gz.shape[0]
    group, d_head = n_heads // n_kv, gz.shape[1] // n_heads
    gh = gz.view(m, n_heads, d_head).transpose(0, 1)  # [heads, q, d_head]
    gv = torch.empty(m, n_kv, d_head, dtype=gz.dtype, device=gz.device)
    for lo in range(0, m, CAUSAL_BLOCK):
        hi = min(lo + CAUSAL_BLOCK, m)
        for kv in range(n_kv):
            heads = slice(kv * group, (kv + 1) * group)
            gv[lo:hi, kv] = torch.matmul(pattern_t[heads, lo:hi, lo:], gh[heads, lo:]).sum(0)
    return gv.view(m, -1)


def _norm_t(
    fp: FrozenPrompt, name: str | None, layer: int, g: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """The transpose of a frozen norm of block ``layer`` (``scale [m, 1]``, the window's)."""
    module = fp.model.block(layer).get_submodule(name)  # type: ignore[arg-type]
    return norm_transpose(fp.model.adapter.norm, module, g, scale)
