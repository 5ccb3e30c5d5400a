"""The compact feature store the web lab reads, one HTTP range request per feature.

Layout of ``DIR/features/``::

    index.json.gz     gzip JSON list, one entry per layer: {"filename": "layer_{l}.bin",
                      "offsets": [o_0, o_1, ..., o_n]}   (n = features in the layer)
    layer_{l}.bin     feature f is bytes [o_f, o_{f+1}): a 4-byte little-endian length L,
                      then L bytes of zlib-compressed UTF-8 JSON (the feature's record)
    build.json        how the store was built (model, transcoders, corpus, tokens, timings) and
                      ``transcoder_set``: {"name", "model", "fingerprint", ...} of the set the
                      dashboards describe (``transcoders.identity``; stores built before it
                      was recorded lack it)

This is circuit-tracer's binary feature layout, so its page (and circuitlab's server) fetches
one feature with ``Range: bytes=o_f-(o_{f+1}-1)``. Records are written in feature order, so a
layer file streams to disk without holding every record in memory.
"""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from pathlib import Path
from typing import Any

INDEX_NAME = "index.json.gz"
BUILD_NAME = "build.json"
STORE_DIR = "features"


def encode_record(record: dict[str, Any]) -> bytes:
    """One feature as stored: 4-byte little-endian length + zlib(JSON)."""
    body = zlib.compress(json.dumps(record, separators=(",", ":")).encode("utf-8"), 6)
    return struct.pack("<I", len(body)) + body


def decode_record(data: bytes) -> dict[str, Any]:
    """Inverse of ``encode_record``; ``data`` may carry trailing bytes (an inclusive range end)."""
    if len(data) < 4:
        raise ValueError(f"A feature record needs at least 4 bytes; got {len(data)}.")
    (n,) = struct.unpack("<I", data[:4])
    if len(data) < 4 + n:
        raise ValueError(f"Truncated feature record: length {n} but {len(data) - 4} bytes follow.")
    return json.loads(zlib.decompress(data[4 : 4 + n]).decode("utf-8"))


class LayerWriter:
    """Appends the records of one layer, in feature order, to ``layer_{l}.bin``."""

    def __init__(self, directory: Path, layer: int):
        self.filename = f"layer_{layer}.bin"
        self._file = open(directory / self.filename, "wb")  # noqa: SIM115 (closed in close())
        self.offsets = [0]

    def add(self, record: dict[str, Any]) -> None:
        data = encode_record(record)
        self._file.write(data)
        self.offsets.append(self.offsets[-1] + len(data))

    def close(self) -> dict[str, Any]:
        self._file.close()
        return {"filename": self.filename, "offsets": self.offsets}


def write_index(directory: Path, entries: list[dict[str, Any]]) -> None:
    """Writes ``index.json.gz`` (entries indexed by layer)."""
    with gzip.open(directory / INDEX_NAME, "wt", encoding="utf-8") as f:
        json.dump(entries, f, separators=(",", ":"))


def write_store(directory: str | Path, layers: list[list[dict[str, Any]]]) -> Path:
    """Writes the records ``layers[l][f]`` as a store in ``directory`` (created if missing)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for layer, records in enumerate(layers):
        w = LayerWriter(directory, layer)
        for record in records:
            w.add(record)
        entries.append(w.close())
    write_index(directory, entries)
    return directory


def _store_dir(path: str | Path) -> Path:
    """``path`` itself if it holds the index, else ``path/features``."""
    path = Path(path)
    if (path / INDEX_NAME).is_file():
        return path
    if (path / STORE_DIR / INDEX_NAME).is_file():
        return path / STORE_DIR
    raise FileNotFoundError(
        f"No feature store at {path}: expected {INDEX_NAME} there or in {STORE_DIR}/; "
        "build one with `circuitlab features build`."
    )


def read_build_info(path: str | Path) -> dict[str, Any] | None:
    """The store's ``build.json`` (None when it has none or it is unreadable)."""
    try:
        info = json.loads((_store_dir(path) / BUILD_NAME).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def read_index(path: str | Path) -> list[dict[str, Any]]:
    """The store's index: per layer ``{"filename", "offsets"}``."""
    with gzip.open(_store_dir(path) / INDEX_NAME, "rt", encoding="utf-8") as f:
        return json.load(f)


def feature_range(index: list[dict[str, Any]], layer: int, feature: int) -> tuple[str, int, int]:
    """``(filename, start, end)``: the feature is bytes ``[start, end)`` of ``filename``."""
    if not 0 <= layer < len(index):
        raise IndexError(f"Layer {layer} is not in the store (layers 0..{len(index) - 1}).")
    offsets = index[layer]["offsets"]
    if not 0 <= feature < len(offsets) - 1:
        raise IndexError(
            f"Feature {feature} is not in layer {layer} (features 0..{len(offsets) - 2})."
        )
    return index[layer]["filename"], offsets[feature], offsets[feature + 1]


def read_feature(path: str | Path, layer: int, index: int) -> dict[str, Any]:
    """The record of feature ``index`` of ``layer`` (reads only its bytes).

    ``path`` is the build's output dir or its ``features/`` dir.
    """
    store = _store_dir(path)
    filename, start, end = feature_range(read_index(store), layer, index)
    with open(store / filename, "rb") as f:
        f.seek(start)
        return decode_record(f.read(end - start))
