"""The feature card shows only the graph's own transcoder set's dashboards; the steer pane runs
the CLI's intervention modes and says which one a result used."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from circuitlab.server import LabServer, start_server

from .conftest import click_node, open_lab


@pytest.fixture(scope="module")
def two_set_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """Graphs ``ga`` (set a, which has a store) and ``gc`` (set c, which has none)."""
    from circuitlab.attribution import attribute
    from circuitlab.features.build import build_dashboards
    from circuitlab.graph.export import create_graph_files
    from server.test_dashboards import PROMPT, SETTINGS, _model, _texts

    root = tmp_path_factory.mktemp("two-sets")
    for name, seed in (("a", 1), ("c", 3)):
        model = _model(seed)
        if name == "a":
            build_dashboards(model, _texts(), root / "set_a", SETTINGS, verbose=False)
        create_graph_files(attribute(model, PROMPT), f"g{name}", root / "graphs", 0.9, 0.98)
    server = start_server(root / "graphs", [root / "set_a"])
    yield server
    server.stop()


def _first_feature(page: Any) -> str:
    return page.evaluate(
        "() => window.__lab.state.graph.nodes.filter(n => n.kind === 'feature' && window.__lab.screenPos(n.id))[0].id"
    )


def test_the_card_says_no_dashboard_for_another_transcoder_set(
    page: Any, two_set_lab: LabServer
) -> None:
    open_lab(page, two_set_lab.url + "?slug=ga")
    click_node(page, _first_feature(page))
    page.wait_for_selector("#feature #feature-stats")  # set a's own dashboard
    assert page.locator("#feature-no-store").count() == 0
    open_lab(page, two_set_lab.url + "?slug=gc")
    click_node(page, _first_feature(page))
    page.wait_for_selector("#feature #feature-no-store")
    assert "No dashboard for this transcoder set" in page.inner_text("#feature")
    assert page.locator("#feature #feature-stats").count() == 0


def test_a_store_of_unknown_set_is_shown_with_a_note(page: Any, lab: LabServer) -> None:
    open_lab(page, lab.url + "?slug=small")  # a graph and a store that record no set
    click_node(page, "0_4_2")
    page.wait_for_selector("#feature .example")
    assert "unknown transcoder set" in page.inner_text("#feature-store-note")


def test_the_steer_pane_offers_the_cli_modes_and_names_the_one_used(
    page: Any, tracing_lab: LabServer
) -> None:
    open_lab(page, tracing_lab.url + "?slug=small")
    modes = page.eval_on_selector_all("#steer-mode option", "os => os.map(o => o.value)")
    assert modes == ["iterative", "iterative-live", "constrained", "direct"]
    for node_id in ("0_4_2", "0_0_1"):  # two layer-0 features of the 2-layer model
        click_node(page, node_id, ["Control"])
    page.fill("#steer-tokens", "2")
    page.click("#steer-go")
    page.wait_for_selector("#steer-mode-used")
    assert "iterative patching, attention frozen" in page.inner_text("#steer-mode-used")
    assert not page.is_visible("#steer-layers")
    page.select_option("#steer-mode", "constrained")
    assert page.is_visible("#steer-layers")  # left empty: the pinned nodes' layers
    page.click("#steer-go")
    page.wait_for_function(
        "document.getElementById('steer-mode-used')?.innerText.includes('constrained to layer 0,')"
    )
    page.select_option("#steer-mode", "direct")
    page.click("#steer-go")
    page.wait_for_function(
        "document.getElementById('steer-mode-used')?.innerText.includes('direct effects')"
    )
    assert page.locator("#steer-result .steer-col").count() == 2
