"""Cancelling a running tracing job from the page: it stops mid-phase, the queue empties, and
the next job runs and opens."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from circuitlab.server import Job, LabServer, Progress, Tracer, start_server
from server.helpers import small_graph

from .conftest import lab_files, open_lab

STEPS = 400


def slow_when_asked(_model: object, job: Job, progress: Progress):
    """Like attribution: progress per row batch; prompts starting with "slow" take ~20 s."""
    steps = STEPS if job.prompt.startswith("slow") else 3
    pause = threading.Event()
    for i in range(steps):
        progress.attribution("feature rows", i + 1, steps)  # raises JobCancelled
        pause.wait(0.05)
    return small_graph()


@pytest.fixture
def slow_lab(tmp_path: Path) -> Iterator[LabServer]:
    graphs, features = lab_files(tmp_path)
    tracer = Tracer({"m": object()}, graphs, run_fn=slow_when_asked)
    server = start_server(graphs, features, tracer=tracer)
    yield server
    server.stop()


def jobs(server: LabServer) -> list[dict[str, Any]]:
    with urllib.request.urlopen(server.url + "api/jobs", timeout=10) as r:
        return json.loads(r.read())["jobs"]


def test_cancel_a_running_job_then_the_queued_one_runs(page: Any, slow_lab: LabServer) -> None:
    open_lab(page, slow_lab.url + "?slug=small")
    page.fill("#trace-prompt", "slow one")
    page.click("#trace-go")
    running = page.locator("#jobs .job-running")
    running.wait_for()
    page.wait_for_function(
        "document.querySelector('#jobs .job-running .job-status').textContent.includes('feature rows')"
    )
    page.fill("#trace-prompt", "quick one")
    page.click("#trace-go")
    page.locator("#jobs .job-queued").wait_for()  # one job at a time: the second waits
    running.locator("button.cancel").click()
    page.locator("#jobs .job-cancelled").wait_for()
    page.wait_for_function("window.__lab.state.slug.startsWith('trace-')", timeout=30_000)
    statuses = {j["prompt"]: j for j in jobs(slow_lab)}
    assert statuses["slow one"]["status"] == "cancelled"
    assert statuses["slow one"]["done"] < STEPS  # stopped mid-phase
    assert statuses["quick one"]["status"] == "done"
    assert not [j for j in statuses.values() if j["status"] in ("queued", "running")]
    assert page.locator("#jobs .job-done").count() == 1
