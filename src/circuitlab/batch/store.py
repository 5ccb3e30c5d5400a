"""A batch's output folder, written so that a crash loses nothing and duplicates nothing.

Layout of ``DIR``::

    graphs/{id}.safetensors   one graph per traced prompt (``Graph.save``: atomic rename);
                              its ``settings["batch"]`` holds the prompt's summary row
    errors/{id}.json          the row of a prompt whose tracing failed (atomic rename)
    summary.parquet           one row per prompt of the input, in input order (rebuilt)

A prompt is *done* when its graph file opens as a complete circuitlab graph whose stored key
matches the prompt, target and settings of this run and the *content* of its transcoders and
model (``fingerprint``: new weights at the same path are re-traced); anything else (no file, a damaged file,
a stale key, an error record) is traced again. Every file is written under a temporary name
and renamed, so a killed run leaves only complete files (and perhaps a ``.tmp`` that the next
run removes). The summary is derived from those per-prompt files, never appended to, so it
cannot hold a prompt twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..atomic import atomic_path, write_atomic
from .prompts import PromptRecord

#: Columns of ``summary.parquet`` (pyarrow types in ``_schema``).
SUMMARY_FIELDS = (
    "id",
    "prompt",
    "status",
    "error",
    "n_tokens",
    "top_token",
    "top_token_id",
    "probability",
    "targets",
    "n_active",
    "n_features",
    "n_nodes",
    "replacement_score",
    "completeness_score",
    "seconds",
    "graph",
    "worker",
)


class BatchDir:
    """The output folder of a batch (see the module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.graphs = self.root / "graphs"
        self.errors = self.root / "errors"

    def prepare(self) -> None:
        """Creates the folders and removes temporary files left by a killed run."""
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"--out {self.root} is a file; pass a folder")
        for d in (self.graphs, self.errors):
            d.mkdir(parents=True, exist_ok=True)
            for tmp in d.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)

    def graph_path(self, rid: str) -> Path:
        return self.graphs / f"{rid}.safetensors"

    def error_path(self, rid: str) -> Path:
        return self.errors / f"{rid}.json"

    def done_row(self, rid: str, key: str) -> dict[str, Any] | None:
        """The stored row of a complete graph traced with ``key``, else None."""
        path = self.graph_path(rid)
        if not path.is_file():
            return None
        row = read_graph_row(path)
        if row is None or row.get("key") != key:
            return None
        return row

    def write_graph(self, rid: str, graph: Any) -> None:
        graph.save(self.graph_path(rid))
        self.error_path(rid).unlink(missing_ok=True)

    def write_error(self, rid: str, row: dict[str, Any]) -> None:
        write_atomic(self.error_path(rid), json.dumps(row, ensure_ascii=False).encode())

    def rows(self, records: list[PromptRecord], keys: list[str]) -> list[dict[str, Any]]:
        """One row per record, in order: done, failed (``error``) or not yet run (``pending``)."""
        out = []
        for rec, key in zip(records, keys, strict=True):
            row = self.done_row(rec.id, key)
            if row is not None:
                row = {**row, "graph": str(self.graph_path(rec.id).relative_to(self.root))}
            else:
                row = _read_error(self.error_path(rec.id), key) or {"status": "pending"}
                row = {**row, "id": rec.id, "prompt": rec.prompt}
            out.append({name: row.get(name) for name in SUMMARY_FIELDS})
        return out

    def write_summary(self, rows: list[dict[str, Any]]) -> Path:
        """Writes ``summary.parquet`` atomically (needs pyarrow: ``pip install circuitlab[batch]``)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(rows, schema=_schema())
        path = self.root / "summary.parquet"
        with atomic_path(path) as tmp:
            pq.write_table(table, str(tmp))
        return path


def read_graph_row(path: Path) -> dict[str, Any] | None:
    """The batch row stored in a graph file's header, or None if the file is not complete."""
    from safetensors import SafetensorError, safe_open

    from ..graph.storage import FORMAT_NAME, TENSOR_FIELDS

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT_NAME or not set(TENSOR_FIELDS) <= set(f.keys()):
                return None
            header = json.loads(meta["graph"])
    except (SafetensorError, OSError, ValueError, KeyError):
        return None
    row = (header.get("settings") or {}).get("batch")
    return row if isinstance(row, dict) else None


def _read_error(path: Path, key: str) -> dict[str, Any] | None:
    try:
        row = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return row if isinstance(row, dict) and row.get("key") == key else None


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.string()),
            ("prompt", pa.string()),
            ("status", pa.string()),
            ("error", pa.string()),
            ("n_tokens", pa.int64()),
            ("top_token", pa.string()),
            ("top_token_id", pa.int64()),
            ("probability", pa.float64()),
            ("targets", pa.list_(pa.string())),
            ("n_active", pa.int64()),
            ("n_features", pa.int64()),
            ("n_nodes", pa.int64()),
            ("replacement_score", pa.float64()),
            ("completeness_score", pa.float64()),
            ("seconds", pa.float64()),
            ("graph", pa.string()),
            ("worker", pa.string()),
        ]
    )
