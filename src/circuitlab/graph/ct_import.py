"""Importing a circuit-tracer ``.pt`` graph, without running code from the file.

circuit-tracer (0.5.0) saves a graph with ``torch.save`` of a dict: ``input_string``,
``adjacency_matrix[N, N]``, ``cfg`` (a pickled ``UnifiedConfig`` dataclass), ``active_features``,
``logit_targets`` (pickled ``LogitTarget`` named tuples, or a tensor of token ids in older
files), ``logit_probabilities``, ``vocab_size``, ``input_tokens``, ``selected_features``,
``activation_values`` and ``scan`` (``scan_name`` in later versions).

A pickle can run arbitrary code when loaded, so this module never uses a full unpickler. It
uses PyTorch's restricted ``weights_only`` unpickler (tensors, containers and plain values only)
and allows, in addition, exactly these class names, each mapped to a harmless local stand-in
that only stores attributes:

* ``circuit_tracer.attribution.targets.LogitTarget`` (and ``circuit_tracer.graph.LogitTarget``)
  -> ``circuitlab.graph.LogitTarget``;
* ``circuit_tracer.utils.tl_nnsight_mapping.UnifiedConfig`` and TransformerLens'
  ``HookedTransformerConfig`` (older files) -> a plain attribute record;
* ``circuit_tracer.graph.Graph`` (a whole pickled graph object) -> a plain attribute record.

Anything else in the file (e.g. a ``__reduce__`` calling ``os.system``) is refused with a
``ValueError`` before it can run.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from circuitlab.graph.graph import Graph
from circuitlab.graph.targets import LogitTarget


class _Record:
    """Stand-in for a pickled object: the unpickler only fills ``__dict__``."""


class _ConfigRecord(_Record):
    """Stand-in for circuit-tracer's ``UnifiedConfig`` / TransformerLens' config."""


class _GraphRecord(_Record):
    """Stand-in for a pickled ``circuit_tracer.graph.Graph`` object."""


_ALLOWED_CLASSES: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [
    (LogitTarget, "circuit_tracer.attribution.targets.LogitTarget"),
    (LogitTarget, "circuit_tracer.graph.LogitTarget"),
    (_ConfigRecord, "circuit_tracer.utils.tl_nnsight_mapping.UnifiedConfig"),
    (_ConfigRecord, "transformer_lens.HookedTransformerConfig.HookedTransformerConfig"),
    (_GraphRecord, "circuit_tracer.graph.Graph"),
]

_REQUIRED_KEYS = (
    "adjacency_matrix",
    "cfg",
    "active_features",
    "selected_features",
    "activation_values",
    "input_tokens",
    "logit_probabilities",
)


def import_circuit_tracer_pt(path: str | Path) -> Graph:
    """Load a circuit-tracer ``.pt`` graph as a circuitlab ``Graph`` (safely; see module docs).

    The square adjacency matrix is reduced to its feature and logit rows; the circuit-tracer
    config goes to ``settings["cfg"]`` and the transcoder scan to ``transcoder_name`` (a list of
    per-layer scans goes to ``settings["scan"]``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file holds anything besides a circuit-tracer graph (including code
            the unpickler refuses to run), or its fields are inconsistent.
    """
    path = Path(path)
    data = _restricted_load(path)
    if isinstance(data, _GraphRecord):
        data = dict(vars(data))
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a circuit-tracer graph dict (got {type(data)})")
    missing = [k for k in _REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path} is not a circuit-tracer graph: missing {missing}")

    cfg = data["cfg"]
    cfg_fields = dict(vars(cfg)) if isinstance(cfg, _Record) else dict(cfg)
    n_layers = int(cfg_fields["n_layers"])
    logit_targets = _logit_targets(data.get("logit_targets", data.get("logit_tokens")))
    selected = data["selected_features"].long()
    input_tokens = data["input_tokens"].long()
    scan = data.get("scan_name", data.get("scan"))
    vocab_size = data.get("vocab_size") or cfg_fields.get("d_vocab")
    if vocab_size is None:
        raise ValueError(f"{path} has neither vocab_size nor cfg.d_vocab")

    edges = _feature_and_logit_rows(
        data["adjacency_matrix"], len(selected), n_layers, len(input_tokens), len(logit_targets)
    )
    model_name = cfg_fields.get("model_name") or cfg_fields.get("tokenizer_name") or ""
    return Graph(
        input_string=str(data.get("input_string", "")),
        input_tokens=input_tokens,
        logit_targets=logit_targets,
        logit_probabilities=data["logit_probabilities"].float(),
        vocab_size=int(vocab_size),
        active_features=data["active_features"].long(),
        activation_values=data["activation_values"],
        selected_features=selected,
        edges=edges,
        n_layers=n_layers,
        model_name=str(model_name),
        transcoder_name=scan if isinstance(scan, str) else None,
        settings={
            "imported_from": "circuit-tracer",
            "source_file": path.name,
            "cfg": {k: _jsonable(v) for k, v in cfg_fields.items()},
            "scan": _jsonable(scan),
        },
    )


def _restricted_load(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"no circuit-tracer graph file at {path}")
    try:
        with torch.serialization.safe_globals(_ALLOWED_CLASSES):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"refused to import {path}: it contains objects outside a circuit-tracer graph, "
            f"which could run code when unpickled ({e})"
        ) from e
    except (RuntimeError, EOFError) as e:
        raise ValueError(f"{path} is not a readable PyTorch file ({e})") from e


def _logit_targets(raw: Any) -> list[LogitTarget]:
    if raw is None:
        raise ValueError("the graph has no logit_targets")
    if isinstance(raw, torch.Tensor):  # legacy files: token ids only
        return [LogitTarget("", int(i)) for i in raw.tolist()]
    return [LogitTarget(str(t[0]), int(t[1])) for t in raw]


def _feature_and_logit_rows(
    adjacency: torch.Tensor, n_sel: int, n_layers: int, n_pos: int, n_logits: int
) -> torch.Tensor:
    """``adjacency[N, N] -> edges[n_sel + n_logits, N]`` (error and token rows must be zero)."""
    n = n_sel + n_layers * n_pos + n_pos + n_logits
    if tuple(adjacency.shape) != (n, n):
        raise ValueError(
            f"adjacency_matrix has shape {tuple(adjacency.shape)}, expected ({n}, {n}) for "
            f"{n_sel} features, {n_layers} layers, {n_pos} positions and {n_logits} logits"
        )
    if adjacency[n_sel : n - n_logits].any():
        raise ValueError(
            "adjacency_matrix has non-zero error or token rows; a circuit-tracer graph never "
            "does (those nodes have no inputs), so this file was modified or is not a graph"
        )
    rows = torch.cat([torch.arange(n_sel), torch.arange(n - n_logits, n)])
    edges = adjacency[rows]
    if edges.dtype not in (torch.float32, torch.float64):
        edges = edges.float()
    return edges.contiguous()


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)
