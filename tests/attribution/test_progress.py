"""``attribute(progress=...)``: phases as they start, each row batch, and stopping from it."""

from __future__ import annotations

import pytest
import torch

from circuitlab.attribution import attribute

from conftest import PROMPT, build

PHASES = ["forward", "sources", "targets", "logit rows", "feature rows", "graph"]


class Stop(Exception):
    pass


def test_progress_reports_every_phase_and_row_batch_and_changes_nothing() -> None:
    rm = build("llama")
    calls: list[tuple[str, int, int]] = []
    graph = attribute(rm, PROMPT, batch_size=4, progress=lambda *a: calls.append(a))
    starts = [phase for phase, done, _ in calls if done == 0]
    assert starts == PHASES
    rows = [(done, total) for phase, done, total in calls if phase == "feature rows" and done]
    n_rows = len(graph.selected_features)
    assert [d for d, _ in rows] == list(range(4, n_rows, 4)) + [n_rows]
    assert {t for _, t in rows} == {n_rows}
    logit_rows = [d for phase, d, _ in calls if phase == "logit rows" and d]
    assert logit_rows[-1] == len(graph.logit_targets)
    plain = attribute(rm, PROMPT, batch_size=4)
    assert torch.equal(plain.edges, graph.edges)


def test_an_exception_from_progress_stops_attribution_within_a_batch() -> None:
    rm = build("llama")
    calls: list[tuple[str, int, int]] = []

    def stop_after_first_feature_batch(phase: str, done: int, total: int) -> None:
        calls.append((phase, done, total))
        if phase == "feature rows" and done > 0:
            raise Stop

    with pytest.raises(Stop):
        attribute(rm, PROMPT, batch_size=2, progress=stop_after_first_feature_batch)
    assert calls[-1][:2] == ("feature rows", 2)  # one batch of 2 rows, then stopped
    assert attribute(rm, PROMPT, batch_size=2).edges.numel()  # the model still works
