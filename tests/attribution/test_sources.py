"""How ``Sources`` packs feature decoders and error nodes into position runs."""

from __future__ import annotations

import pytest
import torch

from circuitlab.attribution import sources
from circuitlab.attribution.sources import Sources, pack_decoders, position_runs
from circuitlab.transcoders.base import SparseActivations, Transcoders
from circuitlab.transcoders.random import random_cross_layer_transcoder


def test_position_runs_cover_every_position_in_order_with_at_most_twice_the_entries() -> None:
    counts = [0, 60, 35, 20, 14, 18, 12, 25, 0, 0, 3, 40, 1]
    runs = position_runs(counts)
    assert [r[0] for r in runs] == [0] + [r[1] for r in runs[:-1]]
    assert runs[-1][1] == len(counts)
    for start, stop, slots in runs:
        run = counts[start:stop]
        assert slots == max(run)
        used = sum(run) + len(run)  # features plus one error node per position
        assert (slots + 1) * len(run) <= 2 * used or len(run) == 1


def test_a_busy_position_pads_at_most_one_quiet_neighbour() -> None:
    # (80 + 1) * 2 slots for 92 entries is within 2x; a third position would not be
    assert position_runs([80, 10, 10, 10, 10]) == [(0, 2, 80), (2, 5, 10)]


def test_positions_without_features_still_get_their_error_slot() -> None:
    assert position_runs([0, 0, 0]) == [(0, 3, 0)]


def _sources(
    n_layers: int = 3, n_pos: int = 12, d: int = 16, width: int = 40
) -> tuple[Sources, Transcoders]:
    """Random cross-layer features (float64): a busy first position, quiet and empty ones."""
    g = torch.Generator().manual_seed(0)
    tc = random_cross_layer_transcoder(n_layers, d, width, seed=1)
    per_pos = [25, 0, 3, 1, 7, 0, 0, 12, 2, 5, 1, 4][:n_pos]
    rows = []
    for layer in range(n_layers):
        for pos, count in enumerate(per_pos):
            feats = torch.randperm(width, generator=g)[: max(count - layer, 0)].sort().values
            rows += [(layer, pos, int(f)) for f in feats]
    indices = torch.tensor(rows)
    values = torch.rand(len(rows), generator=g, dtype=torch.float64) + 0.1
    features = SparseActivations(indices, values)
    n_cols = len(features) + (n_layers + 1) * n_pos
    return Sources(
        features=features,
        decoders=pack_decoders(tc, features, n_pos, n_cols, torch.float64),
        errors=torch.randn(n_layers, n_pos, d, generator=g, dtype=torch.float64),
        tokens=torch.randn(n_pos, d, generator=g, dtype=torch.float64),
        n_layers=n_layers,
        n_pos=n_pos,
    ), tc


def _reference(s: Sources, tc: Transcoders, layer: int, grad: torch.Tensor) -> torch.Tensor:
    """Edges ``[batch, n_cols + 1]`` into ``grad [batch, p, d]`` at ``layer``, one source at a
    time: ``value * <grad at its position, decoder row to layer>``, and each error vector."""
    out = torch.zeros(grad.shape[0], s.n_cols + 1, dtype=grad.dtype)
    for i, (src, pos, f) in enumerate(s.features.indices.tolist()):
        if src <= layer and pos < grad.shape[1]:
            row = tc.decoder_rows(src, torch.tensor([f]))[0, layer - src].to(grad.dtype)
            out[:, i] = s.features.values[i] * (grad[:, pos] @ row)
    for q in range(grad.shape[1]):
        out[:, s.error_col(layer) + q] = grad[:, q] @ s.errors[layer, q]
    return out


@pytest.mark.parametrize("chunk", [sources.READ_CHUNK_ELEMENTS, 400])
@pytest.mark.parametrize("batch", [1, sources.FEW_ROWS, sources.FEW_ROWS + 1, 40])
def test_read_gives_every_feature_and_error_edge_on_both_paths(
    batch: int, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # batches up to FEW_ROWS read the gathered buckets, larger ones the runs; a small chunk
    # splits buckets into several reads
    monkeypatch.setattr(sources, "READ_CHUNK_ELEMENTS", chunk)
    s, tc = _sources()
    g = torch.Generator().manual_seed(2)
    for layer in range(s.n_layers):
        for p in (s.n_pos, 8):
            grad = torch.randn(batch, p, 16, generator=g, dtype=torch.float64)
            out = torch.zeros(batch, s.n_cols + 1, dtype=torch.float64)
            s.read(out, layer, grad)
            want = _reference(s, tc, layer, grad)
            torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
