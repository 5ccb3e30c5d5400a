"""Validation files in the page (hand-written to docs/validation.md's schemas): the
faithfulness pane beside its graph, linked to pruning; the diff view from the graph picker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from circuitlab.server import LabServer, start_server
from server.helpers import diff_record, faithfulness_record

from .conftest import lab_files, open_lab, screenshot_colours


@pytest.fixture
def validation_lab(tmp_path: Path) -> Iterator[LabServer]:
    graphs, features = lab_files(tmp_path)
    (graphs / "small.faithfulness.json").write_text(json.dumps(faithfulness_record()))
    (graphs / "small__vs__ct-graph.diff.json").write_text(json.dumps(diff_record()))
    server = start_server(graphs, features)
    yield server
    server.stop()


def test_the_faithfulness_pane_shows_curves_and_prunes_the_graph(
    page: Any, validation_lab: LabServer
) -> None:
    open_lab(page, validation_lab.url + "?slug=small")
    page.wait_for_selector("#faith-pane:not([hidden]) #faith-svg")
    assert page.locator("#faith-svg circle.faith-point.sufficiency").count() == 4
    assert page.locator("#faith-svg circle.faith-point.necessity").count() == 4
    assert page.locator("#faith-svg polyline").count() == 4  # + replacement, completeness
    assert "replacement 0.810" in page.inner_text("#faith-full")
    assert "2 nodes" in page.inner_text("#faith-pinned")
    assert page.locator(".faith-table tr").count() == 5
    page.click("#faith-svg circle.faith-point.sufficiency[data-threshold='0.5']")
    page.wait_for_function("window.__lab.state.pruning === 0.5")
    assert page.locator(".faith-table tr.current").inner_text().startswith("0.5")
    page.select_option("#faith-metric", "prob")
    assert page.locator("#faith-svg line.ref").count() == 2  # clean and all-ablated levels
    # a graph without a faithfulness file hides the pane
    open_lab(page, validation_lab.url + "?slug=ct-graph")
    page.wait_for_selector("#faith-pane", state="hidden")


def test_the_diff_view_opens_from_the_picker(page: Any, validation_lab: LabServer) -> None:
    open_lab(page, validation_lab.url + "?slug=small")
    options = page.eval_on_selector_all("#graph-select option", "os => os.map(o => o.value)")
    assert options == ["small", "diff:small__vs__ct-graph.diff.json"]
    page.select_option("#graph-select", "diff:small__vs__ct-graph.diff.json")
    page.wait_for_selector("#diff-view:not([hidden]) .diff-body")
    assert not page.is_visible("#graph-pane")
    assert "diff=small__vs__ct-graph.diff.json" in page.url
    metrics = page.inner_text("#diff-metrics")
    assert "0.430" in metrics and "0.210" in metrics and "0.120" in metrics
    counts = {
        k: page.inner_text(f".diff-bar [data-count='{k}']") for k in ("shared", "only_a", "only_b")
    }
    assert counts == {"shared": "shared 1", "only_a": "only in A 2", "only_b": "only in B 2"}
    assert page.locator(".diff-col[data-kind='only_b'] tr.diff-row").count() == 2
    assert page.locator(".diff-scatter circle.diff-point").count() == 5
    fill = page.get_attribute(".diff-scatter circle.only_a", "fill")
    assert fill == "#2563eb"  # colour-coded: shared purple, A blue, B orange
    png = page.screenshot()
    colours = screenshot_colours(page, png)
    assert colours["distinct"] > 50 and colours["ink"] > 0.01, colours
    page.click("button[data-what='edges']")
    assert "0_5 → logit_9" in page.inner_text(".diff-col[data-kind='only_b']")
    page.click("button[data-what='nodes']")
    # a row opens its node in its own graph
    page.locator(".diff-col[data-kind='only_b'] tr.diff-row").first.click()
    page.wait_for_function("window.__lab.state.slug === 'ct-graph'")
    assert page.evaluate("window.__lab.state.clickedId") == "0_5_1"
    assert page.is_visible("#graph-pane")
    # and the URL of a diff opens it again
    open_lab(page, validation_lab.url + "?diff=small__vs__ct-graph.diff.json")
    page.wait_for_selector("#diff-view:not([hidden]) .diff-body")


def test_files_written_by_circuitlab_validation_open(page: Any, tmp_path: Path) -> None:
    """Real files from ``faithfulness`` and ``compare_graphs`` on a tiny model, not hand-written."""
    from circuitlab.attribution import attribute
    from circuitlab.graph.export import create_graph_files
    from circuitlab.validation import compare_graphs, diff_file_name, faithfulness

    from conftest import build  # pyright: ignore[reportAttributeAccessIssue]  (tests/conftest.py)

    rm = build("llama")
    graphs = {s: attribute(rm, p) for s, p in [("a", "the capital of"), ("b", "the state of")]}
    for slug, graph in graphs.items():
        create_graph_files(graph, slug, tmp_path, 0.8, 0.98, tokenizer=rm.tokenizer)
    faithfulness(rm, graphs["a"], (0.4, 0.8), slug="a").save(tmp_path / "a.faithfulness.json")
    diff = compare_graphs(graphs["a"], graphs["b"], slug_a="a", slug_b="b")
    diff.save(tmp_path / diff_file_name("a", "b"))
    with start_server(tmp_path) as server:
        open_lab(page, server.url + "?slug=a")
        page.wait_for_selector("#faith-pane:not([hidden]) #faith-svg")
        assert page.locator("#faith-svg circle.faith-point.sufficiency").count() == 2
        open_lab(page, server.url + f"?diff={diff_file_name('a', 'b')}")
        page.wait_for_selector("#diff-view:not([hidden]) .diff-body")
        rows = page.locator("tr.diff-row")
        assert rows.count() >= 1
        rows.first.click()  # its node id is a node of its graph file
        page.wait_for_function("['a', 'b'].includes(window.__lab.state.slug)")
        assert page.evaluate("window.__lab.state.clickedId")
