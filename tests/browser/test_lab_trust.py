"""The lab never misleads and never loses work: restored clicks, unknown slugs, the file's own
threshold, prompts in the selector, P and double-click, hover cards, unsaved state kept per
graph across switches and Back, and concurrent saves merged instead of dropped."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from circuitlab.graph.export import create_graph_files, upsert_graph_metadata
from circuitlab.server import LabServer, start_server
from server.helpers import small_graph

from .conftest import click_node, open_lab


def lab_state(page: Any) -> dict[str, Any]:
    return page.evaluate(
        """() => { const s = window.__lab.state; return {
            slug: s.slug, clicked: s.clickedId, pinned: [...s.pinned], supernodes: s.supernodes,
            clerps: [...s.clerps.entries()], dirty: s.dirty }; }"""
    )


# ---- item 14: a restored clicked node stays; "No graphs yet" only without graphs ---------------


def test_a_clicked_node_from_the_url_or_the_file_is_shown(
    page: Any, lab: LabServer, tmp_path: Path
) -> None:
    open_lab(page, lab.url + "?slug=small&clickedId=1_1_1")
    assert "says capital" in page.inner_text("#inspector-title")
    assert "No graphs yet" not in page.inner_text("body")
    path = tmp_path / "graphs" / "small.json"
    data = json.loads(path.read_text())
    data["qParams"]["clickedId"] = "0_4_2"
    path.write_text(json.dumps(data))
    open_lab(page, lab.url + "?slug=small")
    assert page.inner_text("#inspector-title") == "L0 #4"


def test_no_graphs_yet_shows_only_without_graphs(page: Any, tmp_path: Path) -> None:
    with start_server(tmp_path) as server:
        open_lab(page, server.url)
        assert "No graphs yet" in page.inner_text("#inspector")


# ---- item 15 -------------------------------------------------------------------------------


def test_shift_p_pins_the_clicked_node(page: Any, lab: LabServer) -> None:
    open_lab(page, lab.url + "?slug=small")
    click_node(page, "1_1_1")
    page.keyboard.press("Shift+P")  # P, as the help and docs write it
    assert lab_state(page)["pinned"] == ["1_1_1"]
    page.keyboard.press("p")
    assert lab_state(page)["pinned"] == []


def test_double_clicking_a_supernode_edits_its_label(page: Any, lab: LabServer) -> None:
    groups = json.dumps([["grp", "0_0_1", "1_1_1"]])
    open_lab(page, f"{lab.url}?slug=small&pinnedIds=0_0_1,1_1_1&supernodes={groups}")
    page.dblclick("#subgraph .sg-node.super")
    assert page.evaluate("document.activeElement.classList.contains('sn-label')")
    page.keyboard.type("capital circuit")
    page.keyboard.press("Enter")
    assert lab_state(page)["supernodes"] == [["capital circuit", "0_0_1", "1_1_1"]]


def test_an_unknown_slug_says_so_and_lists_the_graphs(page: Any, lab: LabServer) -> None:
    open_lab(page, lab.url + "?slug=no-such-graph")
    message = page.inner_text("#graph-missing")
    assert "no-such-graph" in message and "the capital of" in message
    links = page.locator("#graph-missing a")
    listed = page.eval_on_selector_all("#graph-select option", "os => os.map(o => o.value)")
    assert links.evaluate_all("as => as.map(a => a.dataset.slug)") == listed == ["small"]
    page.click("#graph-missing a[data-slug='small']")
    page.wait_for_function("window.__lab.state.slug === 'small'")
    assert not page.is_visible("#graph-missing")
    assert page.evaluate("window.__lab.screenPos('1_1_1')")


def test_every_node_the_file_kept_shows_at_the_files_threshold(
    page: Any, lab: LabServer, tmp_path: Path
) -> None:
    """At node_threshold 0.6 the exporter keeps the node whose cumulative influence first
    reaches 0.6 (0.676 here): the page must show it, and every other node of the file."""
    graphs = tmp_path / "graphs"
    create_graph_files(small_graph(), "at-0.6", graphs, 0.6, 1.0)
    data = json.loads((graphs / "at-0.6.json").read_text())
    assert any(n["influence"] > 0.6 for n in data["nodes"] if n["feature_type"] != "logit")
    open_lab(page, lab.url + "?slug=at-0.6")
    n = len(data["nodes"])
    assert page.inner_text("#counts").startswith(f"{n}/{n} nodes")
    assert page.evaluate("window.__lab.screenPos('0_0_1')")  # the first past 0.6
    for _ in range(4):
        page.keyboard.press("[")  # 0.40: the node at 0.416 is the first past it; 0.676 goes
    page.wait_for_function("window.__lab.state.pruning === 0.4")
    assert page.evaluate("window.__lab.screenPos('0_4_2')")
    assert not page.evaluate("window.__lab.screenPos('0_0_1')")


def test_the_graph_selector_shows_each_prompt(page: Any, lab: LabServer) -> None:
    open_lab(page, lab.url + "?slug=small")
    text = page.eval_on_selector("#graph-select option[value='small']", "o => o.textContent")
    assert "the capital of" in text


# ---- item 16: a hover card, frozen with Shift --------------------------------------------------


def hover(page: Any, node_id: str) -> None:
    pos = page.evaluate("id => window.__lab.screenPos(id)", node_id)
    page.mouse.move(pos["x"], pos["y"])


def test_hovering_a_node_shows_its_card_and_shift_freezes_it(page: Any, lab: LabServer) -> None:
    open_lab(page, lab.url + "?slug=small")
    click_node(page, "1_1_1")
    assert "says capital" in page.inner_text("#inspector-title")
    hover(page, "0_4_2")  # a feature with a dashboard
    page.wait_for_function("document.getElementById('inspector-title')?.textContent === 'L0 #4'")
    page.wait_for_selector("#feature .example")
    assert "Paris" in page.inner_text("#feature")
    assert page.is_visible("#inspector .hover-note")
    page.mouse.move(5, 5)  # off the graph: back to the clicked node
    page.wait_for_function(
        "document.getElementById('inspector-title').textContent.includes('says capital')"
    )
    assert not page.is_visible("#inspector .hover-note")

    hover(page, "0_4_2")
    page.wait_for_function("document.getElementById('inspector-title')?.textContent === 'L0 #4'")
    page.keyboard.down("Shift")  # freeze, then walk over to the card
    box = page.locator("#feature").bounding_box()
    page.mouse.move(box["x"] + 20, box["y"] + 20, steps=8)
    page.keyboard.up("Shift")
    assert page.inner_text("#inspector-title") == "L0 #4"
    assert "frozen" in page.inner_text("#inspector .hover-note")
    assert "Paris" in page.inner_text("#feature")
    page.keyboard.press("Escape")  # releases the card; the click stays
    page.wait_for_function(
        "document.getElementById('inspector-title').textContent.includes('says capital')"
    )
    assert lab_state(page)["clicked"] == "1_1_1"


# ---- item 10: unsaved work is kept per graph; Back moves between graphs ------------------------


def test_unsaved_pins_survive_switching_graphs_and_back(
    page: Any, lab: LabServer, tmp_path: Path
) -> None:
    ct = json.loads((tmp_path / "graphs" / "ct-graph.json").read_text())
    upsert_graph_metadata(tmp_path / "graphs", ct["metadata"])  # list it in the selector
    open_lab(page, lab.url + "?slug=small")
    click_node(page, "0_0_1", ["Control"])
    click_node(page, "1_1_1", ["Control"])
    assert lab_state(page)["dirty"]
    page.select_option("#graph-select", "ct-graph")
    page.wait_for_function("window.__lab.state.slug === 'ct-graph'")
    assert lab_state(page)["pinned"] == ["0_5_1", "1_3_1"]  # its own, from its file
    page.select_option("#graph-select", "small")  # back through the selector
    page.wait_for_function("window.__lab.state.slug === 'small'")
    s = lab_state(page)
    assert s["pinned"] == ["0_0_1", "1_1_1"] and s["dirty"]
    assert "unsaved" in page.inner_text("#save-state")

    page.select_option("#graph-select", "ct-graph")
    page.wait_for_function("window.__lab.state.slug === 'ct-graph'")
    page.go_back()  # Back stays in the lab: the previous graph, its unsaved pins
    page.wait_for_function("window.__lab.state.slug === 'small'")
    assert lab_state(page)["pinned"] == ["0_0_1", "1_1_1"]
    assert page.url.startswith(lab.url)
    page.go_forward()
    page.wait_for_function("window.__lab.state.slug === 'ct-graph'")


def test_leaving_with_unsaved_changes_asks_first(page: Any, lab: LabServer) -> None:
    open_lab(page, lab.url + "?slug=small")
    click_node(page, "0_0_1", ["Control"])
    asked: list[str] = []

    def answer(dialog: Any) -> None:
        asked.append(dialog.type)
        dialog.dismiss()  # stay

    page.on("dialog", answer)
    try:
        page.goto("about:blank", timeout=3000)
    except Exception:  # noqa: BLE001 (the navigation was cancelled)
        pass
    assert asked == ["beforeunload"]
    assert lab_state(page)["pinned"] == ["0_0_1"]


# ---- item 11: a save that meets someone else's newer save merges both -------------------------


def post_save(url: str, slug: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        f"{url}save_graph/{slug}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def test_a_save_after_another_clients_save_merges_both_views(
    page: Any, lab: LabServer, tmp_path: Path
) -> None:
    open_lab(page, lab.url + "?slug=small")
    click_node(page, "0_0_1", ["Control"])
    click_node(page, "1_1_1", ["Control"])
    click_node(page, "0_4_2")
    page.fill("#label-input", "mine")
    page.press("#label-input", "Enter")
    key = page.evaluate("window.__lab.state.graph.byId.get('0_4_2').featureIndex")
    theirs = {
        "pinnedIds": ["1_2_2", "0_4_2"],
        "supernodes": [["theirs", "1_2_2", "0_4_2"]],
        "clerps": [[str(key), "their label"], ["999", "only theirs"]],
    }
    assert post_save(lab.url, "small", {"qParams": theirs, "version": 0})["version"] == 1

    page.click("#save")  # read at version 0: 409, merged, saved again on version 1
    page.wait_for_function("document.getElementById('save-state').textContent.startsWith('saved')")
    assert "merged" in page.inner_text("#save-state")
    saved = json.loads((tmp_path / "graphs" / "small.json").read_text())["qParams"]
    assert saved["version"] == 2
    assert set(saved["pinnedIds"]) == {"1_2_2", "0_4_2", "0_0_1", "1_1_1"}
    assert saved["supernodes"] == [["theirs", "1_2_2", "0_4_2"]]
    assert dict(saved["clerps"]) == {str(key): "mine", "999": "only theirs"}  # ours wins
    s = lab_state(page)
    assert set(s["pinned"]) == set(saved["pinnedIds"]) and not s["dirty"]
    assert s["supernodes"] == [["theirs", "1_2_2", "0_4_2"]]

    page.keyboard.press("Escape")
    click_node(page, "1_1_1", ["Control"])  # unpin, save again: no conflict this time
    page.click("#save")
    page.wait_for_function("document.getElementById('save-state').textContent === 'saved'")
    saved = json.loads((tmp_path / "graphs" / "small.json").read_text())["qParams"]
    assert saved["version"] == 3 and "1_1_1" not in saved["pinnedIds"]
