"""File handling for the lab server: safe paths, gzip, byte ranges, atomic annotation saves."""

from __future__ import annotations

import gzip
import json
import math
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from circuitlab.atomic import write_json_atomic
from circuitlab.graph.export import check_slug


class HTTPProblem(Exception):
    """An error the client caused: ``status`` and a one-line ``detail``; ``extra`` fields go
    into the JSON answer beside ``detail``, ``headers`` into its headers."""

    def __init__(
        self,
        status: int,
        detail: str,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, **self.extra}


def resolve_under(root: Path, rel: str) -> Path:
    """``root / rel`` if it stays inside ``root`` and names an existing file, else 404.

    Rejects absolute paths, ``..`` and hidden parts (temporary files start with a dot) before
    touching the disk, and checks the resolved path (symlinks followed) is still under ``root``.
    """
    parts = rel.replace("\\", "/").split("/")
    if "\x00" in rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise HTTPProblem(404, "not found")
    if any(p.startswith(".") for p in parts):
        raise HTTPProblem(404, "not found")
    base = root.resolve()
    path = (base / rel).resolve()
    if not path.is_relative_to(base) or not path.is_file():
        raise HTTPProblem(404, "not found")
    return path


class GzipCache:
    """Compressed copies of recently served files, keyed by path, size and mtime."""

    def __init__(self, max_entries: int = 16):
        self.max_entries = max_entries
        self._items: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path, raw: bytes) -> bytes:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        packed = gzip.compress(raw, compresslevel=5)
        with self._lock:
            self._items[key] = packed
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
        return packed


def file_response(
    path: Path, request: Request, media_type: str, cache: GzipCache, min_gzip: int = 1024
) -> Response:
    """The whole file, gzip-compressed when the client accepts it and it is worth it."""
    raw = path.read_bytes()
    headers = {"Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if len(raw) >= min_gzip and "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(cache.get(path, raw), media_type=media_type, headers=headers)
    return Response(raw, media_type=media_type, headers=headers)


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``(start, end_exclusive)`` of a single ``bytes=`` range; None to send the whole file.

    Raises ``HTTPProblem(416)`` when the range cannot be satisfied.
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # other units and multi-ranges: the whole file is a valid answer
    first, dash, last = spec.strip().partition("-")
    try:
        if not dash:
            return None
        if first == "":
            n = int(last)
            if n <= 0:
                raise HTTPProblem(416, "empty suffix range")
            return max(0, size - n), size
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    if start < 0 or start >= size or end <= start:
        raise HTTPProblem(416, f"range {header!r} is outside the file ({size} bytes)")
    return start, min(end, size)


def range_response(path: Path, request: Request, media_type: str) -> Response:
    """A file with HTTP range support (206 for one satisfiable range, 416 for a bad one)."""
    size = path.stat().st_size
    header = request.headers.get("range")
    base = {"Accept-Ranges": "bytes", "Cache-Control": "no-cache"}
    try:
        rng = parse_range(header, size) if header else None
    except HTTPProblem:
        return Response(status_code=416, headers={**base, "Content-Range": f"bytes */{size}"})
    with open(path, "rb") as f:
        if rng is None:
            return Response(f.read(), media_type=media_type, headers=base)
        start, end = rng
        f.seek(start)
        body = f.read(end - start)
    headers = {**base, "Content-Range": f"bytes {start}-{end - 1}/{size}"}
    return Response(body, status_code=206, media_type=media_type, headers=headers)


async def read_json_body(request: Request, limit: int) -> Any:
    """The request's JSON body; 413 past ``limit`` bytes, 415 unless sent as JSON, 400 if bad.

    Requiring ``application/json`` also means browsers must ask (CORS preflight) before another
    site's page can post here, and this server never says yes.
    """
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise HTTPProblem(415, "send the body as application/json")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPProblem(413, f"body larger than {limit} bytes")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise HTTPProblem(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except RecursionError:
        raise HTTPProblem(422, f"body: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as e:
        raise HTTPProblem(400, f"body is not valid JSON: {e}") from None
    check_json_values(body)
    return body


MAX_JSON_DEPTH = 32


def check_json_values(value: Any, max_depth: int = MAX_JSON_DEPTH) -> None:
    """422 naming the place of a non-finite number (``NaN``, ``Infinity``, ``1e999``: JSON has
    none, and a graph file holding one no longer opens) or of nesting past ``max_depth``."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        v, loc = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            raise HTTPProblem(422, f"{json_path(loc) or 'body'}: {v} is not a finite number")
        if isinstance(v, (dict, list)):
            if len(loc) >= max_depth:
                raise HTTPProblem(422, f"{json_path(loc)}: nested deeper than {max_depth} levels")
            items = v.items() if isinstance(v, dict) else enumerate(v)
            stack.extend((item, (*loc, key)) for key, item in items)


def json_path(loc: tuple[Any, ...]) -> str:
    """``("qParams", "supernodes", 0)`` -> ``qParams.supernodes[0]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class AnnotationStore:
    """Saves ``qParams`` into graph files, one writer per file at a time, atomically.

    Each save numbers the view: ``qParams.version`` (0 for a file never saved through here).
    A save that names the version it read is refused with 409 when another save came between
    (``SaveConflict`` carries the file's current view); a save that names none replaces the
    view whatever its version (circuit-tracer's page posts without one).
    """

    def __init__(self, graph_dir: Path):
        self.graph_dir = graph_dir
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, slug: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(slug, threading.Lock())

    def save(self, slug: str, qparams: dict[str, Any], version: int | None = None) -> int:
        """Replace the view of ``{slug}.json``; returns its new version."""
        try:
            check_slug(slug)
        except ValueError as e:
            raise HTTPProblem(400, str(e)) from None
        path = resolve_under(self.graph_dir, f"{slug}.json")
        with self._lock(slug):
            try:
                data = json.loads(path.read_bytes())
            except ValueError:
                raise HTTPProblem(409, f"{slug}.json is not valid JSON; not overwritten") from None
            if not isinstance(data, dict) or "nodes" not in data:
                raise HTTPProblem(409, f"{slug}.json is not a graph file; not overwritten")
            current = data.get("qParams") if isinstance(data.get("qParams"), dict) else {}
            now = qparams_version(current)
            if version is not None and version != now:
                raise HTTPProblem(
                    409,
                    f"graph {slug!r} was saved by someone else since version {version} "
                    f"(now version {now}); merge with its view or reload, then save again",
                    extra={"version": now, "qParams": current},
                    headers={"ETag": f'"{now}"'},
                )
            data["qParams"] = {**qparams, "version": now + 1}
            try:
                write_json_atomic(path, data)
            except ValueError:  # NaN already in the file (written by another tool)
                raise HTTPProblem(
                    409, f"{slug}.json holds NaN or Infinity; not overwritten"
                ) from None
            return now + 1


def if_match_version(header: str | None) -> int | None:
    """The version an ``If-Match`` header names (``"3"``, ``W/"3"`` or ``3``); None for no
    header or ``*``; 422 for anything else."""
    if header is None or header.strip() == "*":
        return None
    tag = header.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise HTTPProblem(
            422, f'If-Match: send the version the view was read at ("3"), not {header!r}'
        )
    return int(tag)


def qparams_version(qparams: Any) -> int:
    """The version a saved view carries (0 when it has none)."""
    v = qparams.get("version") if isinstance(qparams, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


FAITHFULNESS_SUFFIX = ".faithfulness.json"
DIFF_SUFFIX = ".diff.json"


def list_graphs(graph_dir: Path) -> dict[str, Any]:
    """``graph-metadata.json``, or one built from the graph files when it is missing.

    Validation files (``{slug}.faithfulness.json``, ``*.diff.json`` and anything else with a
    top-level ``kind`` and no ``nodes``) are not graphs and are left out.
    """
    meta = graph_dir / "graph-metadata.json"
    if meta.is_file():
        try:
            data = json.loads(meta.read_bytes())
            if isinstance(data, dict) and isinstance(data.get("graphs"), list):
                return data
        except ValueError:
            pass
    graphs = []
    for path in sorted(graph_dir.glob("*.json")):
        name = path.name
        if name == "graph-metadata.json" or name.startswith("."):
            continue
        if name.endswith((FAITHFULNESS_SUFFIX, DIFF_SUFFIX)):
            continue
        try:
            data = json.loads(path.read_bytes())
        except ValueError:
            continue
        if not isinstance(data, dict) or ("kind" in data and "nodes" not in data):
            continue
        m = data.get("metadata", {})
        if isinstance(m, dict):
            graphs.append({**m, "slug": m.get("slug") or path.stem})
    return {"graphs": graphs}


def list_validation(graph_dir: Path) -> dict[str, Any]:
    """The validation files beside the graphs (docs/validation.md), by name only.

    ``faithfulness``: slugs that have ``{slug}.faithfulness.json``; ``diffs``: ``{"file",
    "a", "b"}`` for each ``{a}__vs__{b}.diff.json``.
    """
    faithfulness, diffs = [], []
    for path in sorted(graph_dir.glob("*.json")):
        name = path.name
        if name.startswith(".") or not path.is_file():
            continue
        if name.endswith(FAITHFULNESS_SUFFIX):
            faithfulness.append(name[: -len(FAITHFULNESS_SUFFIX)])
        elif name.endswith(DIFF_SUFFIX):
            a, sep, b = name[: -len(DIFF_SUFFIX)].partition("__vs__")
            diffs.append({"file": name, "a": a if sep else None, "b": b if sep else None})
    return {"faithfulness": faithfulness, "diffs": diffs}
