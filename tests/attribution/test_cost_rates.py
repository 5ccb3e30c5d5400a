"""``cost_rates``: the measured throughputs behind the time prediction, and which apply."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from circuitlab.attribution.backward import ATTENTION_BLOCK, causal_matmul
from circuitlab.attribution.cost_rates import (
    REFERENCE,
    blocked_area,
    calibrate,
    load_rates,
    machine_id,
    save_rates,
)


def test_calibrate_measures_positive_rates_with_one_thread() -> None:
    threads = torch.get_num_threads()
    rates = calibrate(seconds=0.02)
    assert torch.get_num_threads() == threads
    assert rates.machine == machine_id()
    assert all(v > 0 for k, v in asdict(rates).items() if k != "machine")


def test_saved_rates_apply_to_this_machine_only(tmp_path: Path) -> None:
    path = tmp_path / "rates.json"
    assert load_rates(path) == REFERENCE  # nothing saved
    mine = replace(REFERENCE, matmul=1e9, machine=machine_id())
    assert save_rates(mine, path) == path
    assert load_rates(path) == mine
    save_rates(replace(mine, machine="another CPU x64 torch 0.1"), path)
    assert load_rates(path) == REFERENCE
    path.write_text("{not json")
    assert load_rates(path) == REFERENCE
    path.write_text(json.dumps({"matmul": 1.0}))  # fields missing
    assert load_rates(path) == REFERENCE


def test_scaled_to_keeps_the_proportions() -> None:
    fast = REFERENCE.scaled_to(4 * REFERENCE.matmul)
    assert fast.matmul == 4 * REFERENCE.matmul
    assert fast.pattern == pytest.approx(4 * REFERENCE.pattern)
    assert fast.read == pytest.approx(4 * REFERENCE.read)
    assert fast.elementwise == pytest.approx(4 * REFERENCE.elementwise)
    assert fast.stream == pytest.approx(4 * REFERENCE.stream)
    with pytest.raises(ValueError, match="positive"):
        REFERENCE.scaled_to(0)


@pytest.mark.parametrize("n_pos", [1, 100, 256, 300, 700])
def test_blocked_area_counts_what_the_blocked_product_reads(n_pos: int) -> None:
    # A pattern of ones (not causal) and x = 1: out sums the pattern entries the product reads.
    out = torch.zeros(1, n_pos, dtype=torch.float64)
    ones = torch.ones(n_pos, n_pos, dtype=torch.float64)
    causal_matmul(torch.ones(1, n_pos, dtype=torch.float64), ones, out)
    assert blocked_area(n_pos, ATTENTION_BLOCK) == int(out.sum())
    assert blocked_area(n_pos, ATTENTION_BLOCK) >= n_pos * (n_pos + 1) // 2
