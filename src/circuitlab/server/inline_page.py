"""The lab as one self-contained HTML page: the built bundle inlined, the graph embedded.

For notebooks whose browser cannot reach any server of the kernel's machine (``show(graph,
inline=True)``, and ``show``'s fallback), and for sharing a graph as a single file. The page is
the lab's own ``web/dist`` bundle, unchanged: a small script placed before it answers the
page's relative ``fetch`` calls from the files embedded in the page (``data/graph-metadata.json``,
``data/{slug}.json``, ``api/info``, ``api/validation``) and answers everything else 404 with a
``detail`` that names the server, so the page runs read-only with no server at all.

Read-only here: the graph, pruning, inspecting, hover cards, pins, supernodes and labels (kept
in the page until it is closed). These need the lab server: Save, feature dashboards, tracing,
steering, the heads view, faithfulness and diff files.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from circuitlab.graph.export import check_slug, graph_json
from circuitlab.graph.graph import Graph
from circuitlab.server.app import WEB_DIST

# Runs before the bundle: fetch answered from the embedded files; history writes the document
# may not make (a srcdoc or sandboxed frame may change only its fragment) dropped, not thrown.
_OFFLINE_JS = """(() => {
  const files = JSON.parse(document.getElementById("circuitlab-files").textContent);
  const reply = (status, body) => Promise.resolve(new Response(JSON.stringify(body),
    { status, headers: { "Content-Type": "application/json" } }));
  window.fetch = (input) => {
    const url = new URL(typeof input === "string" ? input : input.url, "http://inline.invalid/");
    const name = decodeURIComponent(url.pathname.slice(1));
    if (Object.prototype.hasOwnProperty.call(files, name)) return reply(200, files[name]);
    return reply(404, { detail: `${name} needs the lab server; this is the inline page ` +
      "(graph.show(inline=False) or circuitlab serve has it)" });
  };
  for (const name of ["pushState", "replaceState"]) {
    const write = history[name].bind(history);
    history[name] = (...args) => { try { write(...args); } catch { /* fragment-only document */ } };
  }
})();"""


def inline_files(data: Mapping[str, Any]) -> dict[str, Any]:
    """The answers the inline page gives its own requests, for one graph-file dict ``data``
    (``graph_json``'s): the graph list, the graph, and an ``api/info`` with no server parts."""
    from circuitlab._version import __version__

    slug = check_slug(str(data["metadata"]["slug"]))
    return {
        "data/graph-metadata.json": {"graphs": [data["metadata"]]},
        f"data/{slug}.json": data,
        "api/validation": {"faithfulness": [], "diffs": []},
        "api/info": {
            "version": __version__,
            "features": False,
            "feature_stores": {},
            "tracing": False,
            "models": [],
            "steering": False,
            "heads": False,
            "heads_models": [],
            "attention": False,
            "inline": True,
        },
    }


def inline_page(
    graph: Graph | Mapping[str, Any],
    slug: str = "graph",
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    *,
    tokenizer: Any = None,
    features_dir: str | Path | None = None,
) -> str:
    """The lab on ``graph`` as one HTML document that needs no server (see the module doc).

    ``graph`` is a ``Graph`` (pruned at the thresholds, like ``create_graph_files``, with
    feature labels from ``features_dir``) or a graph file's dict already made. Write the result
    to a ``.html`` file to share it, or show it in a notebook with ``show(graph, inline=True)``.
    """
    if isinstance(graph, Graph):
        data = graph_json(
            graph,
            slug,
            node_threshold,
            edge_threshold,
            tokenizer=tokenizer,
            features_dir=features_dir,
        )
    else:
        data = graph
    if not (WEB_DIST / "app.js").is_file():
        raise RuntimeError("the page bundle is missing; see docs/web-lab.md (npm run build)")
    page = (WEB_DIST / "index.html").read_text(encoding="utf-8")
    css = (WEB_DIST / "app.css").read_text(encoding="utf-8")
    js = (WEB_DIST / "app.js").read_text(encoding="utf-8")
    files = json.dumps(inline_files(data), separators=(",", ":"), allow_nan=False)
    stylesheet = '<link rel="stylesheet" href="assets/app.css">'
    bundle = '<script src="assets/app.js"></script>'
    if stylesheet not in page or bundle not in page:
        raise RuntimeError(
            "web/dist/index.html no longer loads assets/app.css and assets/app.js: the inline "
            "page cannot place the bundle (rebuild with npm run build, see docs/web-lab.md)"
        )
    scripts = (
        f'<script type="application/json" id="circuitlab-files">{_json_safe(files)}</script>\n'
        f"<script>{_OFFLINE_JS}</script>\n<script>{_code_safe(js, 'script')}</script>"
    )
    page = page.replace(stylesheet, f"<style>{_code_safe(css, 'style')}</style>")
    return page.replace(bundle, scripts)


def srcdoc_iframe(document: str, width: str | int = "100%", height: int = 720) -> str:
    """An ``<iframe>`` showing ``document``, sandboxed to scripts only: an opaque origin, so the
    page can reach neither the notebook's cookies nor its server."""
    return (
        f'<iframe srcdoc="{html.escape(document, quote=True)}" sandbox="allow-scripts" '
        f'width="{width}" height="{height}" style="border:1px solid #ddd"></iframe>'
    )


def _json_safe(text: str) -> str:
    """JSON ``text`` that cannot end the ``<script>`` holding it (every ``<`` written ``\\u003c``,
    which is the same character inside a JSON string, the only place JSON has one)."""
    return text.replace("<", "\\u003c")


def _code_safe(text: str, element: str) -> str:
    """Script or style ``text`` that cannot end its ``element`` early (``</script`` written
    ``<\\/script``, the same text inside the strings and patterns where it can occur)."""
    return re.sub(rf"</({element})", r"<\\/\1", text, flags=re.IGNORECASE).replace("<!--", "<\\!--")
