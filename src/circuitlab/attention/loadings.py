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

Each loading is the edge minus the edge with that head's pattern set to zero at ``L``, computed
by the graph engine's own backward sweep (``FrozenBackward.rows``), so every incoming edge of a
target comes out of the same sweeps: ``n_heads + 1`` sweeps per layer and target batch.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..attribution.backward import FrozenBackward
from ..graph.graph import Graph
from ..replacement import ReplacementModel
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


def _without_heads(bw: FrozenBackward, layer: int, heads: slice | int) -> FrozenBackward:
    """A copy of ``bw`` in which ``heads`` of ``layer`` pass nothing (pattern zero)."""
    clone = copy.copy(bw)
    clone.layers = list(bw.layers)
    lay = bw.layers[layer]
    pattern_t = lay.pattern_t.clone()
    pattern_t[heads] = 0
    clone.layers[layer] = dataclasses.replace(lay, pattern_t=pattern_t)
    return clone


@torch.no_grad()
def _loadings(
    fp: FrozenPrompt, graph: Graph | None, edges: list[Edge], layers: list[int]
) -> HeadLoadings:
    names = {n: i for i, n in enumerate(fp.node_ids())}
    cols, targets = [], []
    for src, tgt in edges:
        if src not in names:
            raise ValueError(
                f"Unknown source node {src!r}: a source is an active feature "
                "'{layer}_{feature}_{pos}', an error '{layer}_-1_{pos}' or a token "
                "'E_{token_id}_{pos}' of this prompt."
            )
        cols.append(names[src])
        targets.append(_target(fp, graph, tgt))
    t_layers = torch.tensor([t[0] for t in targets])
    t_pos = torch.tensor([t[1] for t in targets])
    vecs = torch.stack([t[2] for t in targets])
    rows = torch.arange(len(edges))
    col = torch.tensor(cols)

    def edge_sum(bw: FrozenBackward) -> float:
        return float(bw.rows(fp.sources, t_layers, t_pos, vecs)[rows, col].sum())

    full = edge_sum(fp.backward)
    n_heads = fp.model.spec.n_heads
    heads = torch.zeros(len(layers), n_heads, dtype=torch.float64)
    bypass = torch.zeros(len(layers), dtype=torch.float64)
    top = int(t_layers.max())
    for i, layer in enumerate(layers):
        if layer > top:  # no target reads above this layer: the edges bypass it
            bypass[i] = full
            continue
        bypass[i] = edge_sum(_without_heads(fp.backward, layer, slice(None)))
        for h in range(n_heads):
            heads[i, h] = full - edge_sum(_without_heads(fp.backward, layer, h))
    return HeadLoadings(edges=edges, layers=layers, heads=heads, bypass=bypass, edge=full)
