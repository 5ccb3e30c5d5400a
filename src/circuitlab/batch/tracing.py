"""Tracing one prompt record: what to load, how to attribute, and the summary row.

``LoadSpec`` and ``TraceSettings`` are small frozen values so that they travel to Ray workers
and key the per-process model cache: a worker loads its model once and reuses it for every
prompt it is given.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import traceback
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .fingerprint import load_fingerprint
from .prompts import PromptRecord

if TYPE_CHECKING:
    from ..graph import Graph
    from ..replacement import ReplacementModel


@dataclass(frozen=True)
class LoadSpec:
    """Model and transcoders to load (``model=None``: the transcoders' ``model_name``)."""

    transcoder_set: str
    model: str | None = None
    dtype: str = "float32"
    lazy_encoder: bool = False
    lazy_decoder: bool = True
    device: str | None = None

    def load(self) -> ReplacementModel:
        import torch

        from ..replacement import ReplacementModel
        from ..transcoders import load_transcoders

        dtype = getattr(torch, self.dtype)
        tc = load_transcoders(
            self.transcoder_set,
            dtype=dtype,
            device=self.device or "cpu",
            lazy_encoder=self.lazy_encoder,
            lazy_decoder=self.lazy_decoder,
        )
        ref = self.model or getattr(tc, "model_name", None)
        if not ref:
            raise ValueError("the transcoders name no model_name: pass -m/--model")
        return ReplacementModel.from_pretrained(ref, tc, dtype=dtype, device=self.device)


@dataclass(frozen=True)
class TraceSettings:
    """``attribute`` settings shared by every prompt of a batch (circuit-tracer's names)."""

    max_n_logits: int = 10
    desired_logit_prob: float = 0.95
    batch_size: int = 256
    max_feature_nodes: int | None = 7500
    offload: str | None = None
    edge_dtype: str | None = None  # None: attribute's default (keys of older runs unchanged)
    check_memory: bool = True  # refuse a prompt that will not fit (not part of its key)


def record_key(
    record: PromptRecord,
    load: LoadSpec,
    settings: TraceSettings,
    content: dict[str, Any] | None = None,
) -> str:
    """A digest of everything that determines a prompt's graph (a changed input is re-traced).

    The transcoders and model enter by content, not path (``fingerprint.load_fingerprint``;
    pass ``content`` to hash them once for many records)."""
    if content is None:
        content = load_fingerprint(load)
    skip = {"device", "transcoder_set", "model"}
    blob = json.dumps(
        {
            "record": record.to_json(),
            "load": {k: v for k, v in asdict(load).items() if k not in skip},
            "content": content,
            "settings": {
                k: v
                for k, v in asdict(settings).items()
                if k != "check_memory" and not (k == "edge_dtype" and v is None)
            },
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


_MODELS: dict[tuple[LoadSpec, str], ReplacementModel] = {}
_LOADS = 0


def content_key(content: dict[str, Any]) -> str:
    """``load_fingerprint``'s digests as one string (keys the per-process model cache)."""
    return json.dumps(content, sort_keys=True)


def cached_model(load: LoadSpec, content: str) -> tuple[ReplacementModel, int]:
    """The model for ``load`` whose files have ``content`` (``content_key``), loaded at most
    once per process; also the process's load count. New files at the same paths reload."""
    global _LOADS
    key = (load, content)
    if key not in _MODELS:
        _MODELS.clear()  # one model per worker: a new spec replaces the old one
        _MODELS[key] = load.load()
        _LOADS += 1
    return _MODELS[key], _LOADS


def trace_record(
    model: ReplacementModel,
    record: PromptRecord,
    settings: TraceSettings,
    key: str,
) -> tuple[Graph | None, dict[str, Any]]:
    """Attributes one record; returns ``(graph, row)`` or ``(None, error row)``.

    The row (see ``batch.store.SUMMARY_FIELDS``) is also stored in the graph's
    ``settings["batch"]`` so that the graph file alone says what it is.
    """
    from ..attribution import LogitDiff, attribute
    from ..graph import compute_graph_scores

    start = time.perf_counter()
    row: dict[str, Any] = {"id": record.id, "prompt": record.prompt, "key": key}
    row["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    try:
        targets = [*record.targets, *(LogitDiff(a, b) for a, b in record.logit_diffs)] or None
        graph = attribute(
            model,
            record.prompt,
            attribution_targets=targets,
            max_n_logits=settings.max_n_logits,
            desired_logit_prob=settings.desired_logit_prob,
            batch_size=settings.batch_size,
            max_feature_nodes=settings.max_feature_nodes,
            offload=settings.offload,
            edge_dtype=settings.edge_dtype,
            check_memory=settings.check_memory,
        )
        scores = compute_graph_scores(graph)
    except Exception as e:  # one bad prompt must not stop the batch
        row.update(status="error", error=error_text(e), seconds=time.perf_counter() - start)
        return None, row
    first = graph.logit_targets[0] if graph.logit_targets else None
    row.update(
        status="ok",
        error=None,
        n_tokens=int(graph.input_tokens.numel()),
        top_token=None if first is None else first.token_str,
        top_token_id=None if first is None else int(first.vocab_idx),
        probability=float(graph.logit_probabilities[0]) if first is not None else None,
        targets=[t.token_str for t in graph.logit_targets],
        n_active=int(graph.n_active),
        n_features=int(graph.n_selected),
        n_nodes=int(graph.n_nodes),
        replacement_score=float(scores.replacement),
        completeness_score=float(scores.completeness),
        seconds=time.perf_counter() - start,
    )
    graph.settings["batch"] = row
    return graph, row


def error_text(e: BaseException) -> str:
    """``Type: message (at function)`` on one line, for the summary's error column."""
    text = " ".join(str(e).split()) or type(e).__name__
    where = traceback.extract_tb(e.__traceback__)[-1:] if e.__traceback__ else []
    suffix = f" (at {where[0].name})" if where else ""
    return f"{type(e).__name__}: {text}{suffix}"
