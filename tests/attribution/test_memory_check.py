"""``attribute`` refuses an attribution that will not fit, before it starts, naming the
predicted and available memory and settings that fit; the available memory comes from
/proc/meminfo and the cgroup limit, or ``CIRCUITLAB_AVAILABLE_MEMORY``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from circuitlab.attribution import attribute
from circuitlab.attribution.memory import human
from circuitlab.attribution.memory_check import (
    AVAILABLE_MEMORY_ENV,
    AttributionPlan,
    Available,
    NotEnoughMemoryError,
    _needs,
    available_memory,
    check_attribution_memory,
    parse_bytes,
)
from circuitlab.replacement import ReplacementModel

from conftest import PROMPT, build


@pytest.fixture(scope="module")
def rm() -> ReplacementModel:
    return build("llama", dtype=torch.float32)


def _phases(rm: ReplacementModel, **kwargs: Any) -> tuple[list[str], Exception | None]:
    started: list[str] = []

    def progress(phase: str, done: int, total: int) -> None:
        if done == 0:
            started.append(phase)

    try:
        attribute(rm, PROMPT, progress=progress, **kwargs)
    except NotEnoughMemoryError as e:
        return started, e
    return started, None


def _sweep_need(rm: ReplacementModel, batch_size: int) -> int:
    """Bytes the sweep stage of the check asks for on PROMPT with ``batch_size`` rows."""
    graph = attribute(rm, PROMPT, check_memory=False)
    plan = AttributionPlan.of(rm, len(PROMPT), batch_size=batch_size)
    plan.n_active, plan.settings["max_n_logits"] = graph.n_active, graph.n_logits
    return _needs(plan.estimate(), "sweep", False)["ram"][1]


def test_too_little_memory_is_refused_before_any_edge_row(
    rm: ReplacementModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = _sweep_need(rm, 1) - 1  # not even one row per sweep fits
    monkeypatch.setenv(AVAILABLE_MEMORY_ENV, str(budget))
    started, err = _phases(rm)
    assert isinstance(err, NotEnoughMemoryError)
    assert "logit rows" not in started and "feature rows" not in started
    text = str(err)
    assert human(err.needed) in text and f"{human(budget)} is available" in text
    assert AVAILABLE_MEMORY_ENV in text and "check_memory=False" in text
    assert (
        err.suggestions and f"max_feature_nodes={err.suggestions[0]['max_feature_nodes']}" in text
    )
    assert "--max_feature_nodes" in err.message(cli=True) and "--no-memory-check" in err.message(
        cli=True
    )


def test_a_forward_pass_that_cannot_fit_is_refused_before_it_runs(
    rm: ReplacementModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(AVAILABLE_MEMORY_ENV, "1")
    started, err = _phases(rm)
    assert isinstance(err, NotEnoughMemoryError) and started == []
    assert err.phase == "forward" and "1 B is available" in str(err)


def test_each_suggested_setting_runs(rm: ReplacementModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AVAILABLE_MEMORY_ENV, str(_sweep_need(rm, 1) - 1))
    _, err = _phases(rm)
    assert isinstance(err, NotEnoughMemoryError)
    keys = {k for s in err.suggestions for k in s}
    # A smaller batch_size is not suggested: attribute takes one itself when it fits
    # (test_long_prompts.test_a_sweep_batch_that_does_not_fit_is_made_smaller).
    assert {"max_feature_nodes", "dtype"} <= keys and "batch_size" not in keys
    for change in err.suggestions:
        if "dtype" in change:
            continue  # needs a reloaded model
        graph = attribute(rm, PROMPT, **change)
        if "max_feature_nodes" in change:
            assert graph.n_selected <= change["max_feature_nodes"]


def test_check_memory_false_runs_anyway(
    rm: ReplacementModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(AVAILABLE_MEMORY_ENV, "1")
    graph = attribute(rm, PROMPT, check_memory=False)
    assert graph.n_selected > 0


def test_enough_memory_changes_nothing(rm: ReplacementModel) -> None:
    assert torch.equal(attribute(rm, PROMPT).edges, attribute(rm, PROMPT, check_memory=False).edges)


def test_the_check_takes_the_available_bytes_as_an_argument(rm: ReplacementModel) -> None:
    plan = AttributionPlan.of(rm, 8, batch_size=64, max_feature_nodes=None, offload=None)
    check_attribution_memory(plan, "cpu", stage="forward", available={"ram": Available(2**30, "x")})
    with pytest.raises(NotEnoughMemoryError, match=r"10 B is available \(a test\)"):
        check_attribution_memory(
            plan, "cpu", stage="all", available={"ram": Available(10, "a test")}
        )
    with pytest.raises(ValueError, match="stage"):
        check_attribution_memory(plan, "cpu", stage="later", available={})


def test_no_suggestion_when_nothing_fits(rm: ReplacementModel) -> None:
    plan = AttributionPlan.of(rm, 8)
    plan.n_active = 10**7  # one row of edges outweighs what offload frees
    with pytest.raises(NotEnoughMemoryError, match="No setting fits") as e:
        check_attribution_memory(plan, "cpu", stage="sweep", available={"ram": Available(1, "x")})
    assert e.value.suggestions == []


def test_available_memory_reads_meminfo_and_the_tightest_cgroup_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(AVAILABLE_MEMORY_ENV, raising=False)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  8000000 kB\nMemAvailable:  4000000 kB\n")
    root = tmp_path / "cg"
    group = root / "user" / "job"
    group.mkdir(parents=True)
    (root / "user" / "memory.max").write_text(f"{2 * 2**30}\n")
    (root / "user" / "memory.current").write_text(f"{2**30}\n")
    (group / "memory.max").write_text("max\n")
    (group / "memory.current").write_text("5\n")
    v2 = tmp_path / "cgroup-v2"
    v2.write_text("0::/user/job\n")

    def ram_of(proc_cgroup: Path) -> Available:
        return available_memory("cpu", meminfo=meminfo, cgroup_root=root, proc_cgroup=proc_cgroup)[
            "ram"
        ]

    assert ram_of(v2) == Available(2**30, "under the cgroup memory limit")
    assert ram_of(tmp_path / "none") == Available(4000000 * 1024, "MemAvailable")
    v1_dir = root / "memory" / "job"
    v1_dir.mkdir(parents=True)
    (v1_dir / "memory.limit_in_bytes").write_text(f"{2**20}\n")
    (v1_dir / "memory.usage_in_bytes").write_text(f"{2**19}\n")
    v1 = tmp_path / "cgroup-v1"
    v1.write_text("4:memory:/job\n3:cpu,cpuacct:/job\n")
    assert ram_of(v1).bytes == 2**19
    monkeypatch.setenv(AVAILABLE_MEMORY_ENV, "3GiB")
    assert available_memory("cpu")["ram"].bytes == 3 * 2**30


def test_parse_bytes() -> None:
    assert parse_bytes("1048576") == 2**20
    assert parse_bytes("8GiB") == parse_bytes("8g") == parse_bytes("8 GB") == 8 * 2**30
    assert parse_bytes("1.5KiB") == 1536
    with pytest.raises(ValueError, match=AVAILABLE_MEMORY_ENV):
        parse_bytes("lots")
