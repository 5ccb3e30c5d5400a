"""A graph file's links as sorted columns, kept in a sidecar file beside it.

A page-sized slice of a big graph file (``server.lod``) needs its links sorted by ``|weight|``;
parsing a million links out of JSON costs seconds, so the sorted columns are written once to
``{stem}.links.npz`` beside ``{stem}.json`` (by ``create_graph_files`` for files with more than
``SIDECAR_MIN_LINKS`` links, and by the lab server the first time it reads any such file) and
read back in milliseconds afterwards.

The sidecar holds:

* ``version[2]`` (int64): the graph file's size and ``st_mtime_ns`` when it was indexed; a
  sidecar whose version differs from the file's is ignored (and rewritten by the server);
* ``head`` (uint8): every top-level key of the file but ``links``, as JSON;
* ``source[L]``, ``target[L]`` (int32): indices into ``head["nodes"]``; ``weight[L]``
  (float64): the links, strongest ``|weight|`` first (ties in file order).

Links whose ends name no node, or that loop on one node, are left out (the page skips them
too). Written atomically; ``np.load`` reads it without pickles.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from circuitlab.atomic import write_atomic

SIDECAR_SUFFIX = ".links.npz"
SIDECAR_MIN_LINKS = 100_000


@dataclass(frozen=True)
class LinkColumns:
    """A graph file's links, strongest first (module docs); ``head`` as parsed JSON bytes."""

    head: bytes
    source: np.ndarray  # [L] int32
    target: np.ndarray  # [L] int32
    weight: np.ndarray  # [L] float64


def sidecar_path(graph_file: Path) -> Path:
    """``{stem}.links.npz`` beside ``graph_file``."""
    return graph_file.with_name(graph_file.stem + SIDECAR_SUFFIX)


def file_version(graph_file: Path) -> tuple[int, int]:
    """``(size, st_mtime_ns)`` of ``graph_file``."""
    st = graph_file.stat()
    return st.st_size, st.st_mtime_ns


def node_positions(nodes: list[Any]) -> dict[str, int]:
    """Node id -> its first index (a repeated id, as in old circuit-tracer files: the first)."""
    index: dict[str, int] = {}
    for i, n in enumerate(nodes):
        index.setdefault(str(n.get("node_id")), i)
    return index


def sorted_columns(links: list[Any], index: dict[str, int]) -> tuple[np.ndarray, ...]:
    """``(source, target, weight)`` of ``links`` (dicts with ``source``/``target`` node ids and
    a ``weight``), node ids resolved through ``index``, strongest ``|weight|`` first; links to
    unknown nodes and self-loops left out."""
    source, target, weight = _columns(links, index)
    ok = (source >= 0) & (target >= 0) & (source != target)
    source, target, weight = source[ok], target[ok], weight[ok]
    order = np.argsort(-np.abs(weight), kind="stable")
    return source[order].astype(np.int32), target[order].astype(np.int32), weight[order]


def _columns(links: list[Any], index: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Node indices (-1 where the id names no node) and weights. The fast path reads each field
    with one comprehension; links missing a key, or with ids that are not strings, take the
    slow path, as the page reads them."""
    n = len(links)
    get = index.get
    try:
        source = np.array([get(x["source"], -1) for x in links], dtype=np.int64).reshape(n)
        target = np.array([get(x["target"], -1) for x in links], dtype=np.int64).reshape(n)
        weight = np.array([x["weight"] for x in links], dtype=np.float64).reshape(n)
        if (source >= 0).all() and (target >= 0).all():
            return source, target, weight
    except (KeyError, TypeError, ValueError):
        pass
    source = np.fromiter((get(str(x.get("source")), -1) for x in links), np.int64, n)
    target = np.fromiter((get(str(x.get("target")), -1) for x in links), np.int64, n)
    weight = np.fromiter((x.get("weight") or 0.0 for x in links), np.float64, n)
    return source, target, weight


def write_link_sidecar(graph_file: Path, head: bytes, columns: tuple[np.ndarray, ...]) -> Path:
    """Write the sidecar of ``graph_file`` (as it is on disk now) from its ``head`` JSON and
    ``sorted_columns``; returns its path."""
    source, target, weight = columns
    buf = io.BytesIO()
    np.savez(
        buf,
        version=np.array(file_version(graph_file), dtype=np.int64),
        head=np.frombuffer(head, dtype=np.uint8),
        source=source.astype(np.int32),
        target=target.astype(np.int32),
        weight=weight.astype(np.float64),
    )
    path = sidecar_path(graph_file)
    write_atomic(path, buf.getvalue())
    return path


def write_graph_sidecar(graph_file: Path, data: dict[str, Any]) -> Path | None:
    """The sidecar of a graph file just written from ``data`` (its parsed content), if it has
    more than ``SIDECAR_MIN_LINKS`` links; a stale sidecar of a smaller file is removed."""
    links = data.get("links") or []
    if len(links) <= SIDECAR_MIN_LINKS:
        sidecar_path(graph_file).unlink(missing_ok=True)
        return None
    head = {k: v for k, v in data.items() if k != "links"}
    columns = sorted_columns(links, node_positions(head.get("nodes") or []))
    return write_link_sidecar(graph_file, _dumps(head), columns)


def read_link_sidecar(graph_file: Path) -> LinkColumns | None:
    """The sidecar of ``graph_file`` if there is one for the file's current version, else
    None (also for a sidecar that cannot be read: it is rebuilt from the file)."""
    path = sidecar_path(graph_file)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if tuple(z["version"].tolist()) != file_version(graph_file):
                return None
            columns = LinkColumns(
                z["head"].tobytes(), z["source"], z["target"], z["weight"].astype(np.float64)
            )
    except (OSError, ValueError, KeyError):
        return None
    n = len(columns.weight)
    if not len(columns.source) == len(columns.target) == n:
        return None
    return columns


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
