"""A 30,000-node graph by level of detail: it opens with its strongest links only, a hover
handler completes, a click brings all of the clicked node's links from the server, and a
zoomed-in view the links of the nodes on screen (timings: benchmarks/page.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from circuitlab.server import start_server
from server.helpers import big_graph

from .conftest import open_lab

N_NODES, N_LINKS = 30_000, 300_000


def test_a_big_graph_opens_by_level_of_detail(page: Any, tmp_path: Path) -> None:
    data = big_graph(N_NODES, N_LINKS)
    (tmp_path / "big.json").write_text(json.dumps(data))
    with start_server(tmp_path) as server:
        open_lab(page, server.url + "?slug=big&pruningThreshold=1")
        counts = page.inner_text("#counts")
        assert counts.startswith(f"{N_NODES}/{N_NODES} nodes"), counts
        assert f"100000/{N_LINKS} links" in counts  # the strongest 100,000 only
        sent = page.evaluate("window.__lab.state.graph.links.map((l) => Math.abs(l.weight))")
        weakest = min(sent)
        assert sum(abs(x["weight"]) > weakest for x in data["links"]) < len(sent)

        hovered = page.evaluate(
            """() => {
                const lab = window.__lab;
                const n = lab.state.graph.nodes.find((x) => x.kind === 'feature' && lab.screenPos(x.id));
                const p = lab.screenPos(n.id);
                document.getElementById('overlay').dispatchEvent(
                    new MouseEvent('mousemove', {clientX: p.x, clientY: p.y, bubbles: true}));
                return lab.state.hoveredId;
            }"""
        )
        assert hovered  # the handler ran to the end and found a node under the pointer

        node = page.evaluate(
            """() => {
                const lab = window.__lab;
                const n = lab.state.graph.nodes.find((x) => x.kind === 'feature' && lab.screenPos(x.id));
                const p = lab.screenPos(n.id);
                document.getElementById('overlay').dispatchEvent(
                    new MouseEvent('click', {clientX: p.x, clientY: p.y, bubbles: true}));
                return lab.state.clickedId;
            }"""
        )
        touching = sum(node in (x["source"], x["target"]) for x in data["links"])
        page.wait_for_function(
            """([id, n]) => { const x = window.__lab.state.graph.byId.get(id);
                              return x.inputs.length + x.outputs.length === n; }""",
            arg=[node, touching],
        )
        before = page.evaluate("window.__lab.state.graph.links.length")
        overlay = page.locator("#overlay").bounding_box()
        assert overlay
        page.mouse.move(overlay["x"] + overlay["width"] / 2, overlay["y"] + overlay["height"] / 2)
        for _ in range(6):
            page.mouse.wheel(0, -500)
        page.wait_for_function("window.__lab.zoom().k > 4")
        page.wait_for_function(f"window.__lab.state.graph.links.length > {before}")
        assert page.evaluate("window.__lab.onScreen()") < N_NODES
