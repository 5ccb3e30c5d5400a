"""Graphs on disk: one ``.safetensors`` file, never a pickle.

Layout of the file:

* tensors ``input_tokens``, ``logit_probabilities``, ``active_features``, ``activation_values``,
  ``selected_features``;
* the edges in the graph's block layout (``graph.edges``): for block ``i``,
  ``edges.{i}.targets`` (int32 node indices) and ``edges.{i}.values`` (``[k, w]`` in the edge
  dtype: float32, bfloat16, float16 or float64); source lists ``edges.sources.{j}`` (int32),
  shared by the blocks of one (layer, position chunk); the header's ``edge_blocks`` holds
  ``{"layers": [...], "sources": [j of each block], "dtype": ...}``;
* the safetensors metadata header (string to string) holds ``format`` =
  ``"circuitlab.graph"``, ``format_version`` and ``graph``: a JSON object with every
  non-tensor field (``input_string``, ``logit_targets`` as ``[token_str, vocab_idx]`` pairs,
  ``vocab_size``, ``n_layers``, ``model_name``, ``transcoder_name``, ``settings``,
  ``feature_labels``, ``transcoder_fingerprint``).

Writes are atomic: the file is written under a temporary name in the target directory, flushed
to disk and renamed over the destination, so an interrupted save never leaves a half-written
graph and never destroys the previous file.

Versions: 2 (this one) stores edge blocks; 1 stored one dense ``edges[n_sel + n_logits, N]``
tensor, and such files still load (the rows are split into blocks on load).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from circuitlab.atomic import atomic_path
from circuitlab.graph.edges import EDGE_DTYPES, EdgeBlock, EdgeBlocks
from circuitlab.graph.graph import Graph
from circuitlab.graph.targets import LogitTarget

FORMAT_NAME = "circuitlab.graph"
FORMAT_VERSION = 2
TENSOR_FIELDS = (
    "input_tokens",
    "logit_probabilities",
    "active_features",
    "activation_values",
    "selected_features",
)


def save_graph(graph: Graph, path: str | Path) -> None:
    """Write ``graph`` to ``path`` (a ``.safetensors`` file), atomically."""
    path = Path(path)
    tensors = {name: getattr(graph, name).detach().cpu().contiguous() for name in TENSOR_FIELDS}
    shared: dict[int, int] = {}  # id(sources) -> index of its tensor in the file
    for i, b in enumerate(graph.edge_blocks.blocks):
        tensors[f"edges.{i}.targets"] = b.targets.detach().cpu().to(torch.int32).contiguous()
        tensors[f"edges.{i}.values"] = b.values.detach().cpu().contiguous()
        if id(b.sources) not in shared:
            j = shared[id(b.sources)] = len(shared)
            tensors[f"edges.sources.{j}"] = b.sources.detach().cpu().to(torch.int32).contiguous()
    header = _header(graph)
    header["edge_blocks"] = {
        "layers": [b.layer for b in graph.edge_blocks.blocks],
        "sources": [shared[id(b.sources)] for b in graph.edge_blocks.blocks],
        "dtype": str(graph.edge_dtype).removeprefix("torch."),
    }
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "graph": json.dumps(header),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_graph(path: str | Path, device: torch.device | str = "cpu", *, mmap: bool = True) -> Graph:
    """Read a graph written by ``save_graph``.

    With ``mmap`` (the default, on the CPU) the edge values of a version-2 file are views of a
    private memory map of the file: pages are read when first used, and changes stay in memory.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a circuitlab graph (or is damaged); a circuit-tracer ``.pt``
            file is pointed to ``import_circuit_tracer_pt``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no graph file at {path}")
    if _looks_like_torch_pickle(path):
        raise ValueError(
            f"{path} is a PyTorch pickle (.pt), not a circuitlab graph; if it is a "
            "circuit-tracer graph, import it with circuitlab.graph.import_circuit_tracer_pt"
        )
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            metadata = f.metadata() or {}
            _check_format(path, metadata)
            header = json.loads(metadata["graph"])
            version = int(metadata["format_version"])
            names = [*TENSOR_FIELDS, "edges"] if version == 1 else TENSOR_FIELDS
            missing = [name for name in names if name not in f.keys()]
            if missing:
                raise ValueError(f"{path} is not a complete circuitlab graph: missing {missing}")
            tensors = {name: f.get_tensor(name) for name in names}
            edges: dict[str, Any] = {}
            if version >= 2:
                on_cpu = torch.device(device).type == "cpu"
                get = _mapped_tensors(path) if mmap and on_cpu else f.get_tensor
                edges["edge_blocks"] = _read_blocks(get, header, tensors)
        return Graph(**tensors, **edges, **_fields_from_header(header))
    except (SafetensorError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a readable circuitlab graph file ({e})") from e


def _read_blocks(
    get: Callable[[str], torch.Tensor], header: dict[str, Any], tensors: dict
) -> EdgeBlocks:
    """The edge blocks of a version-2 file (see the module docs)."""
    info = header["edge_blocks"]
    blocks, sources = [], {}
    for i, (layer, j) in enumerate(zip(info["layers"], info["sources"], strict=True)):
        if j not in sources:
            sources[j] = get(f"edges.sources.{j}").long()
        targets = get(f"edges.{i}.targets").long()
        values = get(f"edges.{i}.values")
        blocks.append(EdgeBlock(targets, sources[j], values, int(layer)))
    n_sel, n_pos = len(tensors["selected_features"]), len(tensors["input_tokens"])
    n_nodes = n_sel + (int(header["n_layers"]) + 1) * n_pos + len(header["logit_targets"])
    dtype = getattr(torch, info["dtype"])
    if not isinstance(dtype, torch.dtype) or dtype not in EDGE_DTYPES:
        raise ValueError(f"unknown edge dtype {info['dtype']!r}")
    return EdgeBlocks(blocks, n_nodes, dtype)


def _mapped_tensors(path: Path) -> Callable[[str], torch.Tensor]:
    """``name -> tensor`` of a safetensors file, as views of one private (copy-on-write) memory
    map of it; a tensor whose offset does not suit its dtype is copied out instead."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        entries = json.loads(fh.read(n))
    size = path.stat().st_size
    whole = torch.from_file(str(path), shared=False, size=size, dtype=torch.uint8)
    start = 8 + n

    def get(name: str) -> torch.Tensor:
        entry = entries[name]
        begin, end = entry["data_offsets"]
        dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
        raw = whole[start + begin : start + end]
        if (start + begin) % dtype.itemsize:
            raw = raw.clone()
        return raw.view(dtype).reshape(entry["shape"])

    return get


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
}


def _header(graph: Graph) -> dict[str, Any]:
    labels = graph.feature_labels
    return {
        "input_string": graph.input_string,
        "logit_targets": [[t.token_str, t.vocab_idx] for t in graph.logit_targets],
        "vocab_size": graph.vocab_size,
        "n_layers": graph.n_layers,
        "model_name": graph.model_name,
        "transcoder_name": graph.transcoder_name,
        "settings": graph.settings,
        "feature_labels": None if labels is None else {str(k): v for k, v in labels.items()},
        "transcoder_fingerprint": graph.transcoder_fingerprint,
    }


def _fields_from_header(header: dict[str, Any]) -> dict[str, Any]:
    labels = header.get("feature_labels")
    return {
        "input_string": str(header["input_string"]),
        "logit_targets": _logit_targets(header["logit_targets"]),
        "vocab_size": int(header["vocab_size"]),
        "n_layers": int(header["n_layers"]),
        "model_name": str(header["model_name"]),
        "transcoder_name": header.get("transcoder_name"),
        "settings": dict(header.get("settings") or {}),
        "feature_labels": None if labels is None else {int(k): v for k, v in labels.items()},
        "transcoder_fingerprint": header.get("transcoder_fingerprint"),
    }


def _logit_targets(raw: Any) -> list[LogitTarget]:
    """``[[token_str, vocab_idx], ...]`` from the header; TypeError naming the expected form."""
    expected = 'expected "logit_targets": [[token_str, vocab_idx], ...], e.g. [[" Paris", 6342]]'
    if not isinstance(raw, list):
        raise TypeError(
            f"the header's logit_targets is {type(raw).__name__} {raw!r:.60}; {expected}"
        )
    out = []
    for i, item in enumerate(raw):
        ok = isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
        if not ok or not isinstance(item[1], int) or isinstance(item[1], bool) or item[1] < 0:
            raise TypeError(f"the header's logit_targets[{i}] is {item!r:.60}; {expected}")
        out.append(LogitTarget(item[0], item[1]))
    return out


def _check_format(path: Path, metadata: dict[str, str]) -> None:
    if metadata.get("format") != FORMAT_NAME or "graph" not in metadata:
        raise ValueError(
            f"{path} is a safetensors file but not a circuitlab graph "
            f"(metadata format={metadata.get('format')!r})"
        )
    version = metadata.get("format_version", "")
    if not version.isdigit() or int(version) > FORMAT_VERSION:
        raise ValueError(
            f"{path} has graph format version {version!r}; this circuitlab reads versions up to "
            f"{FORMAT_VERSION}: upgrade circuitlab"
        )


def _looks_like_torch_pickle(path: Path) -> bool:
    with open(path, "rb") as f:
        magic = f.read(4)
    # torch zip archive / legacy torch pickle (pickle protocol 2 + magic number long)
    return magic in (b"PK\x03\x04", b"\x80\x02\x8a\x0a")
