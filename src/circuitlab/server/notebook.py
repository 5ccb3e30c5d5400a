"""The lab inside a notebook: ``show(graph)`` returns an iframe the notebook renders.

Two kinds of view (docs/web-lab.md, *Notebooks*):

* **The lab server** on the kernel's machine (127.0.0.1, a free port, one per folder and
  route), reached the way the notebook's browser can reach it (``notebook_proxy.Route``):
  jupyter-server-proxy, Colab's port proxy, a proxy URL template, or directly when the browser
  runs on the kernel's machine. Everything works: Save, feature dashboards.
* **The inline page** (``inline_page.py``): the bundle and the graph in the output itself,
  needing no server; read-only.

``show`` picks the server when it knows a route (Colab, or jupyter-server-proxy installed and
the kernel's Jupyter server found) and the inline page otherwise; ``inline=`` and ``proxy=``
choose. What ``show`` returns renders through ``_repr_html_`` (IPython is not needed).
"""

from __future__ import annotations

import html
import tempfile
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from circuitlab.graph.export import check_slug, create_graph_files
from circuitlab.graph.graph import Graph
from circuitlab.server.app import create_app
from circuitlab.server.guard import LOOPBACK_HOSTS, new_token
from circuitlab.server.inline_page import inline_page, srcdoc_iframe
from circuitlab.server.notebook_proxy import Route, choose_route
from circuitlab.server.running import DEFAULT_HOST, LabServer, free_port

_servers: dict[str, tuple[LabServer, str]] = {}  # key -> (server, its base URL for the browser)


class LabFrame:
    """An iframe of the lab: on a server (``src``) or the inline page (``srcdoc``)."""

    def __init__(
        self,
        src: str | None = None,
        width: str | int = "100%",
        height: int = 720,
        *,
        srcdoc: str | None = None,
    ):
        if (src is None) == (srcdoc is None):
            raise ValueError("a LabFrame shows either src (a URL) or srcdoc (a page)")
        self.src, self.srcdoc, self.width, self.height = src, srcdoc, width, height

    @property
    def inline(self) -> bool:
        """Whether this is the self-contained page (no server behind it)."""
        return self.srcdoc is not None

    def _repr_html_(self) -> str:
        if self.srcdoc is not None:
            return srcdoc_iframe(self.srcdoc, self.width, self.height)
        return (
            f'<iframe src="{html.escape(self.src or "")}" width="{self.width}" '
            f'height="{self.height}" '
            'style="border:1px solid #ddd" loading="lazy"></iframe>'
        )

    def save(self, path: str | Path) -> Path:
        """Write the inline page to ``path`` (an ``.html`` file anyone can open offline)."""
        if self.srcdoc is None:
            raise ValueError("only the inline page can be saved: show(graph, inline=True)")
        out = Path(path)
        out.write_text(self.srcdoc, encoding="utf-8")
        return out

    def __repr__(self) -> str:
        if self.srcdoc is not None:
            return f"LabFrame(inline page, {len(self.srcdoc)} characters)"
        return f"LabFrame({self.src!r})"


def show(
    graph: Graph | str | Path,
    slug: str | None = None,
    *,
    inline: bool | None = None,
    proxy: str = "auto",
    graph_file_dir: str | Path | None = None,
    features_dir: str | Path | None = None,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    height: int = 720,
    tokenizer: Any = None,
) -> LabFrame:
    """The lab on ``graph`` (a ``Graph`` or a path saved with ``Graph.save``) for a notebook.

    ``inline``: ``True`` for the self-contained page, ``False`` for the lab server (through the
    route ``proxy`` names, else directly on 127.0.0.1), ``None`` to let ``proxy`` decide.
    ``proxy``: ``"auto"`` (Colab's proxy in Colab, jupyter-server-proxy when installed and the
    kernel's Jupyter server is found, else the inline page), ``"jupyter"``, ``"colab"``,
    ``"none"`` (``http://127.0.0.1:PORT/``: the browser runs on the kernel's machine) or a URL
    template such as ``"/user/me/proxy/{port}/"``.

    The server writes the graph's files into ``graph_file_dir`` (default: a temporary folder
    for this Python process) and is reused for later graphs of the same folder and route.
    Behind a proxy it has a token, carried in the iframe's URL (docs/security.md).
    """
    if not isinstance(graph, Graph):
        graph = Graph.load(graph)
    slug = check_slug(slug or f"graph-{uuid.uuid4().hex[:8]}")
    if inline and proxy != "auto":
        raise ValueError(f"inline=True needs no proxy (got proxy={proxy!r}); give one of them")
    route = None if inline else choose_route(proxy)
    if route is None and inline is False:
        route = Route("local")
    if route is None:
        page = inline_page(
            graph,
            slug,
            node_threshold,
            edge_threshold,
            tokenizer=tokenizer,
            features_dir=features_dir,
        )
        return LabFrame(srcdoc=page, height=height)
    server, base = _server_for(route, graph_file_dir, features_dir)
    create_graph_files(
        graph,
        slug,
        Path(server.app.state.graph_dir),
        node_threshold,
        edge_threshold,
        tokenizer=tokenizer,
        features_dir=features_dir,
    )
    query = {"slug": slug, **({"token": server.token} if server.token else {})}
    return LabFrame(f"{base}?{urlencode(query, quote_via=quote)}", height=height)


def _server_for(
    route: Route, graph_file_dir: str | Path | None, features_dir: str | Path | None
) -> tuple[LabServer, str]:
    """The running server (and its base URL) for this folder and route, started if needed."""
    key = f"{route}|{graph_file_dir}|{features_dir}"
    if key not in _servers:
        folder = graph_file_dir or tempfile.mkdtemp(prefix="circuitlab-lab-")
        _servers[key] = start_notebook_server(route, folder, features_dir)
    return _servers[key]


def start_notebook_server(
    route: Route, folder: str | Path, features_dir: str | Path | None = None
) -> tuple[LabServer, str]:
    """A lab on 127.0.0.1 for ``route`` and its base URL as the notebook's browser names it.

    Directly reached (``local``): the default loopback guard, no token. Behind jupyter-server-
    proxy or a template: any ``Host`` (the proxy's), a same-host ``Origin`` and a new token.
    Colab: the loopback names plus the proxy's host, and the proxy's page as an allowed origin
    (no token: its third-party iframe could not keep the token's cookie).
    """
    Path(folder).mkdir(parents=True, exist_ok=True)
    port = free_port(DEFAULT_HOST)
    base = route.url(port)
    token = None
    hosts: list[str] | None = list(LOOPBACK_HOSTS)
    origins: list[str] = []
    if route.behind_proxy:
        token, hosts = new_token(), None
    elif route.kind == "colab":
        parts = urlsplit(base)
        hosts.append(parts.netloc)
        origins.append(f"{parts.scheme}://{parts.netloc}")
    app = create_app(
        folder, features_dir, allowed_hosts=hosts, token=token, allowed_origins=origins
    )
    return LabServer(app, DEFAULT_HOST, port, token).start(), base


def stop_all() -> None:
    """Stop every server ``show`` started."""
    while _servers:
        _servers.popitem()[1][0].stop()
