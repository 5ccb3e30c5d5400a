"""``create_graph_files``: circuitlab's graph JSON export with circuit-tracer's call.

``graph_or_path`` may be a ``Graph``, a circuit-tracer ``.pt`` file (read through the
restricted unpickler) or a graph saved by circuitlab (``.safetensors``). The prompt tokens are
decoded with the tokenizer the graph's ``cfg.tokenizer_name`` names when it can be loaded from
local files, else with the graph's ``model_name``'s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from circuitlab.atomic import write_atomic
from circuitlab.graph.export import ERROR_TYPE
from circuitlab.graph.export import create_graph_files as native_create_graph_files
from circuitlab.graph.graph import Graph as NativeGraph


def create_graph_files(
    graph_or_path: NativeGraph | str | Path,
    slug: str,
    output_path: str | Path,
    scan: str | None = None,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    *,
    error_ids: Literal["circuitlab", "circuit-tracer"] = "circuitlab",
) -> None:
    """Prunes the graph and writes ``{output_path}/{slug}.json`` and ``graph-metadata.json``.

    Arguments and order are circuit-tracer's; unlike circuit-tracer, a graph without a
    ``scan`` is written anyway (the lab then shows no feature dashboards for it).
    ``error_ids="circuit-tracer"`` writes error nodes as circuit-tracer 0.5.0 does
    (``node_id`` ``0_{layer}_{pos}``, ``jsNodeId`` ``{layer}_{pos}-0``) for tools that expect
    them; those ids can collide with layer-0 features' (``0_{feature}_{pos}``), which is why
    circuitlab's own form is ``{layer}_-1_{pos}``.
    """
    if error_ids not in ("circuitlab", "circuit-tracer"):
        raise ValueError(f"error_ids must be 'circuitlab' or 'circuit-tracer', got {error_ids!r}")
    graph = load_any(graph_or_path)
    path = native_create_graph_files(
        graph,
        slug,
        output_path,
        node_threshold,
        edge_threshold,
        scan=scan,
        tokenizer=_tokenizer(graph),
    )
    if error_ids == "circuit-tracer":
        _circuit_tracer_error_ids(path)


def _circuit_tracer_error_ids(path: Path) -> None:
    """Rewrites the error nodes' ids in a written graph file (and the links naming them)."""
    data = json.loads(path.read_text())
    renamed: dict[str, str] = {}
    for node in data["nodes"]:
        if node.get("feature_type") == ERROR_TYPE:
            layer, pos = node["layer"], node["ctx_idx"]
            renamed[node["node_id"]] = node["node_id"] = f"0_{layer}_{pos}"
            node["jsNodeId"] = f"{layer}_{pos}-0"
    for link in data["links"]:
        link["source"] = renamed.get(link["source"], link["source"])
        link["target"] = renamed.get(link["target"], link["target"])
    write_atomic(path, json.dumps(data, separators=(",", ":"), allow_nan=False).encode())


def load_any(graph_or_path: NativeGraph | str | Path) -> NativeGraph:
    """A graph object as is; a ``.pt`` path through the restricted importer; else
    ``Graph.load``."""
    if isinstance(graph_or_path, NativeGraph):
        return graph_or_path
    from ..graph import Graph  # the graph module imports utils: import it when called

    path = Path(graph_or_path)
    if path.suffix == ".pt":
        return Graph.from_pt(path)
    return NativeGraph.load(path)


def _tokenizer(graph: NativeGraph) -> Any:
    cfg = graph.settings.get("cfg") or {}
    for name in (cfg.get("tokenizer_name"), cfg.get("model_name"), graph.model_name):
        if not name:
            continue
        try:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(str(name), local_files_only=True)
        except (OSError, ValueError):
            continue
    return None
