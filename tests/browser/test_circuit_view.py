"""The circuit view in a real browser: a graph file with circuit_suggestions opens on its
reduced circuit; groups split and collapse in place, the slider cuts the hierarchy, picked
groups merge; an accepted, renamed suggestion is saved as a supernode and comes back on reload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from circuitlab.graph.export import create_graph_files
from circuitlab.server import LabServer, start_server
from server.helpers import small_graph

from .conftest import open_lab

FEATURES = ["0_0_1", "0_4_2", "1_1_1", "1_2_2"]  # small_graph's four features


@pytest.fixture
def circuit_lab(tmp_path: Path) -> Any:
    create_graph_files(small_graph(), "small", tmp_path, 1.0, 1.0, suggestions=True)
    create_graph_files(small_graph(), "plain", tmp_path, 1.0, 1.0)
    server = start_server(tmp_path)
    yield server
    server.stop()


def rows(page: Any) -> list[dict[str, Any]]:
    return page.evaluate(
        """() => [...document.querySelectorAll('#circuit-list .cv-row')].map((r) => ({
            key: r.dataset.key, label: r.querySelector('input.cv-label').value,
            accepted: r.classList.contains('accepted'),
            n: Number(r.querySelector('span.muted').textContent) }))"""
    )


def set_groups(page: Any, k: int) -> None:
    page.eval_on_selector(
        "#cv-groups",
        "(s, k) => { s.value = String(k); s.dispatchEvent(new Event('change')); }",
        k,
    )


def test_the_circuit_opens_first_and_expands_in_place(page: Any, circuit_lab: LabServer) -> None:
    open_lab(page, circuit_lab.url + "?slug=small")
    assert page.is_visible("#circuit") and page.inner_text("#circuit-toggle") == "full graph"
    assert page.locator("#circuit-draw g.cv-box.token").count() >= 1
    assert page.locator("#circuit-draw g.cv-box.logit").count() == 2
    set_groups(page, 1)
    assert [r["n"] for r in rows(page)] == [4]
    assert page.locator("#circuit-draw g.cv-box.group").count() == 1
    page.click("#circuit-list .cv-row button.cv-split")
    after = rows(page)
    assert len(after) == 2 and sum(r["n"] for r in after) == 4
    assert page.locator("#circuit-draw g.cv-box.group").count() == 2
    assert page.locator("#circuit-draw .cv-links line").count() >= 1  # summed links drawn
    splittable = page.locator("#circuit-list .cv-row:has(button.cv-split)").first
    key = splittable.get_attribute("data-key")
    splittable.locator("button.cv-split").click()  # a second level, in that group's place
    assert len(rows(page)) == 3 and key not in [r["key"] for r in rows(page)]
    page.locator("#circuit-list button.cv-collapse").first.click()  # back one level
    assert [r["key"] for r in rows(page)] == [r["key"] for r in after]
    page.locator("#circuit-list button.cv-collapse").first.click()
    assert [r["n"] for r in rows(page)] == [4]  # back to the one group
    page.click("#circuit-draw g.cv-box.group text.cv-glyph")  # ▸ on the box itself
    assert len(rows(page)) == 2 and page.locator("#circuit-draw g.cv-box.group").count() == 2
    set_groups(page, 4)
    assert [r["n"] for r in rows(page)] == [1, 1, 1, 1]
    page.click("#circuit-list .cv-row:nth-child(2) input.cv-pick")
    page.click("#circuit-list .cv-row:nth-child(3) input.cv-pick")
    page.click("#cv-merge")
    assert sorted(r["n"] for r in rows(page)) == [1, 1, 2]
    page.click("#circuit-toggle")
    assert not page.is_visible("#circuit") and page.is_visible("#overlay")


def test_accepted_renamed_suggestion_is_saved_and_restored(
    page: Any, circuit_lab: LabServer
) -> None:
    open_lab(page, circuit_lab.url + "?slug=small")
    set_groups(page, 2)
    first = rows(page)[0]
    assert first["label"].startswith("auto: ") and not first["accepted"]
    page.click("#circuit-list .cv-row:nth-child(2) button.cv-accept")
    saved = page.evaluate("window.__lab.state.supernodes")
    assert len(saved) == 1 and saved[0][0] == first["label"] and len(saved[0]) == first["n"] + 1
    assert set(saved[0][1:]) <= set(FEATURES)
    assert page.evaluate("window.__lab.state.pinned") == saved[0][1:]
    page.fill("#circuit-list .cv-row:nth-child(2) input.cv-label", "state features")
    page.press("#circuit-list .cv-row:nth-child(2) input.cv-label", "Enter")
    assert page.evaluate("window.__lab.state.supernodes")[0][0] == "state features"
    assert rows(page)[0]["accepted"] and rows(page)[0]["label"] == "state features"
    page.wait_for_function(
        "(new URLSearchParams(location.search).get('supernodes') || '').includes('state features')"
    )
    page.click("#save")
    page.wait_for_function("document.getElementById('save-state').textContent === 'saved'")

    open_lab(page, circuit_lab.url + "?slug=small")  # the view comes from the file
    set_groups(page, 2)
    again = rows(page)[0]
    assert again["accepted"] and again["label"] == "state features" and again["n"] == first["n"]
    assert page.locator("#circuit-draw g.cv-box.group.accepted").count() == 1
    assert "state features" in page.text_content("#subgraph")  # a supernode like any other


def test_graphs_without_suggestions_show_the_graph(page: Any, circuit_lab: LabServer) -> None:
    open_lab(page, circuit_lab.url + "?slug=plain")
    assert page.is_hidden("#circuit") and page.is_hidden("#circuit-toggle")
