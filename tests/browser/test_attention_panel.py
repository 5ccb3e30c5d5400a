"""The attention panel in a real browser: an edge's head loadings from the inspector and from a
subgraph link, its top head's QK pairs with clickable sides; a saved page with precomputed
results shows flows and QK pairs with no model behind it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from circuitlab.attention import add_attention_results, path_head_loadings
from circuitlab.graph import Graph
from circuitlab.server import LabServer, Tracer, start_server

from .conftest import open_lab


@pytest.fixture(scope="module")
def attention_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabServer, Path]]:
    from conftest import build  # pyright: ignore[reportAttributeAccessIssue]  (tests/conftest.py)

    folder = tmp_path_factory.mktemp("attention-lab")
    tracer = Tracer({"tiny": build("llama", n_layers=3)}, folder)
    job = tracer.wait(tracer.submit("the capital of the state", slug="cap").id, timeout=120)
    assert job.status == "done", job.error
    server = start_server(folder, tracer=tracer)
    yield server, folder
    server.stop()


def _cross_edge(folder: Path) -> tuple[str, str]:
    data = json.loads((folder / "cap.json").read_text())
    for link in sorted(data["links"], key=lambda x: -abs(x["weight"])):
        s, t = link["source"], link["target"]
        feature_target = not t.startswith("E_") and t.split("_")[1] != "-1"
        if feature_target and int(s.rsplit("_", 1)[1]) < int(t.split("_")[2]):
            return s, t
    raise AssertionError("no cross-position edge")


def _number(text: str) -> float:
    return float(re.findall(r"[-+]?\d*\.?\d+(?:e[-+]?\d+)?", text)[0])


def test_an_edge_shows_its_head_loadings_and_a_head_its_qk_pairs(
    page: Any, attention_lab: tuple[LabServer, Path]
) -> None:
    server, folder = attention_lab
    src, tgt = _cross_edge(folder)
    tracer_model = build_model_of(server)
    want = path_head_loadings(tracer_model, Graph.load(folder / "cap.safetensors"), src, tgt)
    open_lab(page, f"{server.url}?slug=cap&clickedId={tgt}")
    page.locator(f'#inspector tr.link-row[data-node="{src}"] button.edge-heads').click()
    rows = page.locator("#attn-top-heads tr.attn-head")
    rows.first.wait_for()
    best_layer, best_head, best = want.top_heads(1)[0]
    assert rows.first.get_attribute("data-head") == f"{best_layer}.{best_head}"
    assert _number(rows.first.locator("td.w").inner_text()) == pytest.approx(best, rel=1e-2)
    assert page.locator("#attn-layers .head-bars i").count() > 0  # the per-layer bar chart
    assert "server" in page.locator(".attn-from").inner_text()

    rows.first.click()  # why this head attends from the target's position to the source's
    page.locator("#qk-pairs button.qk-node").first.wait_for()
    title = page.locator("#attn-qk-title").inner_text()
    assert f"L{best_layer}H{best_head}" in title
    sides = page.locator("#qk-pairs button.qk-node")
    ids = [sides.nth(i).get_attribute("data-node") for i in range(sides.count())]
    graph_ids = set(page.evaluate("() => [...window.__lab.state.graph.byId.keys()]"))
    in_graph = next((i for i in ids if i in graph_ids), None)
    assert in_graph is not None, ids
    page.locator(f'#qk-pairs button.qk-node[data-node="{in_graph}"]').first.click()
    page.wait_for_function("id => window.__lab.state.clickedId === id", arg=in_graph)
    if not in_graph.startswith("E_") and in_graph.split("_")[1] != "-1":
        layer, feature, _ = in_graph.split("_")
        page.wait_for_function(
            "t => document.getElementById('feature').innerText.includes(t)",
            arg=f"Layer {layer} · feature {feature}",
        )


def test_a_subgraph_link_shows_the_loadings_of_its_edges(
    page: Any, attention_lab: tuple[LabServer, Path]
) -> None:
    server, folder = attention_lab
    src, tgt = _cross_edge(folder)
    open_lab(page, f"{server.url}?slug=cap&pinnedIds={src},{tgt}")
    page.locator("#subgraph g.sg-links line").first.dispatch_event("click")
    page.locator("#attn-top-heads tr.attn-head").first.wait_for()
    assert "→" in page.locator("#attn-edge-title").inner_text()
    assert page.evaluate("() => window.__lab.attention.edges") == [[src, tgt]]


def test_a_saved_page_shows_precomputed_flows_and_qk_without_a_model(
    page: Any, attention_lab: tuple[LabServer, Path], tmp_path: Path
) -> None:
    server, folder = attention_lab
    offline = tmp_path / "offline"
    offline.mkdir()
    (offline / "cap.json").write_text((folder / "cap.json").read_text())
    graph = Graph.load(folder / "cap.safetensors")
    add_attention_results(build_model_of(server), graph, offline / "cap.json", n_flows=3)
    lab = start_server(offline)
    try:
        open_lab(page, f"{lab.url}?slug=cap")
        page.locator("#attention-toggle").click()
        flows = page.locator("#attn-flows tr.attn-flow")
        flows.first.wait_for()
        assert flows.count() == 3
        flows.first.click()
        page.locator("#qk-pairs button.qk-node").first.wait_for()
        assert "graph file" in page.locator(".attn-from").inner_text()
        side = page.locator("#qk-pairs button.qk-key").first
        node = side.get_attribute("data-node")
        side.click()
        page.wait_for_function(
            "id => window.__lab.state.clickedId === id || "
            "(window.__lab.attention.node && window.__lab.attention.node.id === id)",
            arg=node,
        )
    finally:
        lab.stop()


def build_model_of(server: LabServer) -> Any:
    """The tracer's model behind a running lab (the same object the server computes with)."""
    return server.app.state.tracer.models["tiny"]


def test_a_key_of_a_head_in_the_heads_view_shows_its_qk_pairs(
    page: Any, attention_lab: tuple[LabServer, Path]
) -> None:
    server, _ = attention_lab
    open_lab(page, f"{server.url}?slug=cap")
    page.click("#graph-heads")  # the heads of the graph's own prompt
    page.wait_for_selector("body[data-heads-status='analysis-done']", timeout=60_000)
    n_tokens = page.evaluate("window.__lab.heads.start.tokens.length")
    assert n_tokens == len(page.evaluate("window.__lab.state.graph.tokens"))
    page.click("#heads-grid rect.hcell[data-layer='1'][data-head='0']")
    key = page.locator("#head-keys tr.head-key").first
    k = key.get_attribute("data-key")
    key.click()
    page.locator("#qk-pairs button.qk-node").first.wait_for()
    assert page.locator("#attn-qk-title").inner_text().startswith("Why L1H0 attends")
    assert f"@{n_tokens - 1} to" in page.locator("#attn-qk-title").inner_text()
    assert page.locator("#attn-qk-title").inner_text().endswith(f"@{k}")
    side = page.locator("#qk-pairs button.qk-query").first
    node = side.get_attribute("data-node")
    side.click()  # in the heads view a side's card shows in the panel
    page.wait_for_function("id => window.__lab.attention.node?.id === id", arg=node)
    assert page.locator("#attn-node-title").count() == 1
