"""Average linkage: equal to the textbook algorithm, deterministic, cuts of every size."""

from __future__ import annotations

import numpy as np
import pytest

from circuitlab.circuits.hierarchy import average_linkage


def _brute(dist: np.ndarray) -> tuple[list[float], list[list[int]]]:
    """Merge the closest pair of clusters (mean pairwise distance) until one is left."""
    clusters = {i: [i] for i in range(len(dist))}
    heights, members, nxt = [], [], len(dist)
    while len(clusters) > 1:
        keys = sorted(clusters)
        pairs = [(a, b) for i, a in enumerate(keys) for b in keys[i + 1 :]]
        h, a, b = min((dist[np.ix_(clusters[a], clusters[b])].mean(), a, b) for a, b in pairs)
        clusters[nxt] = clusters.pop(a) + clusters.pop(b)
        heights.append(float(h))
        members.append(sorted(clusters[nxt]))
        nxt += 1
    return heights, members


@pytest.mark.parametrize("seed", range(8))
def test_average_linkage_matches_the_textbook_merges(seed: int) -> None:
    x = np.random.default_rng(seed).normal(size=(14, 3))
    dist = np.linalg.norm(x[:, None] - x[None], axis=-1)
    tree = average_linkage(dist)
    heights, members = _brute(dist)
    assert np.allclose(tree.heights, heights)
    assert [tree.leaves(14 + i) for i in range(13)] == members


def test_cut_gives_exactly_the_asked_number_of_groups() -> None:
    x = np.random.default_rng(0).normal(size=(30, 2))
    tree = average_linkage(np.linalg.norm(x[:, None] - x[None], axis=-1))
    for k in range(1, 31):
        labels = tree.cut(k)
        assert sorted(set(labels.tolist())) == list(range(k))
        assert labels[0] == 0  # groups numbered by their first leaf
    with pytest.raises(ValueError, match="n_groups"):
        tree.cut(31)


def test_linkage_is_deterministic_with_ties() -> None:
    dist = np.ones((6, 6)) - np.eye(6)  # every pair tied
    a, b = average_linkage(dist), average_linkage(dist.copy())
    assert np.array_equal(a.merges, b.merges)
    assert np.array_equal(a.cut(3), b.cut(3))


def test_overwrite_gives_the_same_tree_and_copies_read_only_input() -> None:
    x = np.random.default_rng(3).normal(size=(25, 4))
    dist = np.linalg.norm(x[:, None] - x[None], axis=-1)
    kept = average_linkage(dist)
    assert (dist == np.linalg.norm(x[:, None] - x[None], axis=-1)).all()  # left as it was
    frozen = dist.copy()
    frozen.flags.writeable = False
    for tree in (average_linkage(dist.copy(), overwrite=True), average_linkage(frozen, True)):
        assert np.array_equal(tree.merges, kept.merges)
        assert np.array_equal(tree.heights, kept.heights)
