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
model, both over the positions from the source's to the target's only (the source's field is
zero before it, the target's gradient after it) and the layers between them: forward, the
source's contribution through every crossed layer, keeping each head's pattern-weighted values
``z_{L,h}`` (``forward.attention_forward``); backward, the target's gradient, keeping its value
``gz_{L,h}`` at the same point (``transposed.attention_transposed``). Then

    loading_{L,h} = <g_L, H_h f_L> = <gz_{L,h}, z_{L,h}>

a dot product per head, and the edge itself is ``<gradient at the source's write point, the
source's vector>`` from the same backward sweep, so ``bypass_L = A[t, s] - sum_h
loading_{L,h}``. No source is read out (the engine's target row reads every active feature),
so all of it costs about one target row (``docs/attention.md``, Cost).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..graph.graph import Graph
from ..models.norms import norm_transpose
from ..replacement import ReplacementModel
from .forward import attention_forward, mlp_forward
from .frozen import FrozenPrompt
from .transposed import attention_transposed, mlp_transposed

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


@dataclass
class _Source:
    """What one source node writes: at position ``pos``, ``vectors [n, d]`` into the MLP
    outputs of ``layers`` (a feature: one per output layer; an error: one), or into the
    embedding (a token: ``layers`` empty, one vector)."""

    pos: int
    layers: list[int]
    vectors: torch.Tensor

    @property
    def bottom(self) -> int:
        """The lowest layer the sweeps visit: the first write layer (0 for a token)."""
        return self.layers[0] if self.layers else 0

    @property
    def first_attention(self) -> int:
        """The lowest attention layer the source's contribution enters."""
        return self.layers[0] + 1 if self.layers else 0

    def write(self, layer: int) -> torch.Tensor | None:
        """The vector written into ``layer``'s MLP output, or None."""
        return self.vectors[layer - self.layers[0]] if layer in self.layers else None


def _source(fp: FrozenPrompt, node: str) -> _Source:
    """The source node ``node`` (a lab node id) of this prompt, or a ``ValueError``."""
    n_layers, n_pos, src = fp.model.n_layers, fp.n_pos, fp.sources
    parts = node.split("_")
    try:
        a, b, pos = parts[0], int(parts[1]), int(parts[2])
    except (ValueError, IndexError):
        a, b, pos = "", -2, -1
    if len(parts) == 3 and 0 <= pos < n_pos:
        if a == "E" and b == int(fp.ids[pos]):
            return _Source(pos, [], src.tokens[pos : pos + 1].to(fp.dtype))
        layer = int(a) if a.isdigit() else n_layers
        if layer < n_layers and b == -1:
            return _Source(pos, [layer], src.errors[layer, pos][None].to(fp.dtype))
        hit = (fp.features.indices == torch.tensor([layer, pos, b])).all(1).nonzero()
        if layer < n_layers and b >= 0 and hit.numel():
            dec = fp.model.transcoders.decoder_rows(layer, torch.tensor([b]))[0].to(fp.dtype)
            value = fp.features.values[int(hit[0, 0])].to(fp.dtype)
            return _Source(pos, list(range(layer, layer + dec.shape[0])), value * dec)
    raise ValueError(
        f"Unknown source node {node!r}: a source is an active feature "
        "'{layer}_{feature}_{pos}', an error '{layer}_-1_{pos}' or a token "
        "'E_{token_id}_{pos}' of this prompt."
    )


@torch.no_grad()
def _loadings(
    fp: FrozenPrompt, graph: Graph | None, edges: list[Edge], layers: list[int]
) -> HeadLoadings:
    n_layers, n_heads = fp.model.n_layers, fp.model.spec.n_heads
    heads = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    total = 0.0
    for src, tgt in edges:
        source = _source(fp, src)
        split, edge = _edge_split(fp, source, *_target(fp, graph, tgt))
        heads += split
        total += edge
    sel = torch.tensor(layers)
    heads = heads[sel]
    bypass = total - heads.sum(1)
    return HeadLoadings(edges=edges, layers=layers, heads=heads, bypass=bypass, edge=total)


def _edge_split(
    fp: FrozenPrompt, source: _Source, t_layer: int, t_pos: int, vec: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """``(loadings [n_layers, n_heads], edge)`` of one edge into the target read at
    ``(t_layer, t_pos)`` along ``vec [d]``.

    Both sweeps run over the positions ``source.pos .. t_pos`` only (the source's field is
    zero before its position, the target's gradient after its own) and the layers between
    them. Forward: each crossed layer's per-head output ``z`` of the source's field. Backward:
    the target's gradient, each head's ``gz`` at the same layers (``loading = <gz, z>``), and
    the edge itself, ``<gradient at the source's write point, its vector>`` summed over the
    source's writes (as the engine's ``Sources.read``).
    """
    n_layers, n_heads = fp.model.n_layers, fp.model.spec.n_heads
    heads = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    if source.pos > t_pos:
        return heads, 0.0
    lo, m, d = source.pos, t_pos - source.pos + 1, vec.shape[0]
    top = min(t_layer, n_layers - 1)  # the highest attention layer the edge crosses
    z = _source_heads(fp, source, lo, m, top)
    g = torch.zeros(m, d, dtype=fp.dtype)
    if t_layer == n_layers:  # a logit: read after the final norm
        ad, bw = fp.model.adapter, fp.backward
        final = fp.model.module(ad.final_norm)
        g[-1] = norm_transpose(ad.norm, final, vec[None], bw.final_scale[t_pos : t_pos + 1])[0]
    edge = 0.0
    for layer in range(top, source.bottom - 1, -1):
        if layer < t_layer:  # this layer's MLP output is on the way (skip path, source writes)
            gw = mlp_transposed(fp, layer, g, lo)
            write = source.write(layer)
            if write is not None:
                edge += float(gw[0] @ write)
        else:  # the target reads this layer's MLP input
            _inject(fp, layer, g, vec, t_pos)
        if layer >= source.first_attention:
            gz = attention_transposed(fp, layer, g, lo)
            heads[layer] = (gz * z[layer]).view(m, n_heads, -1).sum((0, 2)).double()
    if not source.layers:  # a token: read at the embedding
        edge += float(g[0] @ source.vectors[0])
    return heads, edge


def _source_heads(
    fp: FrozenPrompt, source: _Source, lo: int, m: int, top: int
) -> dict[int, torch.Tensor]:
    """``z[L] [m, n_heads * d_head]``: each head's output at layer ``L`` (from the source's
    first attention layer up to ``top``) of the source's contribution, positions ``lo ..``."""
    d = source.vectors.shape[1]
    f = torch.zeros(m, d, dtype=fp.dtype)
    if not source.layers:
        f[0] = source.vectors[0]
    z = {}
    for layer in range(source.bottom, top + 1):
        if layer >= source.first_attention:
            z[layer], out = attention_forward(fp, layer, f, lo)
            f += out
        if layer < top:
            w = torch.zeros_like(f)
            write = source.write(layer)
            if write is not None:
                w[0] = write
            f += mlp_forward(fp, layer, f, w, lo)
    return z


def _inject(fp: FrozenPrompt, layer: int, g: torch.Tensor, vec: torch.Tensor, pos: int) -> None:
    """Adds a feature target's read vector ``vec [d]`` at the window's last position (its
    position ``pos``) into ``g [m, d]``, through the pre-MLP norm where it reads after it."""
    lay = fp.backward.layers[layer]
    v = vec[None]
    if lay.ln2 is not None:
        block = fp.model.block(layer).get_submodule(fp.model.adapter.ln2)
        v = norm_transpose(fp.model.adapter.norm, block, v, lay.ln2[pos : pos + 1].to(fp.dtype))
    g[-1] += v[0]
