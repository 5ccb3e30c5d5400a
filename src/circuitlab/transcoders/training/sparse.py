"""Sparse kernels for TopK-style training: a step costs what the active features cost.

With ``m`` active (token, feature) pairs in a batch of ``n`` tokens (``m = n·k`` for TopK and
BatchTopK), the dense step spends ``O(n·F·d)`` on four products: the encoder's forward, its
weight gradient, the decoder's forward and its two gradients. Here only the encoder's forward
stays dense (every pre-activation is needed to pick the top ``k``); the rest cost ``O(m·d)``:

* ``selected_pre``: the chosen pre-activations ``[m]`` as a differentiable function of
  ``W_enc [F, d]`` and ``b_enc [F]``, whose backward is one sparse product
  ``G[F, n] @ x[n, d]`` (``G`` holds the ``m`` gradients) instead of ``grad_pre[n, F]ᵀ @ x``;
* ``sparse_decode``: ``Σ_j v_j · W_dec[f_j]`` per token through ``embedding_bag`` (per-sample
  weights, ``mode='sum'``); its backward is a sparse product for ``W_dec`` (only the active rows
  are non-zero) and row·gradient dot products for the values.

The gradients are those of the dense computation (tested to float tolerance), so Adam's
update is unchanged; rows of ``W_enc``/``W_dec`` no token used get a zero gradient.

All layers go through each kernel together (``stacked_codes``): the chosen entries of every
layer are indexed into the flattened ``[L·F, d]`` weights and ``[L·n, d]`` tokens, so a step
runs one sparse product per kernel whatever the number of layers. Each layer picks its
entries (``*_picks``: TopK, BatchTopK, a threshold, AuxK's masked TopK) without gradient.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F


class Codes(NamedTuple):
    """Active features for a batch of ``n`` tokens, grouped by token: ``feat [m]`` feature
    (weight row) indices, ``vals [m]`` activations, ``offsets [n]`` where each token's run of
    entries begins (``embedding_bag``'s layout), ``tok [m]`` the token of each entry. Stacked
    over layers (``stacked_codes``), the "tokens" are the ``L·n`` (layer, token) pairs and the
    rows the ``L·F`` (layer, feature) pairs."""

    feat: torch.Tensor
    vals: torch.Tensor
    offsets: torch.Tensor
    tok: torch.Tensor


class _SelectedPre(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        values: torch.Tensor,
        W: torch.Tensor,
        b: torch.Tensor,
        x: torch.Tensor,
        tok: torch.Tensor,
        feat: torch.Tensor,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, tok, feat)
        ctx.n_features = W.shape[0]
        return values.clone()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        x, tok, feat = ctx.saved_tensors
        n_f = ctx.n_features
        # indices come from topk, in range by construction: no invariant check needed
        G = torch.sparse_coo_tensor(
            torch.stack([feat, tok]), g, (n_f, x.shape[0]), check_invariants=False
        )
        gW = torch.sparse.mm(G, x)  # [F, d]: zero rows where no token chose the feature
        gb = g.new_zeros(n_f).index_add_(0, feat, g)
        return None, gW, gb, None, None, None


def selected_pre(
    values: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    x: torch.Tensor,
    tok: torch.Tensor,
    feat: torch.Tensor,
) -> torch.Tensor:
    """The chosen pre-activations ``values [m]`` (``x[tok] · W_enc[feat] + b_enc[feat]``,
    computed by the caller without gradient) with those gradients for ``W_enc [R, d]`` and
    ``b_enc [R]``; ``x [N, d]`` is data (no gradient)."""
    return _SelectedPre.apply(values, W_enc, b_enc, x, tok, feat)  # type: ignore[return-value]


class _SparseDecode(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        vals: torch.Tensor,
        W: torch.Tensor,
        feat: torch.Tensor,
        offsets: torch.Tensor,
        tok: torch.Tensor,
    ) -> torch.Tensor:
        ctx.save_for_backward(vals, W, feat, offsets, tok)
        return F.embedding_bag(feat, W, offsets, mode="sum", per_sample_weights=vals)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        vals, W, feat, offsets, tok = ctx.saved_tensors
        g = g.contiguous()
        gW = gv = None
        if ctx.needs_input_grad[1]:  # Σ over the entries of feature f: v · g[token]
            A = torch.sparse_coo_tensor(
                torch.stack([feat, tok]), vals, (W.shape[0], g.shape[0]), check_invariants=False
            )
            gW = torch.sparse.mm(A, g)
        if ctx.needs_input_grad[0]:  # per entry: W[feat] · g[token]
            gv = torch.ops.aten._embedding_bag_per_sample_weights_backward(
                g, W, feat, offsets, tok, 0, -1
            )
        return gv, gW, None, None, None


def sparse_decode(codes: Codes, W_dec: torch.Tensor) -> torch.Tensor:
    """``out[t] = Σ_{j in t} vals_j · W_dec[feat_j]``: ``[n, D]`` for ``W_dec [F, D]``.

    Forward through ``embedding_bag``; backward: ``W_dec``'s gradient as one sparse product
    (no sort of the indices, unlike ``embedding_bag``'s own backward) and the values' by
    ``embedding_bag``'s per-sample-weights kernel."""
    return _SparseDecode.apply(codes.vals, W_dec, codes.feat, codes.offsets, codes.tok)  # type: ignore[return-value]


Picks = tuple[torch.Tensor, torch.Tensor]
"""One layer's chosen entries of ``pre [n, F]``: ``(tok [m], feat [m])``, grouped by token."""


def topk_picks(pre: torch.Tensor, k: int) -> Picks:
    """TopK: the ``k`` largest entries of each token's row of ``pre [n, F]``."""
    n = pre.shape[0]
    if k == 0:
        empty = torch.zeros(0, dtype=torch.long, device=pre.device)
        return empty, empty
    feat = pre.topk(k, dim=-1).indices.flatten()
    return torch.arange(n, device=pre.device).repeat_interleave(k), feat


def batch_topk_picks(pre: torch.Tensor, k: int) -> Picks:
    """BatchTopK: the ``n·k`` largest entries of the whole batch ``pre [n, F]``."""
    flat = _batch_topk_indices(pre, k)
    return flat // pre.shape[1], flat % pre.shape[1]


def threshold_picks(pre: torch.Tensor, theta: torch.Tensor) -> Picks:
    """The entries of ``pre [n, F]`` at or above ``theta``: BatchTopK when the ``n·k``-th
    largest value was found over a batch split across processes."""
    tok, feat = (pre >= theta).nonzero(as_tuple=True)  # row-major: grouped by token
    return tok, feat


def masked_topk_picks(pre: torch.Tensor, mask: torch.Tensor, k: int) -> Picks:
    """TopK of each token's row of ``pre [n, F]`` among the features where ``mask [F]``
    (AuxK's dead features)."""
    return topk_picks(pre.masked_fill(~mask, float("-inf")), k)


def stacked_codes(
    pre: torch.Tensor,
    picks: list[Picks],
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    x: torch.Tensor,
) -> Codes:
    """The differentiable ``Codes`` of every layer's ``picks`` at once (ReLU'd values).

    ``pre [L, n, F]`` (no gradient), ``W_enc [L, F, d]``, ``b_enc [L, F]``, ``x [L, n, d]``.
    The layers are stacked: entry ``(l, t, f)`` has row ``feat = l·F + f`` of the flattened
    ``[L·F, ·]`` weights and bag ``tok = l·n + t`` of the flattened ``[L·n, ·]`` tokens, so
    one sparse product per step serves all layers, and the gradients land in the stacked
    parameters directly (per-layer slices would make autograd write an ``[L, F, d]`` zero
    tensor per layer and parameter, a cost growing as ``L²``)."""
    L, n, n_f = pre.shape
    toks = [tok + l * n for l, (tok, _) in enumerate(picks)]  # noqa: E741
    tok = torch.cat(toks)
    feat = torch.cat([f + l * n_f for l, (_, f) in enumerate(picks)])  # noqa: E741
    values = pre.reshape(-1)[tok * n_f + feat % n_f]
    x_flat = x.reshape(L * n, -1)
    vals = torch.relu(
        selected_pre(values, W_enc.view(L * n_f, -1), b_enc.view(-1), x_flat, tok, feat)
    )
    counts = torch.bincount(tok, minlength=L * n)
    return Codes(feat, vals, torch.cumsum(counts, 0) - counts, tok)


def layer_codes(codes: Codes, layer: int, n: int, n_features: int) -> Codes:
    """Layer ``layer``'s part of ``stacked_codes``' result, with per-layer indices (tokens
    ``[0, n)``, features ``[0, n_features)``); its values keep their gradient."""
    m = codes.feat.shape[0]
    offsets = codes.offsets[layer * n : (layer + 1) * n]
    start = int(offsets[0]) if n else m
    end = int(codes.offsets[(layer + 1) * n]) if (layer + 1) * n < codes.offsets.shape[0] else m
    return Codes(
        codes.feat[start:end] - layer * n_features,
        codes.vals[start:end],
        offsets - start,
        codes.tok[start:end] - layer * n,
    )


def _batch_topk_indices(pre: torch.Tensor, k: int, spread: int = 2) -> torch.Tensor:
    """Flat indices (sorted, so token-major) of the ``n·k`` largest entries of ``pre [n, F]``.

    Cheaper than one top-``n·k`` over all ``n·F`` entries: each token's ``spread·k`` largest are
    the candidates, and their top ``n·k`` is the answer whenever every token's last candidate
    lies below the ``n·k``-th value (then no entry left out could have been chosen); otherwise
    the full search runs."""
    n, n_f = pre.shape
    c = spread * k
    if c < n_f:
        cand_vals, cand_idx = pre.topk(c, dim=-1)  # [n, c], descending
        top = cand_vals.flatten().topk(n * k)
        if bool((cand_vals[:, -1] < top.values[-1]).all()):
            tok = top.indices // c
            return (tok * n_f + cand_idx.flatten()[top.indices]).sort().values
    return pre.flatten().topk(n * k).indices.sort().values
