"""Graph files by level of detail: the page asks for the strongest links first, and for more
where it looks, instead of the whole file at once (docs/web-lab.md, *Big graphs*).

* ``GET /api/lod/{slug}?links=N``: the graph file (``metadata``, ``qParams``, ``nodes`` and any
  other top-level key) with only its ``N`` strongest links (by ``|weight|``, strongest first;
  default ``DEFAULT_LINKS``, at most ``MAX_LINKS``) and ``lod``: ``{links_total, links_sent,
  min_abs_weight}`` (the weakest sent). A file with at most ``N`` links comes whole.
* ``POST /api/lod/{slug}/edges`` ``{"nodes": [node ids], "min_abs_weight": w, "limit": n}``:
  the links that touch any of those nodes (all links when ``nodes`` is absent) with
  ``|weight| >= w``, strongest first, at most ``limit``, as columns of node indices into the
  file's ``nodes``: ``{"source": [...], "target": [...], "weight": [...], "truncated": bool}``.

Each graph file is read once per version (size and mtime) into a ``LinkIndex``: ``int32``
source and target indices and ``float64`` weights sorted by ``|weight|``, so a request costs a
slice or one boolean mask, not a parse. A file with more than ``SIDECAR_MIN_LINKS`` links keeps
those columns in a sidecar beside it (``graph.link_sidecar``: written by ``create_graph_files``,
or here on the first read), so after a restart of the server it opens without parsing its
links. The routes sit behind the app's guard like every other
route, and name graphs by slug only (``check_slug``, ``resolve_under``).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from circuitlab.graph.export import check_slug
from circuitlab.graph.link_sidecar import (
    SIDECAR_MIN_LINKS,
    node_positions,
    read_link_sidecar,
    sorted_columns,
    write_link_sidecar,
)
from circuitlab.server.files import HTTPProblem, read_json_body, resolve_under

DEFAULT_LINKS = 100_000
MAX_LINKS = 2_000_000
MAX_NODES_ASKED = 50_000


@dataclass(frozen=True)
class LinkIndex:
    """One graph file, its links as columns sorted by ``|weight|`` (strongest first).

    * ``head``: every top-level key of the file but ``links`` (``nodes`` in file order);
    * ``ids[V]``: each node's id; ``position``: id -> its first index;
    * ``source[L]``, ``target[L]`` (int32): indices into ``head["nodes"]``;
    * ``weight[L]`` (float64), ``abs_weight[L]``: the links' weights, ``|weight|``.
    """

    head: dict[str, Any]
    ids: list[str]
    position: dict[str, int]  # node id -> its (first) index
    source: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    abs_weight: np.ndarray
    answers: dict[int, bytes] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def read(cls, path: Path) -> LinkIndex:
        """The index of the graph file at ``path``: from its sidecar when that is current
        (``graph.link_sidecar``), else parsed from the file, and the sidecar written for the
        next time when the file has more than ``SIDECAR_MIN_LINKS`` links."""
        stored = read_link_sidecar(path)
        if stored is not None:
            head = json.loads(stored.head)
            index = cls._build(path, head, (stored.source, stored.target, stored.weight))
            if index is not None:
                return index
        data = json.loads(path.read_bytes())
        if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
            raise HTTPProblem(422, f"{path.name} is not a graph file (no nodes list)")
        links = data.pop("links", None) or []
        if not all(isinstance(n, dict) for n in data["nodes"]):
            raise HTTPProblem(422, f"{path.name}: every node must be an object with a node_id")
        columns = sorted_columns(links, node_positions(data["nodes"]))
        if len(links) > SIDECAR_MIN_LINKS:
            try:
                write_link_sidecar(path, json.dumps(data, separators=(",", ":")).encode(), columns)
            except OSError:
                pass  # a read-only folder: the file is parsed again next time
        index = cls._build(path, data, columns)
        assert index is not None  # columns from the file itself index its nodes
        return index

    @classmethod
    def _build(cls, path: Path, head: Any, columns: tuple[np.ndarray, ...]) -> LinkIndex | None:
        """The index from a parsed ``head`` and sorted columns; None if they do not fit
        (a sidecar written for other nodes)."""
        nodes = head.get("nodes") if isinstance(head, dict) else None
        if not isinstance(nodes, list) or not all(isinstance(n, dict) for n in nodes):
            return None
        ids = [str(n.get("node_id")) for n in nodes]
        source, target, weight = columns
        if len(source) and max(int(source.max()), int(target.max())) >= len(ids):
            return None
        return cls(head, ids, node_positions(nodes), source, target, weight, np.abs(weight))

    def __len__(self) -> int:
        return int(self.weight.shape[0])

    def strongest(self, n: int) -> dict[str, Any]:
        """The file with its ``n`` strongest links (module docs)."""
        n = min(n, len(self))
        ids = self.ids
        links = [
            {"source": ids[s], "target": ids[t], "weight": w}
            for s, t, w in zip(
                self.source[:n].tolist(),
                self.target[:n].tolist(),
                self.weight[:n].tolist(),
                strict=True,
            )
        ]
        weakest = float(self.abs_weight[n - 1]) if n else 0.0
        lod = {"links_total": len(self), "links_sent": n, "min_abs_weight": weakest}
        return {**self.head, "links": links, "lod": lod}

    def strongest_json(self, n: int) -> bytes:
        """``strongest(n)`` as JSON, kept for the next ask (a reload, another tab)."""
        if n not in self.answers:
            if len(self.answers) >= 4:
                self.answers.pop(next(iter(self.answers)))
            self.answers[n] = json.dumps(self.strongest(n), separators=(",", ":")).encode()
        return self.answers[n]

    def touching(self, nodes: list[int] | None, min_abs: float, limit: int) -> dict[str, Any]:
        """Links touching ``nodes`` (all when None) with ``|weight| >= min_abs``, strongest
        first, at most ``limit``, as index columns."""
        stop = int(np.searchsorted(-self.abs_weight, -min_abs, side="right"))
        src, tgt, w = self.source[:stop], self.target[:stop], self.weight[:stop]
        if nodes is not None:
            wanted = np.zeros(len(self.ids), dtype=bool)
            wanted[np.asarray(nodes, dtype=np.int64)] = True
            hit = np.flatnonzero(wanted[src] | wanted[tgt])
            src, tgt, w = src[hit], tgt[hit], w[hit]
        truncated = len(w) > limit
        return {
            "source": src[:limit].tolist(),
            "target": tgt[:limit].tolist(),
            "weight": w[:limit].tolist(),
            "truncated": truncated,
        }


class LinkIndexCache:
    """``LinkIndex`` of recently asked graph files, keyed by path, size and mtime."""

    def __init__(self, max_entries: int = 2):
        self.max_entries = max_entries
        self._items: OrderedDict[tuple[str, int, int], LinkIndex] = OrderedDict()
        self._lock = threading.Lock()  # one reader at a time: a big file is read once

    def get(self, path: Path) -> LinkIndex:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            for old in [k for k in self._items if k[0] == str(path)]:
                del self._items[old]  # an older version of the same file
            index = LinkIndex.read(path)
            self._items[key] = index
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
            return index


def register_lod_routes(app: FastAPI, graph_dir: Path) -> None:
    """Add the level-of-detail routes (module docs) to the lab ``app``."""
    cache = LinkIndexCache()

    def index_of(slug: str) -> LinkIndex:
        try:
            check_slug(slug)
        except ValueError as e:
            raise HTTPProblem(400, str(e)) from None
        path = resolve_under(graph_dir, f"{slug}.json")
        try:
            return cache.get(path)
        except (ValueError, TypeError, AttributeError) as e:
            raise HTTPProblem(422, f"{slug}.json is not a readable graph file: {e}") from None

    @app.get("/api/lod/{slug}")
    def lod_graph(slug: str, links: int = DEFAULT_LINKS) -> Response:
        if not 0 <= links <= MAX_LINKS:
            raise HTTPProblem(400, f"links must be between 0 and {MAX_LINKS}, got {links}")
        body = index_of(slug).strongest_json(links)
        return Response(body, media_type="application/json", headers={"Cache-Control": "no-cache"})

    @app.post("/api/lod/{slug}/edges")
    async def lod_edges(slug: str, request: Request) -> Response:
        body = await read_json_body(request, 4 * 1024 * 1024)
        index = index_of(slug)
        nodes, min_abs, limit = _edges_request(body, index)
        answer = index.touching(nodes, min_abs, limit)
        return Response(json.dumps(answer, separators=(",", ":")), media_type="application/json")


def _edges_request(body: Any, index: LinkIndex) -> tuple[list[int] | None, float, int]:
    """``(node indices or None, min_abs_weight, limit)`` from a request body; 400 if bad."""
    if not isinstance(body, dict):
        raise HTTPProblem(400, 'send {"nodes": [ids], "min_abs_weight": w, "limit": n}')
    limit = body.get("limit", DEFAULT_LINKS)
    min_abs = body.get("min_abs_weight", 0.0)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= MAX_LINKS:
        raise HTTPProblem(400, f"limit must be an integer between 0 and {MAX_LINKS}")
    if not isinstance(min_abs, (int, float)) or isinstance(min_abs, bool) or min_abs < 0:
        raise HTTPProblem(400, "min_abs_weight must be a number >= 0")
    raw = body.get("nodes")
    if raw is None:
        return None, float(min_abs), limit
    if not isinstance(raw, list) or len(raw) > MAX_NODES_ASKED:
        raise HTTPProblem(400, f"nodes must be a list of at most {MAX_NODES_ASKED} node ids")
    where = index.position
    unknown = [str(x) for x in raw if str(x) not in where]
    if unknown:
        raise HTTPProblem(404, f"no node {unknown[0]!r} in this graph ({len(unknown)} unknown)")
    return [where[str(x)] for x in raw], float(min_abs), limit
