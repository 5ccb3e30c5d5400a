"""Browser fixtures: Debian's chromium driven by Playwright, and a lab server on a free port.

Chromium comes from apt (``apt-get install chromium chromium-driver``; ``.ci/run`` does it);
Playwright's own browser download is never used. Without chromium these tests skip locally and
fail under ``CI=true``, so CI cannot silently lose them.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from circuitlab.graph.export import create_graph_files
from circuitlab.server import LabServer, Tracer, start_server
from server.helpers import circuit_tracer_graph, feature_record, small_graph, write_feature_store

CHROMIUM = Path(os.environ.get("CIRCUITLAB_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def _missing(what: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI: {what}; the browser tests must run in CI (see .ci/run)")
    pytest.skip(f"{what} (apt-get install -y chromium chromium-driver)")


@pytest.fixture(scope="session")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not CHROMIUM.is_file():
        _missing(f"chromium not found at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[test]')")
        return
    profile = tempfile.mkdtemp(prefix="circuitlab-chromium-")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 800},
        )
        context.set_default_timeout(15_000)
        yield context
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser_context: Any) -> Iterator[Any]:
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    page.close()
    assert not errors, errors  # no uncaught script errors in any test


def lab_files(folder: Path) -> tuple[Path, Path]:
    """A graph folder (circuitlab + circuit-tracer graphs) and a dashboard store."""
    graphs = folder / "graphs"
    create_graph_files(small_graph(), "small", graphs, 1.0, 1.0)
    (graphs / "ct-graph.json").write_text(json.dumps(circuit_tracer_graph()))
    records = {0: {0: feature_record(0, 0), 4: feature_record(0, 4, "capital of")}}
    write_feature_store(folder / "tc", records, 8)
    return graphs, folder / "tc"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LabServer]:
    graphs, features = lab_files(tmp_path)
    server = start_server(graphs, features)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tracing_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    from conftest import build  # pyright: ignore[reportAttributeAccessIssue]  (tests/conftest.py)

    folder = tmp_path_factory.mktemp("tracing")
    graphs, features = lab_files(folder)
    tracer = Tracer({"tiny": build("llama")}, graphs)
    server = start_server(graphs, features, tracer=tracer)
    yield server
    server.stop()


def open_lab(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")


def click_node(page: Any, node_id: str, modifiers: list[str] | None = None) -> None:
    pos = page.evaluate("id => window.__lab.screenPos(id)", node_id)
    assert pos, f"node {node_id} is not drawn"
    for key in modifiers or []:
        page.keyboard.down(key)
    page.mouse.click(pos["x"], pos["y"])
    for key in modifiers or []:
        page.keyboard.up(key)


def screenshot_colours(page: Any, png: bytes) -> dict[str, float]:
    """Distinct colours and the share of inked (non-near-white) pixels of a PNG screenshot."""
    return page.evaluate(
        """async (b64) => {
            const img = new Image();
            img.src = "data:image/png;base64," + b64;
            await img.decode();
            const c = document.createElement("canvas");
            c.width = img.width; c.height = img.height;
            const ctx = c.getContext("2d");
            ctx.drawImage(img, 0, 0);
            const d = ctx.getImageData(0, 0, c.width, c.height).data;
            const seen = new Set(); let ink = 0;
            for (let i = 0; i < d.length; i += 4) {
                seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
                if (d[i] + d[i + 1] + d[i + 2] < 600) ink++;
            }
            return { distinct: seen.size, ink: ink / (d.length / 4) };
        }""",
        base64.b64encode(png).decode(),
    )
