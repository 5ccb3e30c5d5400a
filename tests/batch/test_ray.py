"""Batches on a local Ray instance: one task per prompt, one model load per worker, graphs
equal to the in-process ones, and an interrupted run that resumes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from circuitlab.batch import LoadSpec, RayOptions, TraceSettings, read_prompts, run_batch
from circuitlab.graph import load_graph

ray = pytest.importorskip("ray")

SETTINGS = TraceSettings(max_n_logits=3, batch_size=32, max_feature_nodes=64)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_batch_matches_in_process_and_loads_once_per_worker(
    local_ray: None, tiny_dirs: tuple[Path, Path], prompt_file: Path, tmp_path: Path
) -> None:
    records = read_prompts(prompt_file)
    load = LoadSpec(str(tiny_dirs[1]))
    local = run_batch(records, tmp_path / "local", load, SETTINGS)
    rows: list[dict] = []
    stop_after = 2

    def interrupt(row: dict) -> None:
        rows.append(row)
        if len(rows) == stop_after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(records, tmp_path / "ray", load, SETTINGS, ray=RayOptions(), on_result=interrupt)
    summary = pq.read_table(tmp_path / "ray" / "summary.parquet").to_pylist()
    assert sum(r["status"] != "pending" for r in summary) == stop_after

    result = run_batch(
        records, tmp_path / "ray", load, SETTINGS, ray=RayOptions(), on_result=rows.append
    )
    assert result.skipped + result.traced + result.failed == len(records)
    assert result.pending == 0 and result.failed == local.failed
    ids = [r["id"] for r in rows]
    assert sorted(set(ids)) == sorted(r.id for r in records)  # nothing lost
    assert all(ids.count(i) == 1 for i in ids if i != "bad")  # nor traced twice (failures retry)
    loads: dict[str, set[int]] = {}
    for r in rows:
        loads.setdefault(r["worker"], set()).add(r["model_loads"])
    assert all(v == {1} for v in loads.values()), loads  # the model is loaded once per worker

    summary = pq.read_table(tmp_path / "ray" / "summary.parquet").to_pylist()
    want = pq.read_table(local.summary).to_pylist()
    assert [r["id"] for r in summary] == [r["id"] for r in want]
    assert [r["status"] for r in summary] == [r["status"] for r in want]
    for r in summary:
        if r["status"] == "ok":
            a, b = (
                load_graph(tmp_path / "ray" / r["graph"]),
                load_graph(tmp_path / "local" / r["graph"]),
            )
            assert torch.equal(a.selected_features, b.selected_features)
            torch.testing.assert_close(a.edges, b.edges, rtol=1e-5, atol=1e-6)


def test_cli_batch_with_ray_writes_the_summary(
    local_ray: None, tiny_dirs: tuple[Path, Path], prompt_file: Path, tmp_path: Path
) -> None:
    from circuitlab.cli import main

    out = tmp_path / "out"
    argv = ["batch", str(prompt_file), "--out", str(out), "-t", str(tiny_dirs[1]), "--quiet"]
    assert main([*argv, "--ray", "--max_n_logits", "3", "--num-cpus", "1"]) == 1  # one bad prompt
    rows = pq.read_table(out / "summary.parquet").to_pylist()
    assert [r["status"] for r in rows].count("ok") == 5 and rows[-1]["status"] == "error"
    assert main([*argv, "--max_n_logits", "3"]) == 1  # in-process rerun: only "bad" is retried
    assert len(list((out / "graphs").glob("*.safetensors"))) == 5
