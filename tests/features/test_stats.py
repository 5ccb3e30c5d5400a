"""Streaming per-feature statistics: exact top-k, exact rebinned histograms, ordered bands."""

from __future__ import annotations

import numpy as np
import torch

from circuitlab.features.stats import LayerStats, StatsConfig, band_of


def _stream(n_batches: int = 12, batch: int = 5, pos: int = 7, d_t: int = 9, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n_batches):
        # activations grow over time so the histogram and the bands must re-range
        a = torch.relu(torch.randn(batch, pos, d_t, generator=g)) * (1 + i) ** 2
        a[:, :, 0] = 0  # a dead feature
        out.append((a, torch.arange(i * batch, (i + 1) * batch)))
    return out


def test_top_windows_are_the_highest_window_maxima() -> None:
    stats = LayerStats(9, StatsConfig(top_k=4))
    batches = _stream()
    for a, w in batches:
        stats.update(a, w)
    wmax = torch.cat([a.amax(1) for a, _ in batches])  # [windows, d_t]
    for f in range(1, 9):
        want = wmax[:, f].topk(4)
        assert torch.equal(stats.top_score[f], want.values)
        assert torch.equal(stats.top_win[f], want.indices)
    assert (stats.top_win[0] == -1).all() and stats.fire_count[0] == 0


def test_histogram_rebinning_is_exact() -> None:
    stats = LayerStats(9, StatsConfig(hist_bins=16))
    batches = _stream()
    for a, w in batches:
        stats.update(a, w)
    acts = torch.cat([a for a, _ in batches]).reshape(-1, 9)
    for f in range(1, 9):
        v = acts[:, f][acts[:, f] > 0]
        hi = float(stats.hist_hi[f])
        assert hi > v.max() >= hi / 2  # a power of two just above act_max
        want, _ = np.histogram(v.numpy(), bins=16, range=(0, hi))
        assert stats.hist[f].tolist() == want.tolist()
        assert stats.act_min[f] == v.min() and stats.act_max[f] == v.max()
        assert stats.fire_count[f] == v.numel()
    out = stats.histogram(10)
    torch.testing.assert_close(out.sum(1), stats.fire_count.float())
    q = stats.quantile_values()
    assert (q[1:].diff(dim=1) >= 0).all() and torch.equal(q[1:, -1], stats.act_max[1:])
    assert (q[0] == 0).all()


def test_band_buckets_are_ordered_and_in_range() -> None:
    cfg = StatsConfig(top_k=3, n_bands=4, per_band=3)
    stats = LayerStats(9, cfg)
    for a, w in _stream():
        stats.update(a, w)
    for f in range(1, 9):
        buckets = stats.buckets(f)
        assert buckets[0][0] == "Top activations"
        top_band = int(band_of(stats.act_max[f : f + 1])[0])
        prev_min = float("inf")
        for name, _slots, scores in buckets[1:]:
            assert scores == sorted(scores, reverse=True)
            assert max(scores) <= prev_min
            prev_min = min(scores)
            bands = band_of(torch.tensor(scores))
            assert ((top_band - bands >= 0) & (top_band - bands < cfg.n_bands)).all()
            assert len(set(bands.tolist())) == 1, name


def test_state_does_not_depend_on_batch_boundaries() -> None:
    batches = _stream(n_batches=6)
    one, many = LayerStats(9), LayerStats(9)
    for a, w in batches:
        many.update(a, w)
    one.update(torch.cat([a for a, _ in batches]), torch.cat([w for _, w in batches]))
    for key, value in one.state_dict().items():
        assert torch.equal(value, many.state_dict()[key]), key
