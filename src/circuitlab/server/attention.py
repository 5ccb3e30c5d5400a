"""Attention in the lab: head loadings and QK attributions of a graph, on demand, cached.

Routes (registered by ``register_attention_routes``; they pass the app's guard like every
other route, and need a ``Tracer``, whose model they borrow as ``/api/steer`` does):

* ``POST /api/attention/loadings`` ``{"slug", "edges": [[source, target], ...], "model"?}``:
  the edges' split per layer and head (``attention.records.loadings_record``); several edges
  are summed (a subgraph edge between supernodes);
* ``POST /api/attention/qk`` ``{"slug", "layer", "head", "query_pos", "key_pos", "top_k"?}``:
  one QK attribution (``qk_record``); positions may be negative (-1: the last token);
* ``POST /api/attention/flows`` ``{"slug", "query_pos"?, "n"?}``: the strongest attention
  flows from a position (``flows_record``).

Each answer is ``{"result": ..., "cached": bool}``. The graph is its ``{slug}.safetensors``
(the tracer writes one beside each graph file); its ``FrozenPrompt`` and results are cached
per graph (the two graphs used last, 256 results each) and dropped when the file changes.
Bad requests are 400 (a head or position out of range, an unknown node: the library's own
message), 404 (no such graph), 422 (a field of the wrong type, or a graph without its
``.safetensors``).
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import Field, field_validator
from starlette.requests import Request

from circuitlab.server.files import HTTPProblem, read_json_body
from circuitlab.server.jobs import Tracer
from circuitlab.server.requests import GraphModelRequest, parse_body

MAX_EDGES = 256
MAX_TOP_K = 200
MAX_FLOWS = 64


class LoadingsRequest(GraphModelRequest):
    """``edges``: ``[source, target]`` node id pairs, summed."""

    edges: list[list[str]] = Field(min_length=1, max_length=MAX_EDGES)

    @field_validator("edges")
    @classmethod
    def _pairs(cls, v: list[list[str]]) -> list[list[str]]:
        if any(len(e) != 2 for e in v):
            raise ValueError("each edge is a [source, target] pair of node ids")
        return v


class QKRequest(GraphModelRequest):
    layer: int = Field(ge=0)
    head: int = Field(ge=0)
    query_pos: int
    key_pos: int
    top_k: int = Field(20, ge=1, le=MAX_TOP_K)


class FlowsRequest(GraphModelRequest):
    query_pos: int = -1
    n: int = Field(8, ge=1, le=MAX_FLOWS)


class _Entry:
    """One graph's frozen prompt and results; ``stamp``: the file's (mtime, size) and the
    model's name (a change of either builds it again)."""

    def __init__(self, stamp: tuple[int, int, str], fp: Any):
        self.stamp, self.fp = stamp, fp
        self.results: OrderedDict[tuple, Any] = OrderedDict()


class AttentionCache:
    """Results per graph: the ``max_graphs`` graphs used last, ``max_results`` results each.

    ``hits`` and ``misses`` count answers served from the cache and computed (for tests and
    for ``/api/info``)."""

    def __init__(self, graph_dir: Path, max_graphs: int = 2, max_results: int = 256):
        self.graph_dir, self.max_graphs, self.max_results = graph_dir, max_graphs, max_results
        self._graphs: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def answer(
        self,
        tracer: Tracer,
        model: str | None,
        slug: str,
        key: tuple,
        compute: Callable[[Any, Any], Any],
    ) -> dict[str, Any]:
        """``compute(replacement_model, frozen_prompt)`` for graph ``slug``, or its cached
        result for ``key``."""
        saved = self.graph_dir / f"{slug}.safetensors"
        if not saved.is_file():
            if not (self.graph_dir / f"{slug}.json").is_file():
                raise HTTPProblem(404, f"no graph {slug!r}")
            raise HTTPProblem(
                422,
                f"graph {slug!r} has no {slug}.safetensors beside its JSON, and attention "
                "results need the full graph: trace it in the lab, or save it there with "
                "Graph.save (results precomputed into the JSON need neither).",
            )
        st = saved.stat()
        stamp = (st.st_mtime_ns, st.st_size, model or next(iter(tracer.models), ""))
        with self._lock:
            entry = self._graphs.get(slug)
            if entry is not None and entry.stamp == stamp and key in entry.results:
                self._graphs.move_to_end(slug)
                entry.results.move_to_end(key)
                self.hits += 1
                return {"result": entry.results[key], "cached": True}

        def run(rm: Any) -> Any:
            from circuitlab.attention import FrozenPrompt
            from circuitlab.graph.graph import Graph

            nonlocal entry
            if entry is None or entry.stamp != stamp:
                entry = _Entry(stamp, FrozenPrompt.build(rm, Graph.load(saved)))
            return compute(rm, entry.fp)

        try:
            result = tracer.run_exclusive(model, run)
        except (ValueError, TypeError, IndexError) as e:
            raise HTTPProblem(400, str(e)) from None
        assert entry is not None
        with self._lock:
            self.misses += 1
            entry.results[key] = result
            while len(entry.results) > self.max_results:
                entry.results.popitem(last=False)
            self._graphs[slug] = entry
            self._graphs.move_to_end(slug)
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        return {"result": result, "cached": False}


def register_attention_routes(app: FastAPI, graph_dir: Path, tracer: Tracer | None) -> None:
    """Add the ``/api/attention/*`` routes (module docstring) to the lab's ``app``."""
    from circuitlab.attention.records import flows_record, loadings_record, qk_record

    cache = AttentionCache(graph_dir)
    app.state.attention = cache

    def need_tracer() -> Tracer:
        if tracer is None:
            raise HTTPProblem(
                404,
                "this server has no model for attention results; start it with --model and "
                "--transcoders (graph files with precomputed results need none)",
            )
        return tracer

    async def body(request: Request, kind: type[GraphModelRequest]) -> Any:
        t = need_tracer()
        return t, parse_body(kind, await read_json_body(request, 64 * 1024))

    @app.post("/api/attention/loadings")
    async def loadings(request: Request) -> dict[str, Any]:
        t, req = await body(request, LoadingsRequest)
        edges = [(s, d) for s, d in req.edges]
        key = ("loadings", tuple(edges))
        return await asyncio.to_thread(
            cache.answer,
            t,
            req.model,
            req.slug,
            key,
            lambda rm, fp: loadings_record(rm, fp, edges),
        )

    @app.post("/api/attention/qk")
    async def qk(request: Request) -> dict[str, Any]:
        t, req = await body(request, QKRequest)
        key = ("qk", req.layer, req.head, req.query_pos, req.key_pos, req.top_k)
        return await asyncio.to_thread(
            cache.answer,
            t,
            req.model,
            req.slug,
            key,
            lambda rm, fp: qk_record(
                rm, fp, req.layer, req.head, req.query_pos, req.key_pos, req.top_k
            ),
        )

    @app.post("/api/attention/flows")
    async def flows(request: Request) -> dict[str, Any]:
        t, req = await body(request, FlowsRequest)
        key = ("flows", req.query_pos, req.n)
        return await asyncio.to_thread(
            cache.answer,
            t,
            req.model,
            req.slug,
            key,
            lambda rm, fp: flows_record(rm, fp, req.query_pos, req.n),
        )
