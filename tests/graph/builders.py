"""Graphs built in code for the graph tests, and square-matrix reference implementations.

The references follow the published definitions on the full ``[N, N]`` matrix (as
circuit-tracer stores it), written independently of ``circuitlab.graph`` so the rectangular
code can be checked against them.
"""

from __future__ import annotations

import torch

from circuitlab.graph import Graph, LogitTarget


def make_graph(
    edges: torch.Tensor,
    *,
    n_layers: int,
    n_pos: int,
    active_features: torch.Tensor,
    selected_features: torch.Tensor,
    probabilities: list[float],
    **extra: object,
) -> Graph:
    """A graph with placeholder tokens/strings around the given ``edges[n_rows, N]``."""
    n_logits = len(probabilities)
    return Graph(
        input_string="hand built",
        input_tokens=torch.arange(10, 10 + n_pos),
        logit_targets=[LogitTarget(f"tok{i}", 100 + i) for i in range(n_logits)],
        logit_probabilities=torch.tensor(probabilities, dtype=edges.dtype),
        vocab_size=1000,
        active_features=active_features,
        activation_values=torch.linspace(1.0, 2.0, len(active_features)),
        selected_features=selected_features,
        edges=edges,
        n_layers=n_layers,
        model_name="tiny",
        **extra,  # type: ignore[arg-type]
    )


def hand_graph(dtype: torch.dtype = torch.float64) -> Graph:
    """2 layers, 2 positions, 3 features, 2 logits: N = 3 + 4 + 2 + 2 = 11.

    Nodes: f0=0 f1=1 f2=2 | e(0,0)=3 e(0,1)=4 e(1,0)=5 e(1,1)=6 | t0=7 t1=8 | L0=9 L1=10.
    """
    f0, f1, f2, e01, e11, t0, t1 = 0, 1, 2, 4, 6, 7, 8
    edges = torch.zeros(5, 11, dtype=dtype)
    edges[0, [t1, t0, e01]] = torch.tensor([2.0, -1.0, 0.5], dtype=dtype)  # f0 (layer 0, pos 1)
    edges[1, [t1, t0]] = torch.tensor([1.0, 0.5], dtype=dtype)  # f1 (layer 0, pos 1)
    edges[2, [f0, f1, e01, t1]] = torch.tensor([1.5, -0.5, 0.25, 0.25], dtype=dtype)  # f2
    edges[3, [f2, f0, e11, t1]] = torch.tensor([2.0, 0.5, 1.0, 0.5], dtype=dtype)  # L0
    edges[4, [f2, f1, e11]] = torch.tensor([-1.0, 1.0, 0.5], dtype=dtype)  # L1
    active = torch.tensor([[0, 1, 5], [0, 1, 7], [1, 0, 2], [1, 1, 3]])
    return make_graph(
        edges,
        n_layers=2,
        n_pos=2,
        active_features=active,
        selected_features=torch.tensor([0, 1, 3]),
        probabilities=[0.6, 0.3],
    )


def random_graph(
    seed: int,
    *,
    n_layers: int = 3,
    n_pos: int = 4,
    n_features: int = 12,
    n_logits: int = 3,
    density: float = 0.5,
    dtype: torch.dtype = torch.float32,
) -> Graph:
    """A random causal graph: inputs only from earlier layers and positions <= the target's."""
    gen = torch.Generator().manual_seed(seed)
    layer = torch.randint(0, n_layers, (n_features,), generator=gen)
    pos = torch.randint(1, n_pos, (n_features,), generator=gen)
    idx = torch.randperm(1000, generator=gen)[:n_features]
    coords = torch.stack([layer, pos, idx], dim=1)
    order = sorted(range(n_features), key=lambda i: tuple(coords[i].tolist()))
    coords = coords[order]
    n_err = n_layers * n_pos
    n = n_features + n_err + n_pos + n_logits
    src_layer = torch.cat(
        [coords[:, 0], torch.arange(n_layers).repeat_interleave(n_pos), torch.full((n_pos,), -1)]
    )
    src_pos = torch.cat([coords[:, 1], torch.arange(n_pos).repeat(n_layers), torch.arange(n_pos)])
    n_src = n_features + n_err + n_pos

    edges = torch.zeros(n_features + n_logits, n, dtype=dtype)
    values = torch.randn(n_features + n_logits, n_src, generator=gen, dtype=dtype)
    keep = torch.rand(n_features + n_logits, n_src, generator=gen) < density
    for r in range(n_features):
        allowed = (src_layer < coords[r, 0]) & (src_pos <= coords[r, 1])
        edges[r, :n_src] = torch.where(allowed & keep[r], values[r], 0)
    edges[n_features:, :n_src] = torch.where(keep[n_features:], values[n_features:], 0)
    probs = torch.rand(n_logits, generator=gen).sort(descending=True).values
    return make_graph(
        edges,
        n_layers=n_layers,
        n_pos=n_pos,
        active_features=coords,
        selected_features=torch.arange(n_features),
        probabilities=(probs / probs.sum() * 0.9).tolist(),
    )


# ---- square-matrix references (circuit-tracer's definitions) ---------------------------------
def square_normalize(a: torch.Tensor) -> torch.Tensor:
    a = a.abs()
    return a / a.sum(dim=1, keepdim=True).clamp(min=1e-10)


def square_influence_by_inverse(a_hat: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``w[(I - Â)^-1 - I]`` in float64."""
    a64 = a_hat.double()
    eye = torch.eye(a64.shape[0], dtype=torch.float64)
    return w.double() @ (torch.linalg.inv(eye - a64) - eye)


def square_influence_by_series(a_hat: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    current = w @ a_hat
    total = current.clone()
    while current.any():
        current = current @ a_hat
        total += current
    return total


def sort_threshold(scores: torch.Tensor, t: float) -> float:
    """circuit-tracer's cut-off: full sort, cumulative share, searchsorted, last positive."""
    s = torch.sort(scores.flatten().double(), descending=True).values
    cum = torch.cumsum(s, 0) / s.sum()
    i = int(torch.searchsorted(cum, torch.tensor([t], dtype=torch.float64)))
    n_pos = int((s > 0).sum())
    return float(s[min(i, max(n_pos - 1, 0))])


def square_prune(
    graph: Graph, node_threshold: float, edge_threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference prune on the square matrix: ``(node_mask[N], edge_mask[N, N])``."""
    a = graph.adjacency_matrix.double()
    n = a.shape[0]
    n_keep_always = graph.n_pos + graph.n_logits
    w = torch.zeros(n, dtype=torch.float64)
    w[n - graph.n_logits :] = graph.logit_probabilities.double()
    inf = square_influence_by_series(square_normalize(a), w)
    node_mask = inf >= sort_threshold(inf, node_threshold)
    node_mask[n - n_keep_always :] = True
    pruned = a.clone()
    pruned[~node_mask] = 0
    pruned[:, ~node_mask] = 0
    a_hat = square_normalize(pruned)
    scores = a_hat * (square_influence_by_series(a_hat, w) + w)[:, None]
    edge_mask = (scores >= sort_threshold(scores, edge_threshold)) & (scores > 0)
    n_sel = graph.n_selected
    while True:
        old = node_mask.clone()
        edge_mask[~node_mask] = False
        edge_mask[:, ~node_mask] = False
        node_mask[: n - n_keep_always] &= edge_mask[:, : n - n_keep_always].any(0)
        node_mask[:n_sel] &= edge_mask[:n_sel].any(1)
        if torch.equal(old, node_mask):
            return node_mask, edge_mask


def square_scores(graph: Graph) -> tuple[float, float]:
    a_hat = square_normalize(graph.adjacency_matrix.double())
    n = a_hat.shape[0]
    w = torch.zeros(n, dtype=torch.float64)
    w[n - graph.n_logits :] = graph.logit_probabilities.double()
    inf = square_influence_by_inverse(a_hat, w)
    err = slice(graph.n_selected, graph.n_selected + graph.n_layers * graph.n_pos)
    tok = slice(err.stop, err.stop + graph.n_pos)
    replacement = inf[tok].sum() / (inf[tok].sum() + inf[err].sum())
    non_error = 1 - a_hat[:, err].sum(dim=1)
    out = inf + w
    return float(replacement), float((non_error * out).sum() / out.sum())


# ---- the dense implementations the block store replaced (rows [n_rows, N]) -----------------
def dense_prune(
    graph: Graph, node_threshold: float = 0.8, edge_threshold: float = 0.98
) -> tuple[torch.Tensor, torch.Tensor]:
    """``prune_graph`` as it was on dense rows: ``(node_mask[N], edge_mask[n_rows, N])``."""
    from circuitlab.graph import compute_influence, edge_influence, find_threshold, normalize_rows

    edges, row_nodes = graph.edges.to(graph.logit_weights().dtype), graph.row_nodes
    weights = graph.logit_weights()
    node_inf = compute_influence(normalize_rows(edges), row_nodes, weights)
    node_mask = node_inf >= find_threshold(node_inf, node_threshold)
    node_mask[graph.token_offset :] = True
    scores = edges * node_mask[None, :]
    scores[~node_mask[row_nodes]] = 0
    normalize_rows(scores, inplace=True)
    edge_influence(scores, row_nodes, weights, inplace=True)
    edge_mask = (scores >= find_threshold(scores, edge_threshold)) & (scores > 0)
    n_sel, sources_end = graph.n_selected, graph.token_offset
    while True:
        before = node_mask.clone()
        edge_mask &= node_mask[row_nodes][:, None]
        edge_mask &= node_mask[None, :]
        node_mask[:sources_end] &= edge_mask[:, :sources_end].any(0)
        node_mask[:n_sel] &= edge_mask[:n_sel].any(1)
        if torch.equal(node_mask, before):
            return node_mask, edge_mask


def dense_scores(graph: Graph, node_mask: torch.Tensor | None = None) -> tuple[float, float]:
    """``compute_(sub)graph_scores`` as they were on dense rows."""
    from circuitlab.graph import compute_influence, normalize_rows

    weights, row_nodes = graph.logit_weights(), graph.row_nodes
    is_error = torch.zeros(graph.n_nodes, dtype=torch.bool)
    is_error[graph.error_offset : graph.token_offset] = True
    normalized = normalize_rows(graph.edges.to(weights.dtype))
    if node_mask is not None:
        is_error[: graph.n_selected] = ~node_mask[: graph.n_selected]
        normalized[is_error[row_nodes]] = 0
    influence = compute_influence(normalized, row_nodes, weights)
    tokens = influence[graph.token_offset : graph.logit_offset].sum()
    replacement = tokens / (tokens + influence[is_error].sum())
    non_error = torch.ones_like(influence)
    non_error[row_nodes] = 1 - normalized @ is_error.to(normalized.dtype)
    out = influence + weights
    return float(replacement), float((non_error * out).sum() / out.sum())
