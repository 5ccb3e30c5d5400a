"""The heads view in a real browser on a tiny model: the grid fills in layer by layer, a clicked
head shows its attention heatmap and inspector, patching and path patching draw their charts,
the graph's prompt opens in the heads view, and a screenshot that is not blank."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from circuitlab.heads import LabModel
from circuitlab.models.tiny import tiny_model
from circuitlab.server import LabServer, start_server

from .conftest import open_lab, screenshot_colours


def heads(page: Any) -> dict[str, Any]:
    return page.evaluate(
        """() => { const h = window.__lab.heads; return {
            n_layers: h.start && h.start.n_layers, n_heads: h.start && h.start.n_heads,
            tokens: h.start && h.start.tokens, fillLog: h.fillLog, selected: h.selected,
            source: h.source, status: h.status }; }"""
    )


def analyse(page: Any, prompt: str) -> None:
    page.fill("#heads-prompt", prompt)
    page.click("#heads-go")
    page.wait_for_selector("body[data-heads-status='analysis-done']", timeout=60_000)


def test_heads_view_streams_the_grid_and_inspects_a_head(page: Any, tracing_lab: LabServer) -> None:
    open_lab(page, tracing_lab.url + "?slug=small")
    assert page.is_visible("#tabs")
    page.click("#tab-heads")
    assert page.is_visible("#heads-view") and not page.is_visible("#graph-pane")
    page.wait_for_function("location.search.includes('view=heads')")
    analyse(page, "the capital of France is")
    h = heads(page)
    n_layers, n_heads = h["n_layers"], h["n_heads"]
    assert h["tokens"][1:] == ["the", "capital", "of", "France", "is"]
    # one repaint per streamed layer: the grid filled in n_heads cells at a time
    assert h["fillLog"] == [n_heads * (i + 1) for i in range(n_layers)]
    assert page.locator("#heads-grid rect.hcell.filled").count() == n_layers * n_heads
    assert page.locator("#lens-table tr").count() == 1 + 1 + n_layers  # header, embed, layers

    page.click(f"#heads-grid rect.hcell[data-layer='{n_layers - 1}'][data-head='1']")
    assert heads(page)["selected"] == [n_layers - 1, 1]
    assert page.inner_text("#head-title") == f"Layer {n_layers - 1} · head 1"
    assert "DLA" in page.inner_text("#head-inspector")
    assert page.locator("#head-inspector .score-bar").count() == 4
    assert f"L{n_layers - 1}H1" in page.inner_text("#attn-title")
    attn = page.evaluate(
        """() => { const c = document.getElementById('attn');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let blue = 0; for (let i = 0; i < d.length; i += 4) if (d[i + 2] > d[i] + 40) blue++;
            return blue; }"""
    )
    assert attn > 100  # the heatmap has cells
    page.select_option("#heads-color", "dla")
    assert "raises the target" in page.inner_text("#heads-legend")

    png = page.screenshot()
    colours = screenshot_colours(page, png)
    assert colours["distinct"] > 50 and colours["ink"] > 0.01, colours
    shot = os.environ.get("CIRCUITLAB_HEADS_SCREENSHOT")
    if shot:
        Path(shot).write_bytes(png)


def test_patching_fills_the_bar_chart_and_heatmaps(page: Any, tracing_lab: LabServer) -> None:
    open_lab(page, tracing_lab.url + "?view=heads")
    assert page.is_visible("#heads-view")
    page.fill("#heads-prompt", "the capital of France")
    page.fill("#heads-corrupted", "the capital of Texas")
    page.fill("#heads-answer", "Paris")
    page.fill("#heads-wrong", "Austin")
    page.click("#heads-go")
    page.click("#heads-patch")  # queued behind the analysis
    page.wait_for_selector("body[data-heads-status='patching-done']", timeout=60_000)
    assert page.locator("#patch-bars tr").count() >= 2
    assert page.locator("#patching canvas[data-kind]").count() == 3  # heads, resid, mlp
    page.select_option("#heads-color", "recovery")
    page.locator("#patch-bars tr").first.click()
    assert "patch recovery" in page.inner_text("#head-inspector")


def path_chart(page: Any) -> dict[str, Any]:
    return page.evaluate(
        """() => { const c = document.querySelector('#patching canvas[data-path]');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let inked = 0; for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] < 600) inked++;
            const p = window.__lab.heads.path;
            return { rows: +c.dataset.rows, cols: +c.dataset.cols, inked,
                     cells: p.rows.flat().filter((v) => typeof v === 'number').length,
                     title: document.getElementById('path-title').textContent }; }"""
    )


def test_path_patching_draws_a_layers_by_heads_chart(page: Any, tracing_lab: LabServer) -> None:
    open_lab(page, tracing_lab.url + "?view=heads")
    page.fill("#heads-prompt", "the capital of France")
    page.fill("#heads-corrupted", "the capital of Texas")
    page.fill("#heads-answer", "Paris")
    page.fill("#heads-wrong", "Austin")
    page.click("#heads-go")
    page.click("#heads-path")  # queued behind the analysis
    page.wait_for_selector("body[data-heads-status='path_patching-done']", timeout=60_000)
    n_layers, n_heads = heads(page)["n_layers"], heads(page)["n_heads"]
    chart = path_chart(page)
    assert chart["title"] == "path patching: heads → logits"
    assert (chart["rows"], chart["cols"]) == (n_layers, n_heads)
    assert chart["cells"] == n_layers * n_heads and chart["inked"] > 100, chart
    assert page.locator("#path-bars tr").count() == min(10, n_layers * n_heads)

    # to the selected head's keys: senders at or after its layer score 0
    last = n_layers - 1
    page.click(f"#heads-grid rect.hcell[data-layer='{last}'][data-head='1']")
    page.select_option("#heads-path-inputs", "k")
    page.click("#heads-path-head")
    page.wait_for_function(
        """() => { const p = window.__lab.heads.path;
            return p && p.done === 'done' && p.start && p.start.receivers.includes('(k)'); }""",
        timeout=60_000,
    )
    chart = path_chart(page)
    assert chart["title"] == f"path patching: heads → L{last}H1 (k)"
    assert (chart["rows"], chart["cols"]) == (n_layers, n_heads)
    assert chart["cells"] == n_layers * n_heads
    rows = page.evaluate("window.__lab.heads.path.rows")
    assert all(v == 0 for v in rows[last])
    assert "path patching done" in page.inner_text("#heads-status")


def test_a_graphs_prompt_opens_in_the_heads_view(page: Any, tracing_lab: LabServer) -> None:
    open_lab(page, tracing_lab.url + "?slug=small")
    page.click("#graph-heads")
    page.wait_for_selector("body[data-heads-status='analysis-done']", timeout=60_000)
    h = heads(page)
    assert h["source"] == {"slug": "small"}
    assert h["tokens"][-2:] == ["capital", "of"]
    page.keyboard.press("h")  # back to the graph, same slug
    assert page.is_visible("#graph-pane")
    assert page.evaluate("window.__lab.state.slug") == "small"
    page.keyboard.press("h")
    page.click("#heads-graph-link")  # the analysis links back to its graph
    assert page.is_visible("#graph-pane") and "slug=small" in page.url


@pytest.fixture(scope="module")
def induction_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """A heads-only lab whose word-level tokenizer knows the induction preset's words."""
    from conftest import word_tokenizer  # pyright: ignore[reportAttributeAccessIssue]

    tok = word_tokenizer("The cat sat on the mat rug .".split())
    model = LabModel.wrap(tiny_model("llama", dtype=torch.float32), tok)
    with start_server(tmp_path_factory.mktemp("heads"), heads_models={"tiny": model}) as server:
        yield server


def test_presets_fill_the_prompts_and_show_their_circuit(
    page: Any, induction_lab: LabServer
) -> None:
    open_lab(page, induction_lab.url + "?view=heads")
    page.wait_for_selector("#heads-preset option[value='induction']", state="attached")
    page.select_option("#heads-preset", "induction")
    assert page.input_value("#heads-prompt") == "The cat sat on the mat. The cat sat on the"
    assert "rug." in page.input_value("#heads-corrupted")
    assert page.input_value("#heads-answer") == " mat"
    assert "induction head" in page.inner_text("#patching")
    page.wait_for_selector("body[data-heads-status='patching-done']", timeout=60_000)


def test_presets_the_model_cannot_run_are_offered_with_the_reason(
    page: Any, tracing_lab: LabServer
) -> None:
    """IOI on the tiny word-level tokenizer (no 'Mary', no 'John') is listed, disabled, with
    why; nothing runs and fails."""
    open_lab(page, tracing_lab.url + "?view=heads")
    ioi = page.locator("#heads-preset option[value='ioi']")
    ioi.wait_for(state="attached")
    assert ioi.is_disabled()
    assert "doesn't fit" in ioi.inner_text() and "'Mary'" in (ioi.get_attribute("title") or "")
    assert page.locator("#heads-preset option:not([disabled]):not([value=''])").count() == 0


def test_bad_input_is_reported_and_the_view_recovers(page: Any, tracing_lab: LabServer) -> None:
    open_lab(page, tracing_lab.url + "?view=heads")
    page.fill("#heads-prompt", "the capital of")
    page.fill("#heads-answer", "not one token")
    page.click("#heads-go")
    page.wait_for_selector("body[data-heads-status='analysis-failed']")
    assert "token" in page.inner_text("#heads-status")
    page.fill("#heads-answer", "")
    analyse(page, "the capital of")


def test_a_heads_view_url_is_shared_and_arrows_move_the_head(
    page: Any, tracing_lab: LabServer
) -> None:
    open_lab(page, tracing_lab.url + "?view=heads")
    page.fill("#heads-answer", "Paris")
    analyse(page, "the capital of France")
    page.click("#heads-grid rect.hcell[data-layer='1'][data-head='1']")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowUp")
    assert heads(page)["selected"] == [0, 0]
    page.keyboard.press("ArrowDown")
    page.wait_for_function("new URLSearchParams(location.search).get('head') === '1.0'")
    shared = page.url
    assert "headsPrompt=the+capital+of+France" in shared and "headsAnswer=Paris" in shared
    open_lab(page, shared)
    page.wait_for_selector("body[data-heads-status='analysis-done']", timeout=60_000)
    assert page.input_value("#heads-prompt") == "the capital of France"
    assert heads(page)["selected"] == [1, 0]
    assert page.inner_text("#head-title") == "Layer 1 · head 0"
