"""The inline page ``show(graph, inline=True)`` gives renders in a real browser with no server:
the notebook's iframe (sandboxed srcdoc) draws the graph, answers clicks and pins, makes no
network request, and says that saving needs the lab server."""

from __future__ import annotations

from typing import Any

from circuitlab.graph.export import graph_json
from circuitlab.server.notebook import show, stop_all
from server.helpers import small_graph

from .conftest import screenshot_colours


def inline_frame(page: Any) -> Any:
    """The lab's frame once its page is ready (the notebook output is the main page)."""
    page.wait_for_function("document.querySelector('iframe') !== null")
    frame = page.frames[1]
    frame.wait_for_selector("body[data-ready='1']")
    return frame


def test_inline_page_renders_the_graph_with_no_server(page: Any) -> None:
    stop_all()  # no lab server anywhere in this process
    output = show(small_graph(), "nb", inline=True, height=600)._repr_html_()
    requests: list[str] = []
    page.route("**/*", lambda route: (requests.append(route.request.url), route.abort()))
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    page.set_content(f"<!doctype html><body style='margin:0'>{output}</body>")
    frame = inline_frame(page)
    graph = frame.evaluate(
        "() => { const s = window.__lab.state; return { slug: s.slug, nodes: s.graph.nodes.length }; }"
    )
    assert graph == {"slug": "nb", "nodes": len(graph_json(small_graph(), "nb")["nodes"])}
    assert frame.evaluate("() => window.__lab.screenPos('1_1_1')") is not None
    png = frame.locator("#graph-wrap").screenshot()
    colours = screenshot_colours(page, png)
    assert colours["distinct"] > 20 and colours["ink"] > 0.001  # drawn, not blank

    pos = frame.evaluate("() => window.__lab.screenPos('1_1_1')")
    box = page.locator("iframe").bounding_box()
    page.keyboard.down("Control")
    page.mouse.click(box["x"] + pos["x"], box["y"] + pos["y"])
    page.keyboard.up("Control")
    assert frame.evaluate("() => [...window.__lab.state.pinned]") == ["1_1_1"]
    assert "says capital" in frame.text_content("#subgraph")

    frame.click("#save")
    frame.wait_for_function(
        "document.getElementById('save-state').textContent.includes('needs the lab server')"
    )
    assert requests == []  # everything came from the page itself
    assert errors == []
