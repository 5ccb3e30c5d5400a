"""QK attributions: why a head attends from one position to another, node pair by node pair.

In the local replacement model (attention patterns and norm scales frozen, MLPs replaced by
transcoder reconstruction + constant error) the residual stream entering layer ``L`` is
linear in the node values plus a constant, and so are a head's query ``q`` (at the query
position) and key ``k`` (at the key position), see ``attention.qk_maps``. Writing
``q = sum_n c_q[n] + b_q`` and ``k = sum_m c_k[m] + b_k`` (``c`` a node's contribution, a
``d_head`` vector; ``b`` the part no node carries: biases, position embeddings, the MLP output
at the zeroed BOS position), the pre-softmax score is bilinear::

    score = scale * q . k
          = sum_{n,m} scale c_q[n].c_k[m]                                 (pairs)
            + scale (sum_n c_q[n]).b_k + scale b_q.(sum_m c_k[m]) + scale b_q.b_k   (bias terms)

``QKAttribution`` holds these parts; ``total`` is the score (Gemma-2's soft-cap is applied
after it: ``logit = c tanh(total / c)`` is what the softmax takes, and the decomposition is of
the score before the cap). Query-side contributions come from one backward sweep of
``d_head`` rows; the key side for every key position at once from ``d_head`` rows per key,
batched (``qk_sweep``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..graph.graph import Graph
from ..models.tokens import Prompt
from ..replacement import ReplacementModel
from .forward import forward_fields, node_writes
from .frozen import FrozenPrompt
from .qk_maps import QKSide, qk_side, qk_sides, score_scale, score_softcap


@dataclass(frozen=True)
class QKPair:
    """One (query-side node, key-side node) term of a score."""

    query_node: str
    key_node: str
    value: float


@dataclass
class QKAttribution:
    """The score of ``head`` in ``layer`` from ``query_pos`` to ``key_pos``, decomposed.

    * ``pairs``: the largest ``|value|`` pair terms, ranked (all of them for ``top_k=None``);
    * ``query_marginals`` / ``key_marginals``: each node's total part of the score
      (``scale c_q[n].k`` and ``scale q.c_k[m]``), ranked by magnitude;
    * ``bias_terms``: ``query_bias*key_bias``, ``query_nodes*key_bias``,
      ``query_bias*key_nodes``;
    * ``total``: the pre-softmax score ``scale q.k`` (before Gemma-2's soft-cap);
      ``logit``: what the softmax takes (after the soft-cap, if any), ``attention`` the
      recorded attention weight.

    Sum rule: ``sum(pair_matrix()) + sum(bias_terms.values()) == total``, and
    ``sum(query_marginals) + query_bias*key_bias + query_bias*key_nodes == total``.
    ``query_vectors [n_query_nodes, d_head]`` and ``key_vectors`` are the nodes' contributions
    to ``q`` and ``k`` (named in ``query_nodes``/``key_nodes``; both None when computed with
    ``pairs=False``), ``query_bias``/``key_bias`` the rest.
    """

    layer: int
    head: int
    query_pos: int
    key_pos: int
    pairs: list[QKPair]
    query_marginals: dict[str, float]
    key_marginals: dict[str, float]
    bias_terms: dict[str, float]
    total: float
    logit: float
    attention: float
    scale: float
    softcap: float | None
    query_nodes: list[str]
    key_nodes: list[str]
    query_vectors: torch.Tensor | None
    key_vectors: torch.Tensor | None
    query_bias: torch.Tensor
    key_bias: torch.Tensor

    def pair_matrix(self) -> torch.Tensor:
        """Every pair term ``[n_query_nodes, n_key_nodes]`` (``scale c_q[n].c_k[m]``)."""
        if self.query_vectors is None or self.key_vectors is None:
            raise ValueError("This attribution was computed with pairs=False: it has no pairs.")
        return self.scale * self.query_vectors @ self.key_vectors.T

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able record (the ranked pairs, marginals, bias terms and totals)."""
        return dict(
            layer=self.layer,
            head=self.head,
            query_pos=self.query_pos,
            key_pos=self.key_pos,
            total=self.total,
            logit=self.logit,
            attention=self.attention,
            scale=self.scale,
            softcap=self.softcap,
            bias_terms=self.bias_terms,
            pairs=[[p.query_node, p.key_node, p.value] for p in self.pairs],
            query_marginals=self.query_marginals,
            key_marginals=self.key_marginals,
        )


def qk_attribution(
    model: ReplacementModel,
    graph_or_prompt: Graph | Prompt | FrozenPrompt,
    layer: int,
    head: int,
    query_pos: int,
    key_pos: int,
    *,
    top_k: int | None = 50,
    batch_size: int = 256,
) -> QKAttribution:
    """The QK attribution of one score (see ``QKAttribution`` and the module docstring).

    ``graph_or_prompt``: a ``Graph`` (its prompt; the model and transcoders must be the ones
    it was made with), a prompt, or a ``FrozenPrompt`` already built (to reuse it across
    calls). Positions may be negative (``-1``: the last token). ``top_k`` pairs are kept
    (``None``: all of them).
    """
    fp = _frozen(model, graph_or_prompt)
    layer, head, q = _check_request(fp, layer, head, query_pos)
    k = _check_key(fp, layer, q, key_pos)
    return qk_sweep(model, fp, layer, head, q, keys=[k], top_k=top_k, batch_size=batch_size)[0]


def qk_sweep(
    model: ReplacementModel,
    graph_or_prompt: Graph | Prompt | FrozenPrompt,
    layer: int,
    head: int,
    query_pos: int,
    *,
    keys: Sequence[int] | int | None = None,
    top_k: int | None = 50,
    batch_size: int = 256,
    pairs: bool = True,
    top_marginals: int | None = None,
) -> list[QKAttribution]:
    """QK attributions of one head and query position for many key positions at once.

    ``keys``: positions (a list), the ``n`` keys with the highest attention weight (an int),
    or every key the head can attend to (None; the default). The query side is computed once
    and the key sides of all keys share backward sweeps of ``batch_size`` rows. Results are
    in the order of ``keys`` (ascending position for None, decreasing weight for an int).

    ``pairs=False`` computes the marginals and bias terms only (no pairs, no vectors): one
    forward sweep of every node through the frozen model gives each side's bias part, then
    one backward row per key reads its key side along ``q``, and the query side is read along
    each key's ``k`` (``min(n_keys, d_head)`` rows at the query): ``n_keys + min(n_keys,
    d_head)`` rows instead of ``d_head (n_keys + 1)``. Nodes whose marginal is exactly 0 are
    left out of the marginals.

    ``top_marginals``: keep each side's ``n`` largest marginals only (None: every node's; a
    long prompt has ~10^5 nodes a side, so a sweep of all keys holds ~10^7 named values).
    """
    fp = _frozen(model, graph_or_prompt)
    layer, head, q = _check_request(fp, layer, head, query_pos)
    pattern = fp.capture.patterns[layer][0, head, q]
    allowed = [k for k in range(q + 1) if _attendable(fp, layer, q, k)]
    if keys is None:
        key_list = allowed
    elif isinstance(keys, int):
        if keys < 1:
            raise ValueError(f"keys={keys}: give a number of top keys >= 1, a list, or None.")
        order = torch.argsort(pattern[allowed].float(), descending=True, stable=True).tolist()
        key_list = [allowed[i] for i in order[:keys]]
    else:
        key_list = [_check_key(fp, layer, q, k) for k in keys]
    d_head = model.spec.d_head
    query = qk_side(fp, layer, head, q, "query")
    keys_ = qk_sides(fp, layer, head, key_list, "key")
    scale, cap = score_scale(fp, layer), score_softcap(fp)
    if not pairs:
        return _marginal_sweep(
            fp, layer, head, q, key_list, query, keys_, batch_size, top_marginals
        )
    c_q = _contributions(fp, layer, [q] * d_head, query.directions, batch_size)
    positions = [k for k in key_list for _ in range(d_head)]
    c_k = _contributions(fp, layer, positions, keys_.directions.flatten(0, 1), batch_size)
    c_k = c_k.view(len(key_list), d_head, -1)
    q_cols = c_q.abs().sum(0).nonzero(as_tuple=True)[0]
    q_part = (c_q[:, q_cols].T.contiguous(), fp.names(q_cols))
    return [
        _assemble(
            fp,
            layer,
            head,
            q,
            k,
            query,
            q_part,
            QKSide(keys_.directions[i], keys_.value[i]),
            c_k[i],
            scale,
            cap,
            top_k,
            top_marginals,
        )
        for i, k in enumerate(key_list)
    ]


#: Rows per backward batch of a marginals sweep (one row per key): batches of keys in order of
#: position sweep only the positions up to their last key, about half the work of one batch.
MARGINAL_BATCH = 32


def _marginal_sweep(
    fp: FrozenPrompt,
    layer: int,
    head: int,
    q: int,
    keys: list[int],
    query: QKSide,
    key_sides: QKSide,
    batch_size: int,
    top_marginals: int | None,
) -> list[QKAttribution]:
    """``qk_sweep(pairs=False)``: bias parts from one forward sweep of every node, then per
    key one row along ``q`` (key side) and the query side along each ``k``.
    ``key_sides``: every key's map at once (``qk_sides``)."""
    writes, embed = node_writes(fp, q + 1)
    resid = forward_fields(fp, writes, embed, layer)[layer]  # [q + 1, d]: the nodes' part
    q_bias = query.value - query.directions @ resid[q]
    k_bias = key_sides.value - torch.einsum("njd,nd->nj", key_sides.directions, resid[keys])
    key_dirs = torch.einsum("njd,j->nd", key_sides.directions, query.value)  # [n, d]
    n, d_head = len(keys), query.value.shape[0]
    batch_size = min(batch_size, MARGINAL_BATCH)
    if n <= d_head:  # the query side read along each key's k: one row per key
        q_dirs = key_sides.value @ query.directions  # [n, d]
        rows = _contributions(fp, layer, keys + [q] * n, torch.cat([key_dirs, q_dirs]), batch_size)
        along_q, along_k = rows[:n], rows[n:]
    else:  # the query nodes' vectors once (d_head rows), then read along each k
        rows = _contributions(
            fp, layer, keys + [q] * d_head, torch.cat([key_dirs, query.directions]), batch_size
        )
        along_q, along_k = rows[:n], key_sides.value @ rows[n:]
    scale, cap = score_scale(fp, layer), score_softcap(fp)
    q_nodes = query.value - q_bias
    q_sides = _marginal_sides(fp, scale * along_k, top_marginals, q_bias[None].expand(n, -1))
    k_sides = _marginal_sides(fp, scale * along_q, top_marginals, k_bias)
    out = []
    for i, k in enumerate(keys):
        kb = k_bias[i]
        out.append(
            _result(
                fp,
                layer,
                head,
                q,
                k,
                scale,
                cap,
                float(query.value @ key_sides.value[i]),
                q_sides[i],
                k_sides[i],
                [],
                {
                    "query_bias*key_bias": scale * float(q_bias @ kb),
                    "query_nodes*key_bias": scale * float(q_nodes @ kb),
                    "query_bias*key_nodes": scale * float(q_bias @ (key_sides.value[i] - kb)),
                },
            )
        )
    return out


def _marginal_sides(
    fp: FrozenPrompt, values: torch.Tensor, top: int | None, bias: torch.Tensor
) -> list[_Parts]:
    """Per row of ``values [n, n_cols]``: its nonzero marginals (the ``top`` largest, if
    given; one ``topk`` for all rows) with their node ids, and ``bias[row]``."""
    out: list[_Parts] = []
    if top is not None and top < values.shape[1]:
        best = torch.topk(values.abs(), top, dim=1).indices
        for row, cols, b in zip(values, best, bias, strict=True):
            cols = cols[row[cols] != 0]
            named = fp.names(cols)
            out.append((named, row[cols], None, named, b))
        return out
    for row, b in zip(values, bias, strict=True):
        named, vals = _named(fp.names, row, None)
        out.append((named, vals, None, named, b))
    return out


def _named(
    names: Callable[[torch.Tensor], list[str]], values: torch.Tensor, top: int | None
) -> tuple[list[str], torch.Tensor]:
    """The nonzero entries of ``values [n]`` (the ``top`` largest by magnitude, if given),
    with their names (``names(indices)``)."""
    if top is not None and top < values.shape[0]:
        cols = torch.topk(values.abs(), top).indices
        cols = cols[values[cols] != 0]
    else:
        cols = values.nonzero(as_tuple=True)[0]
    return names(cols), values[cols]


def _contributions(
    fp: FrozenPrompt, layer: int, positions: list[int], directions: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """``FrozenPrompt.contributions`` of rows ``(positions[i], directions[i])``: ``[rows,
    n_cols]``, in batches of ``batch_size`` rows taken in order of position, so that a batch
    of early positions sweeps only the positions up to its last one (causality)."""
    pos = torch.tensor(positions)
    order = torch.argsort(pos, stable=True)
    out = torch.empty(len(positions), fp.n_cols, dtype=fp.dtype)
    for i in range(0, len(positions), batch_size):
        rows = order[i : i + batch_size]
        out[rows] = fp.contributions(layer, pos[rows], directions[rows])
    return out


def top_attention(
    model: ReplacementModel,
    graph_or_prompt: Graph | Prompt | FrozenPrompt,
    *,
    query_pos: int = -1,
    n: int = 5,
    skip_first: bool = True,
) -> list[tuple[int, int, int, float]]:
    """The ``n`` strongest (layer, head, key position, weight) attention edges from
    ``query_pos``, across every layer and head; ``skip_first`` leaves out key position 0
    (the BOS, where many heads park their attention)."""
    fp = _frozen(model, graph_or_prompt)
    q = _position(fp, query_pos, "query_pos")
    rows = torch.stack(
        [fp.capture.patterns[lay][0, :, q, : q + 1] for lay in range(model.n_layers)]
    )
    if skip_first and q > 0:
        rows = rows.clone()
        rows[..., 0] = -1
    flat = rows.flatten().float()
    best = torch.argsort(flat, descending=True, stable=True)[:n].tolist()
    n_heads, n_keys = rows.shape[1], rows.shape[2]
    return [
        (i // (n_heads * n_keys), (i // n_keys) % n_heads, i % n_keys, float(flat[i])) for i in best
    ]


# ---- internals ------------------------------------------------------------------------------


def _frozen(model: ReplacementModel, src: Graph | Prompt | FrozenPrompt) -> FrozenPrompt:
    if isinstance(src, FrozenPrompt):
        if src.model is not model:
            raise ValueError("This FrozenPrompt was built with another model; build it again.")
        return src
    return FrozenPrompt.build(model, src)


def _position(fp: FrozenPrompt, pos: int, what: str) -> int:
    n = fp.n_pos
    if not -n <= pos < n:
        raise ValueError(
            f"{what}={pos} is outside the prompt's {n} positions: use 0 .. {n - 1} (or -1 for "
            "the last token)."
        )
    return pos % n


def _check_request(fp: FrozenPrompt, layer: int, head: int, query_pos: int) -> tuple[int, int, int]:
    spec = fp.model.spec
    if not 0 <= layer < spec.n_layers:
        raise ValueError(
            f"layer={layer} is out of range: the model has layers 0 .. {spec.n_layers - 1}."
        )
    if not 0 <= head < spec.n_heads:
        raise ValueError(
            f"head={head} is out of range: layer {layer} has query heads 0 .. {spec.n_heads - 1}."
        )
    return layer, head, _position(fp, query_pos, "query_pos")


def _attendable(fp: FrozenPrompt, layer: int, q: int, k: int) -> bool:
    mask = fp.inputs.mask[layer]
    if k > q or mask is None:
        return k <= q
    if mask.dtype == torch.bool:  # True: may attend
        return bool(mask[q, k])
    return bool(torch.isfinite(mask[q, k]) and mask[q, k] > -1e4)  # additive: 0 or -inf/min


def _check_key(fp: FrozenPrompt, layer: int, q: int, key_pos: int) -> int:
    k = _position(fp, key_pos, "key_pos")
    if k > q:
        raise ValueError(
            f"key_pos={key_pos} comes after query_pos={q}: a causal head only attends to "
            f"positions 0 .. {q}; pick a key at or before the query."
        )
    if not _attendable(fp, layer, q, k):
        raise ValueError(
            f"key_pos={k} is masked for query_pos={q} in layer {layer} (outside its sliding "
            "window): the head cannot attend there, so its score does not reach the softmax. "
            "Pick a nearer key."
        )
    return k


def _assemble(
    fp: FrozenPrompt,
    layer: int,
    head: int,
    q: int,
    k: int,
    query: QKSide,
    q_part: tuple[torch.Tensor, list[str]],
    key: QKSide,
    c_k: torch.Tensor,
    scale: float,
    cap: float | None,
    top_k: int | None,
    top_marginals: int | None,
) -> QKAttribution:
    """One ``QKAttribution`` with pairs from the query nodes' contributions ``q_part``
    (``[n, d_head]`` and their names) and the key side's ``c_k [d_head, n_cols]``;
    ``top_marginals``: keep each side's largest marginals only."""
    qv, q_names = q_part
    k_cols = c_k.abs().sum(0).nonzero(as_tuple=True)[0]
    q_total, k_total = query.value, key.value
    q_bias = q_total - qv.sum(0)
    k_names = fp.names(k_cols)
    kv = c_k[:, k_cols].T.contiguous()
    k_bias = k_total - kv.sum(0)
    return _result(
        fp,
        layer,
        head,
        q,
        k,
        scale,
        cap,
        float(q_total @ k_total),
        (*_named(_pick(q_names), scale * (qv @ k_total), top_marginals), qv, q_names, q_bias),
        (*_named(_pick(k_names), scale * (kv @ q_total), top_marginals), kv, k_names, k_bias),
        _top_pairs(qv, kv, scale, q_names, k_names, top_k),
        {
            "query_bias*key_bias": scale * float(q_bias @ k_bias),
            "query_nodes*key_bias": scale * float(qv.sum(0) @ k_bias),
            "query_bias*key_nodes": scale * float(q_bias @ kv.sum(0)),
        },
    )


_Parts = tuple[list[str], torch.Tensor, "torch.Tensor | None", list[str], torch.Tensor]


def _pick(names: list[str]) -> Callable[[torch.Tensor], list[str]]:
    """``names`` as a function of indices (for ``_named``)."""
    return lambda idx: [names[i] for i in idx.tolist()]


def _result(
    fp: FrozenPrompt,
    layer: int,
    head: int,
    q: int,
    k: int,
    scale: float,
    cap: float | None,
    q_dot_k: float,
    query: _Parts,
    key: _Parts,
    pairs: list[QKPair],
    bias_terms: dict[str, float],
) -> QKAttribution:
    """A ``QKAttribution``; each side ``(names, marginals, vectors or None, the vectors' node
    names, bias)``."""
    total = scale * q_dot_k
    return QKAttribution(
        layer=layer,
        head=head,
        query_pos=q,
        key_pos=k,
        pairs=pairs,
        query_marginals=_ranked(query[0], query[1]),
        key_marginals=_ranked(key[0], key[1]),
        bias_terms=bias_terms,
        total=total,
        logit=total if cap is None else cap * math.tanh(total / cap),
        attention=float(fp.capture.patterns[layer][0, head, q, k]),
        scale=scale,
        softcap=cap,
        query_nodes=query[3],
        key_nodes=key[3],
        query_vectors=query[2],
        key_vectors=key[2],
        query_bias=query[4],
        key_bias=key[4],
    )


def _ranked(names: list[str], values: torch.Tensor) -> dict[str, float]:
    order = torch.argsort(values.abs(), descending=True, stable=True)
    return dict(zip([names[i] for i in order.tolist()], values[order].tolist(), strict=True))


def _top_pairs(
    qv: torch.Tensor,
    kv: torch.Tensor,
    scale: float,
    q_names: list[str],
    k_names: list[str],
    top_k: int | None,
    block: int = 1024,
) -> list[QKPair]:
    """The ``top_k`` pair terms ``scale qv[n].kv[m]`` by magnitude (all of them for None).

    Exact without the full matrix: the pairs of the ``block`` largest-norm nodes of each side
    give a threshold ``tau`` (the k-th largest magnitude among them); a pair can only beat it
    if ``|scale| |qv[n]| |kv[m]| >= tau`` (Cauchy-Schwarz), so only those pairs are computed.
    """
    n_q, n_k = qv.shape[0], kv.shape[0]
    if n_q == 0 or n_k == 0:
        return []
    if top_k is None:
        vals = (scale * qv @ kv.T).flatten()
        order = torch.argsort(vals.abs(), descending=True, stable=True)
        return _pairs(order // n_k, order % n_k, vals[order], q_names, k_names)
    k = min(top_k, n_q * n_k)
    qn, kn = qv.norm(dim=1) * abs(scale), kv.norm(dim=1)
    qo = torch.argsort(qn, descending=True, stable=True)
    ko = torch.argsort(kn, descending=True, stable=True)
    first = (scale * qv[qo[:block]] @ kv[ko[:block]].T).abs().flatten()
    tau = float(torch.topk(first, k).values[-1]) if first.numel() >= k else 0.0
    # key nodes whose norm reaches tau / |q_n|, a prefix of ko for each query node
    need = tau / qn[qo].clamp_min(torch.finfo(qn.dtype).tiny)
    counts = torch.searchsorted(-kn[ko].contiguous(), -need, right=True)
    rows_q, rows_k, vals = [], [], []
    for i in counts.nonzero(as_tuple=True)[0].split(block):
        width = int(counts[i[0]])  # counts fall as the query norms fall
        part = scale * qv[qo[i]] @ kv[ko[:width]].T  # [len(i), width]
        ok = torch.arange(width)[None] < counts[i][:, None]
        r, c = ok.nonzero(as_tuple=True)
        rows_q.append(qo[i][r])
        rows_k.append(ko[c])
        vals.append(part[r, c])
    q_idx, k_idx, v = torch.cat(rows_q), torch.cat(rows_k), torch.cat(vals)
    best = torch.topk(v.abs(), min(k, v.numel())).indices
    best = best[torch.argsort(v[best].abs(), descending=True, stable=True)]
    return _pairs(q_idx[best], k_idx[best], v[best], q_names, k_names)


def _pairs(
    q_idx: torch.Tensor,
    k_idx: torch.Tensor,
    vals: torch.Tensor,
    q_names: list[str],
    k_names: list[str],
) -> list[QKPair]:
    return [
        QKPair(q_names[a], k_names[b], float(v))
        for a, b, v in zip(q_idx.tolist(), k_idx.tolist(), vals.tolist(), strict=True)
    ]
