"""A lab served beyond loopback works in the browser from the URL it prints: the token's cookie
carries the page's own requests and websockets (docs/security.md)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from circuitlab.server import LabServer, Tracer, start_server
from circuitlab.server.running import lab_url
from server.helpers import small_graph
from server.test_security import machine_ip

from .conftest import lab_files, open_lab


@pytest.fixture
def remote_lab(tmp_path: Path) -> Iterator[tuple[LabServer, str]]:
    graphs, features = lab_files(tmp_path)
    tracer = Tracer({"m": object()}, graphs, run_fn=lambda *_: small_graph())
    ip = machine_ip()
    server = start_server(graphs, features, host=ip or "0.0.0.0", tracer=tracer)
    yield server, lab_url(ip or "127.0.0.1", server.port, server.token, "small")
    server.stop()


def test_the_printed_url_opens_a_working_lab(page: Any, remote_lab: tuple[LabServer, str]) -> None:
    server, url = remote_lab
    assert f"token={server.token}" in url
    bare = url.split("?")[0]
    assert page.goto(bare).status == 401  # without the token: nothing
    open_lab(page, url)
    assert page.evaluate("window.__lab.state.graph.nodes.length") > 0
    page.fill("#trace-prompt", "the capital of")  # a POST, then job updates over /api/ws
    page.click("#trace-go")
    page.wait_for_function("window.__lab.state.slug.startsWith('trace-')", timeout=30_000)
    page.wait_for_selector("#jobs .job-done")
    assert "token=" not in page.url  # the page's own URL state leaves it out
    page.goto(page.url)  # a reload: the cookie alone
    page.wait_for_selector("body[data-ready='1']")
    assert page.evaluate("window.__lab.state.slug").startswith("trace-")
