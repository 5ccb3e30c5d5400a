"""``run_batch``: trace many prompts, in this process or as Ray tasks, resumably.

In-process, the model is loaded once and the prompts run one after the other. On Ray, every
pending prompt is one task with its CPU/GPU resources declared; a worker process loads the
model on its first task and keeps it (``tracing.cached_model``), so a worker that runs many
prompts loads once. Workers return the graph to the driver, which alone writes ``DIR`` (so a
multi-node cluster needs no shared filesystem and no two processes write one file).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .fingerprint import load_fingerprint
from .prompts import PromptRecord
from .store import BatchDir
from .tracing import (
    LoadSpec,
    TraceSettings,
    cached_model,
    content_key,
    error_text,
    record_key,
    trace_record,
)

OnResult = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class RayOptions:
    """Where and how to run on Ray: ``address`` (None: start or join a local instance, as
    ``ray.init()`` does), resources per task, and how many tasks may be queued at once."""

    address: str | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_in_flight: int | None = None
    max_retries: int = 2


@dataclass(frozen=True)
class BatchResult:
    """Counts of one run and the summary's path."""

    total: int
    skipped: int
    traced: int
    failed: int
    pending: int
    summary: Path


def run_batch(
    records: list[PromptRecord],
    out: str | Path,
    load: LoadSpec,
    settings: TraceSettings,
    *,
    ray: RayOptions | None = None,
    on_result: OnResult | None = None,
    verbose: bool = False,
) -> BatchResult:
    """Traces every record not already done in ``out`` and rebuilds ``out/summary.parquet``.

    ``on_result(row)`` is called after each prompt's files are written (an exception from it
    stops the run; what is written stays). The summary is rebuilt also when the run stops
    early, with ``status = "pending"`` for prompts not traced yet.
    """
    store = BatchDir(out)
    store.prepare()
    content = load_fingerprint(load)  # the transcoders' and model's bytes, hashed once
    keys = [record_key(r, load, settings, content) for r in records]
    todo = [(r, k) for r, k in zip(records, keys, strict=True) if store.done_row(r.id, k) is None]
    counts = {"traced": 0, "failed": 0}
    bar = tqdm(total=len(records), initial=len(records) - len(todo), disable=not verbose)
    try:
        ck = content_key(content)
        results = (
            _run_local(todo, load, ck, settings)
            if ray is None
            else _run_ray(todo, load, ck, settings, ray)
        )
        for record, graph, row in results:
            if graph is not None:
                store.write_graph(record.id, graph)
                counts["traced"] += 1
            else:
                store.write_error(record.id, row)
                counts["failed"] += 1
            bar.update(1)
            if on_result is not None:
                on_result(row)
    finally:
        bar.close()
        rows = store.rows(records, keys)
        summary = store.write_summary(rows)
    return BatchResult(
        total=len(records),
        skipped=len(records) - len(todo),
        traced=counts["traced"],
        failed=counts["failed"],
        pending=sum(r["status"] == "pending" for r in rows),
        summary=summary,
    )


Result = tuple[PromptRecord, Any, dict[str, Any]]


def _run_local(
    todo: list[tuple[PromptRecord, str]], load: LoadSpec, content: str, settings: TraceSettings
) -> Iterator[Result]:
    if not todo:
        return
    model, loads = cached_model(load, content)
    for record, key in todo:
        graph, row = trace_record(model, record, settings, key)
        row["model_loads"] = loads
        yield record, graph, row


def _trace_remote(
    load: LoadSpec, content: str, settings: TraceSettings, record: PromptRecord, key: str
) -> tuple[Any, dict[str, Any]]:
    """The body of one Ray task (runs in a worker process)."""
    try:
        model, loads = cached_model(load, content)
    except Exception as e:  # a load failure is reported per prompt, like any other error
        return None, {"id": record.id, "prompt": record.prompt, "key": key, "status": "error",
                      "error": error_text(e), "model_loads": 0}  # fmt: skip
    graph, row = trace_record(model, record, settings, key)
    row["model_loads"] = loads
    return graph, row


def _run_ray(
    todo: list[tuple[PromptRecord, str]],
    load: LoadSpec,
    content: str,
    settings: TraceSettings,
    opts: RayOptions,
) -> Iterator[Result]:
    try:
        import ray
    except ImportError:
        raise ImportError(
            "--ray needs Ray: pip install 'circuitlab[batch]' (or pip install ray)"
        ) from None
    if not todo:
        return
    started = False
    if not ray.is_initialized():
        ray.init(address=opts.address, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        if opts.num_gpus > 0 and load.device is None:
            load = dataclasses.replace(load, device="cuda")
        task = ray.remote(_trace_remote).options(
            num_cpus=opts.num_cpus, num_gpus=opts.num_gpus, max_retries=opts.max_retries
        )
        window = opts.max_in_flight or max(
            2, 2 * int(ray.cluster_resources().get("CPU", 1) / max(opts.num_cpus, 1e-3))
        )
        load_ref, settings_ref = ray.put(load), ray.put(settings)
        queue = list(todo)
        running: dict[Any, PromptRecord] = {}
        try:
            while queue or running:
                while queue and len(running) < window:
                    record, key = queue.pop(0)
                    ref = task.remote(load_ref, content, settings_ref, record, key)
                    running[ref] = record
                ready, _ = ray.wait(list(running), num_returns=1)
                record = running.pop(ready[0])
                graph, row = ray.get(ready[0])
                yield record, graph, row
        finally:
            for ref in running:
                ray.cancel(ref, force=True)
    finally:
        if started:
            ray.shutdown()
