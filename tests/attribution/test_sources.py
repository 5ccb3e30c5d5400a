"""How ``Sources`` packs feature decoders and error nodes into position runs."""

from __future__ import annotations

from circuitlab.attribution.sources import position_runs


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
