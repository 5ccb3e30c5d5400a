"""Tracing jobs: prompts queued per model, run one at a time in a background thread.

Each model has its own queue and worker thread, so one model never runs two attributions at
once (they would fight over memory and its hooks) while different models can. Progress comes
from ``attribute(progress=...)``: each phase as it starts (``forward``, ``sources``, ...
``graph``) and each batch of logit and feature rows. Cancelling a queued job drops it;
cancelling a running job raises ``JobCancelled`` from that callback, so attribution stops after
the batch it is in, and its result is discarded. Every change is published to subscribers (the
server's websocket clients).

Limits: at most ``max_pending`` jobs wait (``TracerBusy`` past that), a prompt must fit the
model's context, and attribution keeps at most ``max_feature_nodes`` features unless
``attribute_kwargs`` say otherwise. A job never overwrites a graph: a slug that names an
existing graph (or one queued or running) is refused with ``SlugTaken``; without a slug the job
gets a fresh one. A job's graph files appear together or not at all (the ``.safetensors`` is
renamed into place after the ``.json`` is written; a failure removes what the job wrote).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from circuitlab.atomic import atomic_path
from circuitlab.graph.export import check_slug, create_graph_files
from circuitlab.graph.graph import Graph
from circuitlab.server.guard import public_text

JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
PHASES = ("forward", "sources", "targets", "logit rows", "feature rows", "graph")
# The share of a job's progress bar each phase of attribute() covers (writing files: the rest).
PHASE_SPANS = {
    "forward": (0.0, 0.05),
    "sources": (0.05, 0.1),
    "targets": (0.1, 0.12),
    "logit rows": (0.12, 0.25),
    "feature rows": (0.25, 0.9),
    "graph": (0.9, 0.95),
}
MAX_PROMPT_CHARS = 4000
MAX_TARGETS = 16
# circuit-tracer's (and ``circuitlab attribute``'s) default: the same graph from page and CLI.
DEFAULT_MAX_FEATURE_NODES = 7500
DEFAULT_MAX_PENDING = 8


class JobCancelled(Exception):
    """Raised inside a running job when its cancellation was requested."""


class TracerBusy(Exception):
    """``submit`` when ``max_pending`` jobs are already waiting."""


class SlugTaken(Exception):
    """``submit`` with a slug that names an existing graph, or a queued or running job's."""


class PromptRefused(ValueError):
    """``submit`` with a prompt the model cannot take: longer than its context, or text for a
    model without a tokenizer."""


@dataclass
class Job:
    """One tracing request and where it is."""

    id: str
    model: str
    prompt: str
    targets: list[str]
    slug: str
    status: JobStatus = "queued"
    phase: str = "queued"
    progress: float = 0.0
    done: int = 0  # rows (or steps) of the current phase done, of total; 0/0 when not counted
    total: int = 0
    error: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None
    cancel_requested: bool = False

    def public(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("cancel_requested")
        return d


class Progress:
    """What a running job reports through; ``check`` raises ``JobCancelled`` when asked to."""

    # Row batches can come faster than pages need them: within a phase, publish at most every
    # ``min_interval`` seconds (a new phase and a phase's last batch are always published).
    min_interval = 0.1

    def __init__(self, job: Job, publish: Callable[[Job], None]):
        self.job = job
        self._publish = publish
        self._last = 0.0

    def update(self, phase: str, progress: float, done: int = 0, total: int = 0) -> None:
        self.check()
        new_phase = phase != self.job.phase
        self.job.phase, self.job.progress = phase, max(0.0, min(1.0, progress))
        self.job.done, self.job.total = done, total
        now = time.monotonic()
        if new_phase or done == total or now - self._last >= self.min_interval:
            self._last = now
            self._publish(self.job)

    def attribution(self, phase: str, done: int, total: int) -> None:
        """``attribute(progress=...)``'s callback: phases and row batches as overall progress."""
        lo, hi = PHASE_SPANS.get(phase, (0.9, 0.95))
        counted = phase in ("logit rows", "feature rows")
        self.update(
            phase,
            lo + (hi - lo) * done / max(total, 1),
            done if counted else 0,
            total if counted else 0,
        )

    def check(self) -> None:
        if self.job.cancel_requested:
            raise JobCancelled


RunFn = Callable[[Any, Job, Progress], Graph]


class Tracer:
    """Runs attribution jobs for named ``ReplacementModel`` s and writes their graph files.

    ``run_fn(model, job, progress) -> Graph`` does the work (default: ``attribute`` with
    ``attribute_kwargs``, whose ``max_feature_nodes`` defaults to ``max_feature_nodes``; None
    there and here: no cap); graphs land in ``graph_dir`` as ``{slug}.json`` (pruned with
    ``node_threshold``/``edge_threshold``) and ``{slug}.safetensors``. At most ``max_pending``
    jobs wait for a worker.
    """

    def __init__(
        self,
        models: Mapping[str, Any],
        graph_dir: str | Path,
        *,
        node_threshold: float = 0.8,
        edge_threshold: float = 0.98,
        attribute_kwargs: Mapping[str, Any] | None = None,
        run_fn: RunFn | None = None,
        history: int = 100,
        max_feature_nodes: int | None = DEFAULT_MAX_FEATURE_NODES,
        max_pending: int = DEFAULT_MAX_PENDING,
    ):
        if not models:
            raise ValueError("Tracer needs at least one model")
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self.models = dict(models)
        self.graph_dir = Path(graph_dir)
        self.node_threshold = node_threshold
        self.edge_threshold = edge_threshold
        self.attribute_kwargs = dict(attribute_kwargs or {})
        if self.attribute_kwargs.get("max_feature_nodes") is None:
            self.attribute_kwargs["max_feature_nodes"] = max_feature_nodes
        self.max_pending = max_pending
        self.run_fn = run_fn or self._run_attribution
        self._jobs: dict[str, Job] = {}
        self._queues: dict[str, deque[Job]] = {name: deque() for name in self.models}
        self._model_locks = {name: threading.Lock() for name in self.models}
        self._cond = threading.Condition()
        self._subscribers: list[Callable[[dict[str, Any]], object]] = []
        self._history = history
        self._closed = False
        self._threads = [
            threading.Thread(target=self._worker, args=(name,), daemon=True, name=f"trace-{name}")
            for name in self.models
        ]
        for t in self._threads:
            t.start()

    # ---- public API -------------------------------------------------------------------------
    def submit(
        self,
        prompt: str,
        targets: list[str] | str | None = None,
        *,
        model: str | None = None,
        slug: str | None = None,
    ) -> Job:
        """Queue a prompt; returns the job.

        ``targets`` is a list of token strings or one token string. Raises ``ValueError`` naming
        any bad input (``PromptRefused`` past the model's context), ``SlugTaken`` for a slug in
        use and ``TracerBusy`` when ``max_pending`` jobs are waiting.
        """
        model = model or next(iter(self.models))
        if model not in self.models:
            raise ValueError(f"unknown model {model!r}; this server has {sorted(self.models)}")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("prompt must be a non-empty string")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"prompt is longer than {MAX_PROMPT_CHARS} characters")
        targets = [targets] if isinstance(targets, str) else list(targets or [])
        if len(targets) > MAX_TARGETS or not all(isinstance(t, str) and t for t in targets):
            raise ValueError(f"targets must be up to {MAX_TARGETS} non-empty token strings")
        check_prompt(self.models[model], prompt)
        job_id = uuid.uuid4().hex[:12]
        if slug:
            check_slug(slug)
        with self._cond:
            if self._closed:
                raise ValueError("the tracer is shut down")
            waiting = sum(len(q) for q in self._queues.values())
            if waiting >= self.max_pending:
                raise TracerBusy(
                    f"the server is busy: {waiting} traces are waiting; try again when one "
                    "has finished, or cancel one"
                )
            if slug and (owner := self._slug_owner(slug)):
                raise SlugTaken(f"graph {slug!r} already exists ({owner}); choose another slug")
            if not slug:
                slug = self._fresh_slug(f"trace-{time.strftime('%Y%m%d-%H%M%S')}-{job_id[:6]}")
            job = Job(id=job_id, model=model, prompt=prompt, targets=targets, slug=slug)
            self._jobs[job.id] = job
            self._queues[model].append(job)
            self._trim()
            self._cond.notify_all()
        self._publish(job)
        return job

    def _slug_owner(self, slug: str) -> str | None:
        """What holds ``slug`` (its graph files, or a queued or running job), or None."""
        for suffix in (".json", ".safetensors"):
            if (self.graph_dir / f"{slug}{suffix}").exists():
                return f"{slug}{suffix} is in the graph folder"
        for job in self._jobs.values():
            if job.slug == slug and job.finished is None:
                return f"job {job.id} is tracing it"
        return None

    def _fresh_slug(self, base: str) -> str:
        slug, n = base, 1
        while self._slug_owner(slug):
            n += 1
            slug = f"{base}-{n}"
        return slug

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job (finished jobs are left as they are)."""
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None:
                raise KeyError(job_id)
            if job.status == "queued":
                self._queues[job.model].remove(job)
                self._finish(job, "cancelled")
            elif job.status == "running":
                job.cancel_requested = True
                job.phase = "cancelling"
        self._publish(job)
        return job

    def run_exclusive(self, model: str | None, fn: Callable[[Any], Any]) -> Any:
        """``fn(model)`` while no job runs on that model (for steering and other one-offs)."""
        name = model or next(iter(self.models))
        if name not in self.models:
            raise ValueError(f"unknown model {name!r}; this server has {sorted(self.models)}")
        with self._model_locks[name]:
            return fn(self.models[name])

    def model_lock(self, model: str) -> threading.Lock:
        """The lock held while a job (or ``run_exclusive``) uses ``model``."""
        return self._model_locks[model]

    def jobs(self) -> list[dict[str, Any]]:
        """Every known job, oldest first."""
        with self._cond:
            return [j.public() for j in self._jobs.values()]

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def subscribe(self, callback: Callable[[dict[str, Any]], object]) -> Callable[[], None]:
        """Call ``callback(job_dict)`` on every change (from worker threads); returns unsubscribe."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def wait(self, job_id: str, timeout: float = 60.0) -> Job:
        """Block until the job has finished (for scripts and tests)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (job := self._jobs[job_id]).finished is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"job {job_id} still {job.status} after {timeout}s")
                self._cond.wait(left)
        return job

    def close(self) -> None:
        """Cancel everything and stop the workers."""
        with self._cond:
            self._closed = True
            for job in list(self._jobs.values()):
                if job.status == "running":
                    job.cancel_requested = True
            for q in self._queues.values():
                while q:
                    self._finish(q.popleft(), "cancelled")
            self._cond.notify_all()

    # ---- workers ----------------------------------------------------------------------------
    def _worker(self, name: str) -> None:
        while True:
            with self._cond:
                while not self._queues[name] and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._queues[name].popleft()
                job.status, job.phase = "running", "starting"
            self._publish(job)
            with self._model_locks[name]:
                self._run(job)

    def _run(self, job: Job) -> None:
        progress = Progress(job, self._publish)
        try:
            graph = self.run_fn(self.models[job.model], job, progress)
            progress.update("writing graph files", 0.95)
            self._write(graph, job)
            status, error = "done", None
        except JobCancelled:
            status, error = "cancelled", None
        except Exception as e:  # a failed job is reported to the page, the worker lives on
            error = public_text(f"{type(e).__name__}: {e}", [self.graph_dir])  # no paths shown
            status = "failed"
        with self._cond:
            if status == "done":
                job.progress = 1.0
            self._finish(job, status, error)  # type: ignore[arg-type]
        self._publish(job)

    def _write(self, graph: Graph, job: Job) -> None:
        """``{slug}.json`` (and its ``graph-metadata.json`` entry), then ``{slug}.safetensors``
        renamed into place: both or neither (a kill can leave the JSON alone, which the page
        opens and steers from its prompt text, and a temporary that the next start removes)."""
        self.graph_dir.mkdir(parents=True, exist_ok=True)
        json_file = self.graph_dir / f"{job.slug}.json"
        saved = self.graph_dir / f"{job.slug}.safetensors"
        if json_file.exists() or saved.exists():  # written by someone else meanwhile
            raise SlugTaken(f"graph {job.slug!r} appeared while tracing; not overwritten")
        try:
            with atomic_path(saved) as tmp:
                graph.save(tmp)
                create_graph_files(
                    graph,
                    job.slug,
                    self.graph_dir,
                    self.node_threshold,
                    self.edge_threshold,
                    tokenizer=getattr(self.models[job.model], "tokenizer", None),
                )
        except BaseException:
            json_file.unlink(missing_ok=True)  # ours: it did not exist above
            raise

    def _finish(self, job: Job, status: JobStatus, error: str | None = None) -> None:
        job.status, job.error, job.finished = status, error, time.time()
        job.phase = status
        self._cond.notify_all()

    def _trim(self) -> None:
        done = [j for j in self._jobs.values() if j.finished is not None]
        for j in done[: max(0, len(self._jobs) - self._history)]:
            del self._jobs[j.id]

    def _publish(self, job: Job) -> None:
        event = job.public()
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:  # a broken subscriber must not break the job
                logging.getLogger(__name__).exception("job subscriber failed")

    def _run_attribution(self, model: Any, job: Job, progress: Progress) -> Graph:
        from circuitlab.attribution import attribute

        return attribute(
            model,
            job.prompt,
            attribution_targets=job.targets or None,
            progress=progress.attribution,
            **self.attribute_kwargs,
        )


def check_prompt(model: Any, prompt: str) -> None:
    """``PromptRefused`` when ``model`` cannot read ``prompt``: more tokens than its context
    holds (both lengths named, by ``models.tokens.check_context_length``, which
    ``ensure_tokenized`` runs), or no tokenizer for a text prompt."""
    tokenize = getattr(model, "ensure_tokenized", None)
    if tokenize is None:
        return
    try:
        tokenize(prompt)
    except ValueError as e:
        raise PromptRefused(str(e)) from None
