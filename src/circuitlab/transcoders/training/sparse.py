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
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F


class Codes(NamedTuple):
    """One layer's active features for a batch of ``n`` tokens, grouped by token:
    ``feat [m]`` feature indices, ``vals [m]`` activations, ``offsets [n]`` where each token's
    run of entries begins (``embedding_bag``'s layout), ``tok [m]`` the token of each entry."""

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
    pre: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    x: torch.Tensor,
    tok: torch.Tensor,
    feat: torch.Tensor,
) -> torch.Tensor:
    """``pre[tok, feat]`` (``pre [n, F]`` computed without gradient as ``x @ W_encᵀ + b_enc``)
    with the gradients of ``x[tok] · W_enc[feat] + b_enc[feat]`` for ``W_enc``/``b_enc``.
    ``x [n, d]`` is data (no gradient)."""
    values = pre[tok, feat]
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


def topk_codes(
    pre: torch.Tensor, k: int, W: torch.Tensor, b: torch.Tensor, x: torch.Tensor
) -> Codes:
    """TopK per token of ``pre [n, F]`` (ReLU'd), as differentiable ``Codes``."""
    n = pre.shape[0]
    idx = pre.topk(k, dim=-1).indices  # [n, k]
    feat = idx.flatten()
    tok = torch.arange(n, device=pre.device).repeat_interleave(k)
    vals = torch.relu(selected_pre(pre, W, b, x, tok, feat))
    return Codes(feat, vals, torch.arange(n, device=pre.device) * k, tok)


def batch_topk_codes(
    pre: torch.Tensor, k: int, W: torch.Tensor, b: torch.Tensor, x: torch.Tensor
) -> Codes:
    """BatchTopK of ``pre [n, F]``: the ``n·k`` largest entries of the whole batch (ReLU'd)."""
    n, n_f = pre.shape
    flat = _batch_topk_indices(pre, k)
    tok, feat = flat // n_f, flat % n_f
    vals = torch.relu(selected_pre(pre, W, b, x, tok, feat))
    counts = torch.bincount(tok, minlength=n)
    offsets = torch.cumsum(counts, 0) - counts
    return Codes(feat, vals, offsets, tok)


def threshold_codes(
    pre: torch.Tensor, theta: torch.Tensor, W: torch.Tensor, b: torch.Tensor, x: torch.Tensor
) -> Codes:
    """The entries of ``pre [n, F]`` at or above ``theta`` (ReLU'd): BatchTopK when the
    ``n·k``-th largest value was found over a batch split across processes."""
    n = pre.shape[0]
    tok, feat = (pre >= theta).nonzero(as_tuple=True)  # row-major: grouped by token
    vals = torch.relu(selected_pre(pre, W, b, x, tok, feat))
    counts = torch.bincount(tok, minlength=n)
    return Codes(feat, vals, torch.cumsum(counts, 0) - counts, tok)


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


def masked_topk_codes(
    pre: torch.Tensor,
    mask: torch.Tensor,
    k: int,
    W: torch.Tensor,
    b: torch.Tensor,
    x: torch.Tensor,
) -> Codes:
    """TopK per token of ``pre [n, F]`` among the features where ``mask [F]`` (AuxK)."""
    masked = pre.masked_fill(~mask, float("-inf"))
    return topk_codes(masked, k, W, b, x)
