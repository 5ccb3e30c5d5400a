"""``graph.show()`` in a kernel of a real Jupyter server with jupyter-server-proxy, under a
JupyterHub-like ``base_url``: the iframe's URL goes through ``{base_url}proxy/{port}/``, and
chromium, holding only the Jupyter login, renders the graph through it and saves through it.

The notebook page itself (JupyterLab is not installed) is the cell's HTML output served at a
notebook URL of the Jupyter origin, as Jupyter's front end would show it there.
"""

from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from circuitlab.server.running import free_port

from .conftest import _missing

TESTS = Path(__file__).resolve().parent.parent
BASE_URL = "/user/ada/"
CELL = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
from server.helpers import small_graph
small_graph().show("nb")
"""


@dataclass
class Jupyter:
    url: str  # http://127.0.0.1:PORT/user/ada/
    token: str
    runtime: Path

    def api(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            text = r.read()
        return json.loads(text) if text else None


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jupyter]:
    for package in ("jupyter_server", "jupyter_server_proxy", "jupyter_client", "ipykernel"):
        if importlib.util.find_spec(package) is None:
            _missing(f"{package} is not installed (pip install -e '.[test]')")
    folder = tmp_path_factory.mktemp("jupyter")
    port, token = free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k != "JUPYTERHUB_SERVICE_PREFIX"}
    env["JUPYTER_RUNTIME_DIR"] = str(folder / "runtime")
    command = [
        *(sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root"),
        *(f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0"),
        *(f"--ServerApp.base_url={BASE_URL}", f"--ServerApp.root_dir={folder}"),
        f"--IdentityProvider.token={token}",
    ]
    log = (folder / "server.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Jupyter(f"http://127.0.0.1:{port}{BASE_URL}", token, folder / "runtime")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                server.api("GET", "api/status")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail((folder / "server.log").read_text()[-3000:])
                time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        process.wait(15)
        log.close()


def run_cell(jupyter: Jupyter, code: str) -> str:
    """Start a kernel through the server's API, run ``code`` in it and return the HTML of the
    cell's result (the kernel keeps running, with the lab server ``show`` started)."""
    from jupyter_client.blocking.client import BlockingKernelClient

    kernel = jupyter.api("POST", "api/kernels", {"name": "python3"})
    client = BlockingKernelClient(
        connection_file=str(jupyter.runtime / f"kernel-{kernel['id']}.json")
    )
    client.load_connection_file()
    client.start_channels()
    outputs: list[dict[str, Any]] = []
    try:
        client.wait_for_ready(timeout=60)
        client.execute_interactive(
            code, timeout=90, output_hook=lambda m: outputs.append(m), store_history=False
        )
    finally:
        client.stop_channels()
    for message in outputs:
        if message["msg_type"] == "error":
            pytest.fail("\n".join(message["content"]["traceback"]))
        if message["msg_type"] == "execute_result":
            return message["content"]["data"]["text/html"]
    pytest.fail(f"the cell returned nothing to show: {outputs}")


def test_show_renders_through_jupyter_server_proxy(page: Any, jupyter: Jupyter) -> None:
    output = run_cell(jupyter, CELL)
    found = re.search(r'<iframe src="([^"]+)"', output)
    assert found, output
    src = html.unescape(found.group(1))
    assert re.fullmatch(rf"{BASE_URL}proxy/\d+/\?slug=nb&token=[\w-]+", src), src

    page.goto(jupyter.url + f"api/status?token={jupyter.token}")  # the Jupyter login cookie
    notebook = jupyter.url + "notebooks/demo.ipynb"
    document = f"<!doctype html><title>demo</title><body>{output}</body>"
    page.route(notebook, lambda route: route.fulfill(body=document, content_type="text/html"))
    page.goto(notebook)
    frame = page.frame_locator("iframe")
    frame.locator("body[data-ready='1']").wait_for()
    lab = page.frames[1]
    assert lab.url.startswith(jupyter.url + "proxy/")
    slug, nodes = lab.evaluate(
        "() => [window.__lab.state.slug, window.__lab.state.graph.nodes.length]"
    )
    assert slug == "nb" and nodes > 0
    assert lab.evaluate("() => window.__lab.screenPos('1_1_1')") is not None

    pos = lab.evaluate("() => window.__lab.screenPos('1_1_1')")
    box = page.locator("iframe").bounding_box()
    page.keyboard.down("Control")
    page.mouse.click(box["x"] + pos["x"], box["y"] + pos["y"])
    page.keyboard.up("Control")
    lab.click("#save")  # a POST through the proxy: the Jupyter origin, the lab's cookie
    lab.wait_for_function("document.getElementById('save-state').textContent === 'saved'")
    saved = lab.evaluate("() => fetch('data/nb.json').then((r) => r.json())")
    assert saved["qParams"]["pinnedIds"] == ["1_1_1"]
