"""Head loadings: which attention heads carry an edge of the attribution graph.

An edge ``A[t, s]`` is the direct effect of source ``s`` on target ``t`` in the local
replacement model, a linear map. At an attention layer ``L`` the gradient of the target at the
residual stream entering ``L`` is ``g_pre = g_mid + sum_h H_h^T g_mid`` (``g_mid`` the gradient
after the attention block, ``H_h`` head ``h``'s frozen map: pre-attention norm, value, pattern,
output, Gemma's post-attention norm). Carried down to the source, the edge splits exactly into

    A[t, s] = bypass_L + sum_h loading_{L,h}

``loading_{L,h}``: the part of the edge whose path goes through head ``h`` at layer ``L``
(once; it may pass other layers' heads too), ``bypass_L``: the part that skips layer ``L``'s
attention along the residual stream. A layer the path cannot cross (at or below the source's
write layer, above the target's read layer) has every loading 0 and ``bypass = A[t, s]``.

Each loading equals the edge minus the edge with that head's pattern set to zero at ``L`` (the
tests check it that way). It is computed from one forward and one backward sweep of the frozen
model: the source's contribution ``f_L`` to the residual entering every layer (forward) and the
target's gradient ``g_L`` after every attention block (backward, as the graph engine's
``FrozenBackward`` sweep), then ``loading_{L,h} = <g_L, H_h f_L>``, head by head, and
``bypass_L = A[t, s] - sum_h loading_{L,h}`` with ``A[t, s]`` the engine's own edge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..graph.graph import Graph
from ..models.norms import norm_transpose
from ..replacement import ReplacementModel
from .forward import forward_fields, source_writes
from .frozen import FrozenPrompt

Edge = tuple[str, str]  # (source node id, target node id)


@dataclass
class HeadLoadings:
    """The split of one edge (or a sum of edges) at each of ``layers``.

    ``heads [len(layers), n_heads]`` each head's part, ``bypass [len(layers)]`` the part that
    skips the layer's attention; ``heads[i].sum() + bypass[i] == edge`` for every ``i``.
    ``edges`` lists the (source, target) node ids summed.
    """

    edges: list[Edge]
    layers: list[int]
    heads: torch.Tensor
    bypass: torch.Tensor
    edge: float

    def top_heads(self, n: int = 5) -> list[tuple[int, int, float]]:
        """The ``n`` largest ``(layer, head, loading)`` by magnitude."""
        flat = self.heads.flatten()
        order = torch.argsort(flat.abs(), descending=True, stable=True)[:n].tolist()
        n_heads = self.heads.shape[1]
        return [(self.layers[i // n_heads], i % n_heads, float(flat[i])) for i in order]

    def to_dict(self) -> dict:
        return dict(
            edges=[list(e) for e in self.edges],
            layers=self.layers,
            heads=self.heads.tolist(),
            bypass=self.bypass.tolist(),
            edge=self.edge,
        )


def head_loadings(
    model: ReplacementModel,
    graph: Graph | FrozenPrompt,
    source: str | Sequence[Edge],
    target: str | None = None,
    layer: int | None = None,
) -> HeadLoadings:
    """The split of the edge ``source -> target`` at attention layer ``layer`` (all layers for
    None, as ``path_head_loadings``), nodes named by the lab's node ids.

    ``source`` may instead be a list of ``(source, target)`` pairs (``target`` None): their
    edges are summed (a pinned subgraph, or a supernode-to-supernode edge). ``graph`` is the
    graph the nodes belong to (logit targets need it), or a ``FrozenPrompt`` of its prompt.
    """
    edges: list[Edge] = [(source, target)] if isinstance(source, str) else list(source)  # type: ignore[list-item]
    if isinstance(source, str) and target is None:
        raise ValueError("Name the edge's target node (target=...), or pass a list of edges.")
    if not edges:
        raise ValueError("No edges given: pass source and target node ids, or a list of pairs.")
    fp, g = _frozen(model, graph)
    layers = list(range(model.n_layers)) if layer is None else [_check_layer(model, layer)]
    return _loadings(fp, g, edges, layers)


def path_head_loadings(
    model: ReplacementModel, graph: Graph | FrozenPrompt, source: str, target: str
) -> HeadLoadings:
    """The split of the edge ``source -> target`` at every attention layer."""
    return head_loadings(model, graph, source, target, None)


# ---- internals ------------------------------------------------------------------------------


def _frozen(
    model: ReplacementModel, graph: Graph | FrozenPrompt
) -> tuple[FrozenPrompt, Graph | None]:
    if isinstance(graph, FrozenPrompt):
        if graph.model is not model:
            raise ValueError("This FrozenPrompt was built with another model; build it again.")
        return graph, graph.graph
    fp = FrozenPrompt.build(model, graph)
    return fp, graph


def _check_layer(model: ReplacementModel, layer: int) -> int:
    if not 0 <= layer < model.n_layers:
        raise ValueError(
            f"layer={layer} is out of range: the model has attention layers 0 .. {model.n_layers - 1}."
        )
    return layer


def _target(fp: FrozenPrompt, graph: Graph | None, node: str) -> tuple[int, int, torch.Tensor]:
    """``(read layer, position, read vector)`` of a feature or logit target node."""
    model = fp.model
    parts = node.split("_")
    if len(parts) == 3 and parts[0].isdigit():
        layer, what, pos = int(parts[0]), int(parts[1]), int(parts[2])
        if layer == model.n_layers + 1:
            return _logit_target(fp, graph, node, what, pos)
        if layer < model.n_layers and what >= 0:
            hit = (fp.features.indices == torch.tensor([layer, pos, what])).all(1)
            if bool(hit.any()):
                vec = model.transcoders.encoder_rows(layer, torch.tensor([what]))[0]
                return layer, pos, vec.to(fp.dtype)
    raise ValueError(
        f"Unknown target node {node!r}: a target is an active feature '{{layer}}_{{feature}}_{{pos}}' "
        f"or a logit node '{model.n_layers + 1}_{{vocab_idx}}_{fp.n_pos - 1}' of the graph (node "
        "ids as in the lab's graph JSON)."
    )


def _logit_target(
    fp: FrozenPrompt, graph: Graph | None, node: str, vocab: int, pos: int
) -> tuple[int, int, torch.Tensor]:
    model = fp.model
    known = graph is not None and any(t.vocab_idx == vocab for t in graph.logit_targets)
    if pos != fp.n_pos - 1 or not known:
        raise ValueError(
            f"Unknown target node {node!r}: the graph has no such logit node (logit nodes are "
            f"'{model.n_layers + 1}_{{vocab_idx}}_{fp.n_pos - 1}' for its logit targets)."
        )
    if vocab >= model.spec.vocab_size:
        raise ValueError(
            f"Target {node!r} is a virtual logit target (a logit difference or custom "
            "direction) whose direction the graph does not store; pick a token logit or a feature."
        )
    U = model.unembed_weight.to(fp.dtype)
    return model.n_layers, pos, U[vocab] - U.mean(0)


@torch.no_grad()
def _loadings(
    fp: FrozenPrompt, graph: Graph | None, edges: list[Edge], layers: list[int]
) -> HeadLoadings:
    names = {n: i for i, n in enumerate(fp.node_ids())}
    n_layers, n_heads = fp.model.n_layers, fp.model.spec.n_heads
    heads = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    total = 0.0
    for src, tgt in edges:
        if src not in names:
            raise ValueError(
                f"Unknown source node {src!r}: a source is an active feature "
                "'{layer}_{feature}_{pos}', an error '{layer}_-1_{pos}' or a token "
                "'E_{token_id}_{pos}' of this prompt."
            )
        t_layer, t_pos, vec = _target(fp, graph, tgt)
        col = names[src]
        row = fp.backward.rows(
            fp.sources, torch.tensor([t_layer]), torch.tensor([t_pos]), vec[None]
        )
        total += float(row[0, col])
        writes, embed = source_writes(fp, col, t_pos + 1)
        f_pre = forward_fields(fp, writes, embed, fp.model.n_layers - 1)
        heads += _split(fp, f_pre, _target_gradients(fp, t_layer, t_pos, vec))
    sel = torch.tensor(layers)
    heads = heads[sel]
    bypass = total - heads.sum(1)
    return HeadLoadings(edges=edges, layers=layers, heads=heads, bypass=bypass, edge=total)


def _target_gradients(
    fp: FrozenPrompt, t_layer: int, t_pos: int, vec: torch.Tensor
) -> dict[int, torch.Tensor]:
    """``g[L] [p, d]``: the target's gradient at the residual right after layer ``L``'s
    attention block, for every ``L <= t_layer`` (the engine's backward sweep, one row)."""
    model, bw = fp.model, fp.backward
    ad = model.adapter
    p = t_pos + 1
    g = torch.zeros(1, p, vec.shape[0], dtype=fp.dtype)
    n_layers = model.n_layers
    if t_layer == n_layers:
        g[0, t_pos] = vec
        g = bw._norm_t(None, None, g, bw.final_scale)
    out = {}
    for layer in range(min(t_layer, n_layers - 1), -1, -1):
        lay = bw.layers[layer]
        if layer < t_layer:  # this layer's MLP skip path is on the way
            gw = g
            if lay.post_mlp is not None and not bw.write_after_post_norm:
                gw = bw._norm_t(ad.post_mlp_norm, layer, g, lay.post_mlp)
            if lay.W_skip is not None:
                sk = gw @ lay.W_skip
                if lay.ln2 is not None:
                    sk = sk * lay.ln2[:p].to(fp.dtype)
                g = g + sk
        else:  # the target reads here
            v = vec[None]
            if lay.ln2 is not None:
                block = model.block(layer).get_submodule(ad.ln2)
                v = norm_transpose(ad.norm, block, v, lay.ln2[t_pos : t_pos + 1].to(fp.dtype))
            g = g.clone()
            g[0, t_pos] += v[0]
        out[layer] = g[0].clone()
        ga = g if lay.post_attn is None else bw._norm_t(ad.post_attn_norm, layer, g, lay.post_attn)
        g = g.clone()
        bw._attention_t(lay, ga, g)
    return out


def _split(
    fp: FrozenPrompt, f_pre: list[torch.Tensor], grads: dict[int, torch.Tensor]
) -> torch.Tensor:
    """``[n_layers, n_heads]``: ``<g[L], head h's output of f_pre[L]>`` (0 where no gradient)."""
    bw, ad, spec = fp.backward, fp.model.adapter, fp.model.spec
    out = torch.zeros(fp.model.n_layers, spec.n_heads, dtype=torch.float64)
    for layer, g in grads.items():
        lay = bw.layers[layer]
        p = g.shape[0]
        ga = g[None]
        if lay.post_attn is not None:
            ga = bw._norm_t(ad.post_attn_norm, layer, ga, lay.post_attn)
        gz = (ga[0] @ lay.W_O).view(p, spec.n_heads, spec.d_head)
        v = (f_pre[layer] @ lay.W_V.T).view(p, spec.n_kv_heads, spec.d_head)
        v = v.repeat_interleave(spec.n_heads // spec.n_kv_heads, dim=1)
        # sum_{k,q} P_t[h, k, q] <gz[q, h], v[k, h]>, the inner products as one batched matmul
        inner = torch.bmm(v.permute(1, 0, 2), gz.permute(1, 2, 0))  # [heads, k, q]
        out[layer] = (lay.pattern_t[:, :p, :p] * inner).sum((1, 2)).double()
    return out
