"""The lab page in a real browser: inspect, pin, group, label, save, reload; dashboards;
circuit-tracer files; a screenshot that is not blank."""

from __future__ import annotations

from typing import Any

from circuitlab.server import LabServer

from .conftest import click_node, open_lab, screenshot_colours


def state(page: Any) -> dict[str, Any]:
    return page.evaluate(
        """() => { const s = window.__lab.state; return {
            clicked: s.clickedId, pinned: [...s.pinned], supernodes: s.supernodes,
            clerps: [...s.clerps.entries()], dirty: s.dirty }; }"""
    )


def test_annotations_survive_save_and_reload(page: Any, lab: LabServer) -> None:
    open_lab(page, lab.url + "?slug=small")
    click_node(page, "1_1_1")
    assert "says capital" in page.inner_text("#inspector-title")
    assert page.locator("#inspector tr.link-row").count() >= 2  # inputs and outputs listed
    click_node(page, "0_0_1", ["Control"])
    click_node(page, "1_1_1", ["Control"])
    click_node(page, "0_4_2", ["Control"])
    assert state(page)["pinned"] == ["0_0_1", "1_1_1", "0_4_2"]
    assert page.locator("#subgraph .sg-node").count() == 3

    page.keyboard.down("g")
    page.click('#subgraph .sg-node[data-key="0_0_1"]')
    page.click('#subgraph .sg-node[data-key="1_1_1"]')
    page.keyboard.up("g")
    assert state(page)["supernodes"] == [["group 1", "0_0_1", "1_1_1"]]
    assert page.locator("#subgraph .sg-node.super").count() == 1

    page.fill("input.sn-label", "capital circuit")
    page.press("input.sn-label", "Enter")
    click_node(page, "0_4_2")
    page.fill("#label-input", "France-ish")
    page.press("#label-input", "Enter")
    assert state(page)["dirty"]
    page.click("#save")
    page.wait_for_function("document.getElementById('save-state').textContent === 'saved'")

    open_lab(page, lab.url + "?slug=small")  # no state in the URL: it comes from the file
    s = state(page)
    assert s["pinned"] == ["0_0_1", "1_1_1", "0_4_2"]
    assert s["supernodes"] == [["capital circuit", "0_0_1", "1_1_1"]]
    assert ["3", "France-ish"] in s["clerps"] or any(v == "France-ish" for _, v in s["clerps"])
    assert s["clicked"] == "0_4_2"
    assert "capital circuit" in page.text_content("#subgraph")
    assert "France-ish" in page.text_content("#subgraph")


def test_url_state_restores_a_shared_view(page: Any, lab: LabServer) -> None:
    open_lab(
        page, lab.url + "?slug=small&clickedId=1_2_2&pinnedIds=1_2_2,0_4_2&pruningThreshold=0.5"
    )
    s = state(page)
    assert s["clicked"] == "1_2_2" and s["pinned"] == ["1_2_2", "0_4_2"]
    click_node(page, "E_3_1")  # tokens are never pruned
    page.wait_for_function("location.search.includes('clickedId=E_3_1')")


def test_feature_card_shows_the_dashboard(page: Any, lab: LabServer) -> None:
    open_lab(page, lab.url + "?slug=small")
    click_node(page, "0_4_2")
    page.wait_for_selector("#feature .example")
    card = page.inner_text("#feature")
    assert "Paris" in card and "1.23%" in card  # top logits, frequency
    assert page.locator("#feature .tok.peak").count() == 1  # the highlighted token
    assert page.locator("#feature-histogram rect").count() == 4
    click_node(page, "1_2_2")  # no record for this one
    page.wait_for_function("document.getElementById('feature').innerText.includes('No dashboard')")


def test_circuit_tracer_graph_files_open(page: Any, lab: LabServer) -> None:
    open_lab(page, lab.url + "?slug=ct-graph")
    s = state(page)
    assert s["pinned"] == ["0_5_1", "1_3_1"]  # raw URL strings in qParams
    assert s["supernodes"] == [["capital", "0_5_1", "1_3_1"]]
    click_node(page, "3_9_1")
    assert 'Output " Paris"' in page.inner_text("#inspector-title")


def test_pruning_slider_hides_nodes(page: Any, lab: LabServer) -> None:
    open_lab(page, lab.url + "?slug=small")
    visible = "() => document.getElementById('counts').textContent"
    before = page.evaluate(visible)
    page.keyboard.press("[")
    for _ in range(20):
        page.keyboard.press("[")
    after = page.evaluate(visible)
    assert before != after and int(after.split("/")[0]) < int(before.split("/")[0])


def test_screenshot_is_not_blank(page: Any, lab: LabServer) -> None:
    open_lab(page, lab.url + "?slug=small")
    click_node(page, "1_1_1")
    png = page.screenshot(clip={"x": 0, "y": 0, "width": 900, "height": 500})
    colours = screenshot_colours(page, png)
    assert colours["distinct"] > 50 and colours["ink"] > 0.01, colours


def test_wheel_zooms_drag_pans_and_0_resets(page: Any, lab: LabServer) -> None:
    open_lab(page, lab.url + "?slug=small")
    before = page.evaluate("id => window.__lab.screenPos(id)", "1_1_1")
    page.mouse.move(before["x"], before["y"])
    page.mouse.wheel(0, -400)
    page.wait_for_function("window.__lab.zoom().k > 1.5")
    after = page.evaluate("id => window.__lab.screenPos(id)", "1_1_1")
    assert abs(after["x"] - before["x"]) < 2 and abs(after["y"] - before["y"]) < 2  # zoom at cursor
    click_node(page, "1_1_1")  # nodes are still hit where they are drawn
    assert state(page)["clicked"] == "1_1_1"
    zoom = page.evaluate("window.__lab.zoom()")
    page.mouse.move(after["x"] + 30, after["y"] + 30)
    page.mouse.down()
    page.mouse.move(after["x"] - 20, after["y"] + 10, steps=5)
    page.mouse.up()
    panned = page.evaluate("window.__lab.zoom()")
    assert panned["x"] < zoom["x"] and panned["k"] == zoom["k"]
    assert state(page)["clicked"] == "1_1_1"  # the end of a drag is not a click
    page.keyboard.press("0")
    page.wait_for_function("window.__lab.zoom().k === 1 && window.__lab.zoom().x === 0")
    assert page.evaluate("id => window.__lab.screenPos(id)", "1_1_1") == before
