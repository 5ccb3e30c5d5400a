"""Inline lab in Jupyter: ``show(graph)`` returns an iframe on a lab server started locally.

IPython is optional: with it ``show`` returns ``IPython.display.IFrame``; without it an object
whose ``_repr_html_`` is the iframe (notebooks render either).
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

from circuitlab.graph.export import create_graph_files
from circuitlab.graph.graph import Graph
from circuitlab.server.running import LabServer, lab_url, start_server

_servers: dict[str, LabServer] = {}


class LabFrame:
    """An iframe of the lab (what ``show`` returns when IPython is missing)."""

    def __init__(self, src: str, width: str | int = "100%", height: int = 720):
        self.src, self.width, self.height = src, width, height

    def _repr_html_(self) -> str:
        return (
            f'<iframe src="{self.src}" width="{self.width}" height="{self.height}" '
            'style="border:1px solid #ddd" loading="lazy"></iframe>'
        )

    def __repr__(self) -> str:
        return f"LabFrame({self.src!r})"


def show(
    graph: Graph | str | Path,
    slug: str | None = None,
    *,
    graph_file_dir: str | Path | None = None,
    features_dir: str | Path | None = None,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    height: int = 720,
    tokenizer: Any = None,
) -> Any:
    """Write ``graph``'s files and return an inline view of the lab on it.

    One server per ``(graph_file_dir, features_dir)`` is started on 127.0.0.1 and reused;
    ``graph_file_dir`` defaults to a temporary folder for this Python process. It has no token
    (the iframe is another site than the notebook's, where the token's cookie cannot be set):
    like any loopback lab it answers its own page and programs on this machine only.
    """
    key = f"{graph_file_dir}|{features_dir}"
    server = _servers.get(key)
    if server is None:
        folder = graph_file_dir or tempfile.mkdtemp(prefix="circuitlab-lab-")
        server = _servers[key] = start_server(folder, features_dir, token="")
    folder = Path(server.app.state.graph_dir)
    slug = slug or f"graph-{uuid.uuid4().hex[:8]}"
    create_graph_files(
        graph,
        slug,
        folder,
        node_threshold,
        edge_threshold,
        tokenizer=tokenizer,
        features_dir=features_dir,
    )
    src = lab_url(server.host, server.port, slug=slug)
    try:
        from IPython.display import IFrame  # type: ignore[import-not-found]
    except ImportError:
        return LabFrame(src, height=height)
    return IFrame(src, width="100%", height=height)


def stop_all() -> None:
    """Stop every server ``show`` started."""
    while _servers:
        _servers.popitem()[1].stop()
