"""In-process batches: graphs and summary, skip on rerun, and a killed run that resumes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from circuitlab.batch import BatchDir, LoadSpec, TraceSettings, read_prompts, run_batch
from circuitlab.graph import load_graph

SETTINGS = TraceSettings(max_n_logits=3, batch_size=32, max_feature_nodes=64)


def _summary(out: Path) -> list[dict]:
    return pq.read_table(out / "summary.parquet").to_pylist()


def _graphs(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {
        p.stem: {k: v for k, v in vars(load_graph(p)).items() if isinstance(v, torch.Tensor)}
        for p in sorted((out / "graphs").glob("*.safetensors"))
    }


@pytest.fixture(scope="module")
def reference(
    tiny_dirs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """One uninterrupted run: ``(prompt_file, out)``."""
    import json

    from .conftest import PROMPTS

    root = tmp_path_factory.mktemp("ref")
    prompts = root / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(p) for p in PROMPTS) + "\n")
    out = root / "out"
    result = run_batch(read_prompts(prompts), out, LoadSpec(str(tiny_dirs[1])), SETTINGS)
    assert (result.traced, result.failed, result.skipped) == (5, 1, 0)
    return prompts, out


def test_summary_has_one_row_per_prompt_in_input_order(reference: tuple[Path, Path]) -> None:
    prompts, out = reference
    rows = _summary(out)
    assert [r["id"] for r in rows] == [r.id for r in read_prompts(prompts)]
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 5 and all(0 <= r["replacement_score"] <= 1 for r in ok)
    for r in ok:
        graph = load_graph(out / r["graph"])
        assert r["n_tokens"] == graph.input_tokens.numel()
        assert r["n_features"] == graph.n_selected <= 64
        assert r["top_token"] == graph.logit_targets[0].token_str and r["seconds"] > 0
    assert rows[1]["targets"] == ["Austin"]
    bad = rows[-1]
    assert bad["status"] == "error" and "exactly one token" in bad["error"]
    assert bad["graph"] is None and (out / "errors" / "bad.json").is_file()


def test_rerun_skips_done_prompts_and_retraces_changed_ones(
    reference: tuple[Path, Path], tiny_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    prompts, ref = reference
    out = tmp_path / "out"
    load = LoadSpec(str(tiny_dirs[1]))
    records = read_prompts(prompts)
    run_batch(records, out, load, SETTINGS)
    again = run_batch(records, out, load, SETTINGS)
    assert (again.skipped, again.traced, again.failed) == (5, 0, 1)  # failures are retried
    changed = TraceSettings(max_n_logits=2, batch_size=32, max_feature_nodes=64)
    result = run_batch(records[:2], out, load, changed)
    assert (result.skipped, result.traced) == (0, 2)
    assert [r["id"] for r in _summary(out)] == ["line1", "dallas"]


_KILLED_RUN = """
import os, signal, sys
from circuitlab.batch import LoadSpec, TraceSettings, read_prompts, run_batch
seen = []
def on_result(row):
    seen.append(row["id"])
    if len(seen) == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)  # a crash: no cleanup, no summary
run_batch(read_prompts(sys.argv[1]), sys.argv[2], LoadSpec(sys.argv[4]),
          TraceSettings(max_n_logits=3, batch_size=32, max_feature_nodes=64),
          on_result=on_result)
"""


def test_killed_run_resumes_with_nothing_lost_or_duplicated(
    reference: tuple[Path, Path], tiny_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    prompts, ref = reference
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", textwrap.dedent(_KILLED_RUN), str(prompts), str(out), "3"]
    proc = subprocess.run([*cmd, str(tiny_dirs[1])], capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert not (out / "summary.parquet").exists()
    done = sorted(p.stem for p in (out / "graphs").glob("*.safetensors"))
    assert done == ["dallas", "line1", "line3"]
    # What a crash in the middle of a write could leave: a temp file; and a damaged graph.
    (out / "graphs" / ".texas.safetensors.x1.tmp").write_bytes(b"partial")
    good = (out / "graphs" / "line3.safetensors").read_bytes()
    (out / "graphs" / "line3.safetensors").write_bytes(good[: len(good) // 2])
    assert BatchDir(out).done_row("line3", "any") is None

    seen: list[str] = []
    result = run_batch(
        read_prompts(prompts), out, LoadSpec(str(tiny_dirs[1])), SETTINGS,
        on_result=lambda row: seen.append(row["id"]),
    )  # fmt: skip
    assert seen == ["line3", "texas", "line5", "bad"]  # damaged + never run + failed
    assert (result.skipped, result.traced, result.failed, result.pending) == (2, 3, 1, 0)
    rows = _summary(out)
    assert [r["id"] for r in rows] == [r["id"] for r in _summary(ref)]
    assert [r["status"] for r in rows] == [r["status"] for r in _summary(ref)]
    assert not list((out / "graphs").glob(".*.tmp"))
    got, want = _graphs(out), _graphs(ref)
    assert got.keys() == want.keys()
    for name in want:
        for field, tensor in want[name].items():
            assert torch.equal(got[name][field], tensor), (name, field)


def test_interrupted_run_writes_a_summary_with_pending_rows(
    reference: tuple[Path, Path], tiny_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    prompts, _ = reference
    out = tmp_path / "out"

    def stop(row: dict) -> None:
        if row["id"] == "dallas":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(read_prompts(prompts), out, LoadSpec(str(tiny_dirs[1])), SETTINGS, on_result=stop)
    statuses = [r["status"] for r in _summary(out)]
    assert statuses == ["ok", "ok", "pending", "pending", "pending", "pending"]
    assert os.listdir(out / "errors") == []
