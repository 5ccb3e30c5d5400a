"""Average-linkage agglomerative clustering, a dendrogram and its cuts (no scipy needed).

``average_linkage(dist)`` merges, step by step, the two clusters with the smallest mean
pairwise distance (UPGMA), by the nearest-neighbour-chain algorithm: ``O(n^2)`` time and one
``[n, n]`` distance matrix. Ties go to the lowest cluster index, so the result is a function of
the matrix alone (deterministic).

The result is scipy's linkage layout: ``merges[n - 1, 2]`` (cluster ids: ``0 .. n-1`` are the
leaves, ``n + i`` the cluster made by merge ``i``), ``heights[n - 1]`` (non-decreasing), and
``sizes[n - 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Dendrogram:
    """Merges of ``n_leaves`` leaves, in order of increasing height (see module docs)."""

    n_leaves: int
    merges: np.ndarray  # [n - 1, 2] int64: cluster ids merged at step i
    heights: np.ndarray  # [n - 1] float64: average distance between the two merged clusters
    sizes: np.ndarray  # [n - 1] int64: leaves in the new cluster

    def cut(self, n_groups: int) -> np.ndarray:
        """``labels[n_leaves]`` (int64) for ``n_groups`` groups: undo the last
        ``n_groups - 1`` merges. Groups are numbered by their smallest leaf, in order."""
        n = self.n_leaves
        if not 1 <= n_groups <= max(n, 1):
            raise ValueError(f"n_groups must be between 1 and {n} (the leaves), got {n_groups}")
        parent = np.arange(2 * n - 1)
        for i in range(n - n_groups):
            a, b = self.merges[i]
            parent[a] = parent[b] = n + i
        # A parent's id is larger than its child's: resolve roots from the top down, O(n).
        top = 2 * n - 1
        root_of = parent.copy()
        for c in range(top - 1, -1, -1):
            root_of[c] = c if parent[c] == c else root_of[parent[c]]
        root = root_of[:n]
        _, first = np.unique(root, return_index=True)
        order = {int(root[f]): k for k, f in enumerate(np.sort(first))}
        return np.array([order[int(r)] for r in root], dtype=np.int64)

    def children(self, cluster: int) -> tuple[int, int] | None:
        """The two clusters merged into ``cluster`` (None for a leaf)."""
        if cluster < self.n_leaves:
            return None
        a, b = self.merges[cluster - self.n_leaves]
        return int(a), int(b)

    def leaves(self, cluster: int) -> list[int]:
        """The leaves under ``cluster``, ascending."""
        out, stack = [], [cluster]
        while stack:
            c = stack.pop()
            kids = self.children(c)
            if kids is None:
                out.append(c)
            else:
                stack.extend(kids)
        return sorted(out)


def average_linkage(dist: np.ndarray, overwrite: bool = False) -> Dendrogram:
    """Average-linkage dendrogram of a symmetric ``dist[n, n]`` (diagonal ignored).

    ``overwrite=True`` works in ``dist`` itself (float64) and leaves it scrambled: at
    thousands of leaves the copy is hundreds of MB."""
    n = int(dist.shape[0])
    if dist.shape != (n, n):
        raise ValueError(f"dist must be square, got shape {dist.shape}")
    if overwrite and dist.dtype == np.float64 and dist.flags.writeable:
        d = dist
    else:
        d = np.array(dist, dtype=np.float64, copy=True)
    np.fill_diagonal(d, np.inf)
    size = np.ones(n, dtype=np.int64)
    # Merged-away rows are masked by adding ``gone`` (inf there) to each row read, instead of
    # writing inf into their columns: a column write is a strided pass over the whole matrix,
    # so each merge writes one column (the merged cluster's), not three.
    gone = np.zeros(n)
    first_active = 0
    raw: list[tuple[int, int, float]] = []  # (row a, row b, height): rows, in merge order
    chain: list[int] = []
    row = np.empty(n)
    for _ in range(n - 1):
        if not chain:
            while gone[first_active]:
                first_active += 1
            chain.append(first_active)
        while True:
            x = chain[-1]
            np.add(d[x], gone, out=row)
            y = int(row.argmin())  # lowest index among ties
            if len(chain) > 1 and row[chain[-2]] <= row[y]:
                y = chain[-2]
            if len(chain) > 1 and y == chain[-2]:
                break
            chain.append(y)
        b, a = chain.pop(), chain.pop()
        lo, hi = min(a, b), max(a, b)
        raw.append((lo, hi, float(d[lo, hi])))
        # Lance-Williams for average linkage; the merged cluster lives in row ``lo``.
        merged = size[lo] * d[lo]
        merged += size[hi] * d[hi]
        merged /= size[lo] + size[hi]
        merged[lo] = np.inf
        d[lo] = merged
        d[:, lo] = merged
        gone[hi] = np.inf
        size[lo] += size[hi]
    return _relabel(n, raw)


def _relabel(n: int, raw: list[tuple[int, int, float]]) -> Dendrogram:
    """Sort merges by height (stable; the chain finds them out of order) and give each new
    cluster the id ``n + step``."""
    order = sorted(range(len(raw)), key=lambda i: raw[i][2])
    rows = np.arange(n, dtype=np.int64)  # current cluster id of the cluster held in each row
    size = {i: 1 for i in range(n)}
    merges = np.zeros((max(n - 1, 0), 2), dtype=np.int64)
    heights = np.zeros(max(n - 1, 0))
    sizes = np.zeros(max(n - 1, 0), dtype=np.int64)
    # Sorting is safe for average linkage (reducible): a merge never depends on a later,
    # lower one; replay in sorted order with a union-find over rows.
    owner = np.arange(n)

    def find(r: int) -> int:
        while owner[r] != r:
            owner[r] = owner[owner[r]]
            r = int(owner[r])
        return r

    for step, i in enumerate(order):
        a, b, h = raw[i]
        ra, rb = find(a), find(b)
        ca, cb = int(rows[ra]), int(rows[rb])
        merges[step] = sorted((ca, cb))
        heights[step] = h
        sizes[step] = size[ca] + size[cb]
        new = n + step
        size[new] = sizes[step]
        keep, drop = min(ra, rb), max(ra, rb)
        owner[drop] = keep
        rows[keep] = new
    return Dendrogram(n, merges, heights, sizes)
