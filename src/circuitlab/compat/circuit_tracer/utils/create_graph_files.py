"""``create_graph_files``: circuitlab's graph JSON export with circuit-tracer's call.

``graph_or_path`` may be a ``Graph``, a circuit-tracer ``.pt`` file (read through the
restricted unpickler) or a graph saved by circuitlab (``.safetensors``). The prompt tokens are
decoded with the tokenizer the graph's ``cfg.tokenizer_name`` names when it can be loaded from
local files, else with the graph's ``model_name``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from circuitlab.graph.export import create_graph_files as native_create_graph_files
from circuitlab.graph.graph import Graph as NativeGraph


def create_graph_files(
    graph_or_path: NativeGraph | str | Path,
    slug: str,
    output_path: str | Path,
    scan: str | None = None,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
) -> None:
    """Prunes the graph and writes ``{output_path}/{slug}.json`` and ``graph-metadata.json``.

    Arguments and order are circuit-tracer's; unlike circuit-tracer, a graph without a
    ``scan`` is written anyway (the lab then shows no feature dashboards for it).
    """
    graph = load_any(graph_or_path)
    native_create_graph_files(
        graph,
        slug,
        output_path,
        node_threshold,
        edge_threshold,
        scan=scan,
        tokenizer=_tokenizer(graph),
    )


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
