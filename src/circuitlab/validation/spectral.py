"""Spectral distance between two pruned graphs: compare shapes, not node identities.

An attribution graph is a DAG, so its adjacency matrix is nilpotent and every eigenvalue is 0:
the directed spectrum says nothing. We use the **normalized Laplacian of the undirected weighted
graph** instead:

* ``S = |A| + |A|ᵀ`` over the kept nodes and edges (edge signs ignored);
* ``L = I − D^{-1/2} S D^{-1/2}`` with ``D = diag(row sums of S)``; an isolated node gets
  ``L_ii = 0`` (so each connected component, isolated nodes included, adds one eigenvalue 0);
* its eigenvalues ``λ`` lie in ``[0, 2]`` and do not depend on the scale of the weights or the
  order of the nodes.

``spectral_distance(A, B) = sqrt(mean_i (λ^A_i − λ^B_i)²)`` over both spectra sorted ascending,
the smaller one first padded with zeros to the larger size (padding is exactly adding isolated
nodes). The distance is in ``[0, 2]``; 0 for identical or isomorphic circuits, whatever the
prompts.
"""

from __future__ import annotations

import torch


def laplacian_spectrum(adjacency: torch.Tensor) -> torch.Tensor:
    """Sorted eigenvalues ``[n]`` (float64, ascending) of the normalized Laplacian of
    ``adjacency[n, n]`` (any orientation; symmetrized with absolute values)."""
    a = adjacency.detach().double().abs()
    if a.dim() != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"adjacency must be a square matrix, got shape {tuple(a.shape)}")
    s = a + a.T
    s.fill_diagonal_(0)
    degree = s.sum(dim=1)
    connected = degree > 0
    inv_sqrt = torch.where(connected, degree.clamp(min=1e-300).rsqrt(), torch.zeros_like(degree))
    lap = torch.diag(connected.double()) - inv_sqrt[:, None] * s * inv_sqrt[None, :]
    if lap.shape[0] == 0:
        return lap.new_zeros(0)
    return torch.linalg.eigvalsh(lap).clamp(0.0, 2.0)


def spectral_distance(adjacency_a: torch.Tensor, adjacency_b: torch.Tensor) -> float:
    """Root-mean-square distance of the padded sorted Laplacian spectra (see module docs)."""
    la, lb = laplacian_spectrum(adjacency_a), laplacian_spectrum(adjacency_b)
    n = max(la.numel(), lb.numel())
    if n == 0:
        return 0.0
    la = torch.cat([la.new_zeros(n - la.numel()), la]).sort().values
    lb = torch.cat([lb.new_zeros(n - lb.numel()), lb]).sort().values
    return float(((la - lb) ** 2).mean().sqrt())
