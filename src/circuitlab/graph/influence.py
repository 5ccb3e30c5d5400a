"""All-path influence on the logits, computed on the rows a graph actually stores.

Definitions (circuit-tracer's, on the square matrix ``A[target, source]``):

* ``Â = |A| / rowsum(|A|)`` (each target's input shares sum to 1; empty rows stay 0);
* influence of every node on the weighted logits: ``w Â + w Â² + ... = w[(I - Â)^-1 - I]``,
  with ``w`` the logit weights. For a DAG ``Â`` is nilpotent, so the series ends exactly.

Only feature and logit rows of ``A`` can be non-zero, so we keep ``Â_rows[n_rows, N]`` and the
node index of each row ``row_nodes[n_rows]``. One step of the series is then
``prod[N] <- prod[row_nodes] @ Â_rows``: memory ``n_rows x N``, never ``N x N``.
"""

from __future__ import annotations

import torch


def normalize_rows(edges: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """``|edges| / rowsum(|edges|)``, the sum clamped to at least 1e-10.

    ``edges[n_rows, N] -> [n_rows, N]``: a new tensor, or ``edges`` itself when ``inplace``.
    """
    normalized = edges.abs_() if inplace else edges.abs()
    return normalized.div_(normalized.sum(dim=1, keepdim=True).clamp(min=1e-10))


def compute_influence(
    normalized_rows: torch.Tensor,
    row_nodes: torch.Tensor,
    weights: torch.Tensor,
    max_iter: int = 1000,
) -> torch.Tensor:
    """Influence ``w(Â + Â² + ...)`` of every node on the weighted targets.

    Args:
        normalized_rows: ``Â_rows[n_rows, N]``, row ``r`` the (normalized) inputs of node
            ``row_nodes[r]``.
        row_nodes: ``[n_rows]`` (long) node index of each row; nodes without a row have no inputs.
        weights: ``w[N]``, usually the logit probabilities in the logit slots.
        max_iter: longest path length accepted before the graph is declared cyclic.

    Returns:
        ``influence[N]``; the seed ``w`` itself is not included.

    Raises:
        ValueError: the rows or weights hold NaN or infinite values (``check_finite``).
        RuntimeError: when the series has not ended after ``max_iter`` steps (the matrix has a
            cycle, so it is not an attribution graph).
    """
    check_finite(normalized_rows, row_nodes, weights)
    row_nodes = row_nodes.to(normalized_rows.device)
    prod = weights.to(normalized_rows)
    influence = torch.zeros_like(prod)
    for _ in range(max_iter + 1):
        prod = prod[row_nodes] @ normalized_rows
        if not prod.any():
            return influence
        influence += prod
    raise RuntimeError(
        f"influence did not converge after {max_iter} steps: the edges contain a cycle "
        "(an attribution graph must be acyclic); check the edge matrix and row_nodes"
    )


def check_finite(
    rows: torch.Tensor, row_nodes: torch.Tensor, weights: torch.Tensor | None = None
) -> None:
    """Raises ValueError naming the rows (by node index) that hold NaN or infinite values.

    Without this check a NaN never dies out of the series and is reported as a cycle. Costs one
    sum over ``rows[n_rows, N]`` (no ``n_rows x N`` mask).
    """
    if weights is not None and not bool(torch.isfinite(weights).all()):
        bad = (~torch.isfinite(weights)).nonzero().flatten().tolist()
        raise ValueError(
            f"the influence weights hold NaN or infinite values at nodes {_preview(bad)}: the "
            "logit probabilities must be finite numbers"
        )
    if bool(torch.isfinite(rows.sum())):
        return
    bad_rows = (~torch.isfinite(rows.sum(dim=1))).nonzero().flatten()
    nodes = row_nodes.to(bad_rows.device)[bad_rows].tolist()
    raise ValueError(
        f"the edges hold NaN or infinite values in {len(nodes)} of {rows.shape[0]} rows (into "
        f"nodes {_preview(nodes)}); influence and pruning need finite edges. This is not a "
        "cycle: recompute the graph (a NaN usually comes from a NaN activation or a float16 "
        "overflow; trace in float32 or bfloat16)"
    )


def _preview(items: list[int], k: int = 8) -> str:
    shown = ", ".join(map(str, items[:k]))
    return shown + (f", ... ({len(items)} in all)" if len(items) > k else "")


def edge_influence(
    normalized_rows: torch.Tensor,
    row_nodes: torch.Tensor,
    weights: torch.Tensor,
    max_iter: int = 1000,
    inplace: bool = False,
) -> torch.Tensor:
    """Edge scores ``Â[r, s] * (influence + w)[row_nodes[r]]``: ``[n_rows, N]``.

    An edge's share of its target's input times the target's own influence on the logits
    (a logit's influence is its weight). With ``inplace`` the scores overwrite
    ``normalized_rows``.
    """
    target_influence = compute_influence(normalized_rows, row_nodes, weights, max_iter)
    target_influence += weights.to(target_influence)
    per_row = target_influence[row_nodes.to(normalized_rows.device)][:, None]
    return normalized_rows.mul_(per_row) if inplace else normalized_rows * per_row
