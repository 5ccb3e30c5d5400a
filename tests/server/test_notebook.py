"""``show(graph)`` in notebooks: which route it takes (inline page, loopback, jupyter-server-proxy,
Colab, a template), the URLs it builds, and the guard of a server behind a proxy.

Colab cannot run here: its branch runs against a stand-in ``google.colab.output`` put under
``sys.modules`` for those tests only, whose ``eval_js`` answers ``proxyPort`` as Colab does.
"""

from __future__ import annotations

import json
import os
import sys
import types
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from circuitlab.server.inline_page import inline_page
from circuitlab.server.notebook import LabFrame, show, start_notebook_server, stop_all
from circuitlab.server.notebook_proxy import Route, choose_route, jupyter_base_url

from .helpers import feature_record, small_graph, write_feature_store

COLAB_URL = "https://abc123-{port}-colab.googleusercontent.com/"


@pytest.fixture(autouse=True)
def no_notebook_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No JupyterHub prefix and an empty Jupyter runtime folder (no server runs this kernel);
    every server a test starts is stopped after it."""
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX", raising=False)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    yield
    stop_all()


@pytest.fixture
def colab(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A stand-in for Colab's ``google.colab.output``; returns the scripts ``eval_js`` ran."""
    scripts: list[str] = []

    def eval_js(script: str, ignore_result: bool = False) -> str:
        scripts.append(script)
        port = script.split("(")[1].rstrip(")")
        return COLAB_URL.format(port=port).rstrip("/")  # Colab's answer has no trailing slash

    output = types.ModuleType("google.colab.output")
    output.eval_js = eval_js  # type: ignore[attr-defined]
    package = types.ModuleType("google.colab")
    package.output = output  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "google.colab", package)
    monkeypatch.setitem(sys.modules, "google.colab.output", output)
    return scripts


def test_without_a_route_show_gives_the_inline_page() -> None:
    frame = show(small_graph(), "nb")
    assert frame.inline and frame.src is None
    html = frame._repr_html_()
    assert html.startswith("<iframe srcdoc=") and 'sandbox="allow-scripts"' in html
    assert "<script" not in html  # all of the page is inside the escaped srcdoc attribute
    page = frame.srcdoc or ""
    assert '"data/nb.json"' in page and "the capital of" in page
    assert 'src="assets/' not in page and 'href="assets/' not in page  # nothing to fetch


def test_inline_page_keeps_graph_text_inside_its_script() -> None:
    graph = small_graph()
    graph.input_string = "</script><script>alert(1)</script><!--"
    page = inline_page(graph, "x")
    assert page.count("</script") == 3  # the embedded files, the fetch shim, the bundle
    assert "<!--" not in page


def test_inline_page_takes_labels_from_the_dashboards(tmp_path: Path) -> None:
    store = write_feature_store(tmp_path / "tc", {0: {4: feature_record(0, 4, "Paris-ish")}}, 8)
    assert "Paris-ish" not in (show(small_graph(), "nb", inline=True).srcdoc or "")
    frame = show(small_graph(), "nb", inline=True, features_dir=store)
    assert "Paris-ish" in (frame.srcdoc or "")


def test_inline_frame_saves_as_a_file(tmp_path: Path) -> None:
    frame = show(small_graph(), "nb", inline=True)
    saved = frame.save(tmp_path / "graph.html")
    assert saved.read_text(encoding="utf-8") == frame.srcdoc
    with pytest.raises(ValueError, match="only the inline page"):
        LabFrame("http://127.0.0.1:1/").save(tmp_path / "x.html")


def test_inline_false_serves_on_loopback_and_reuses_the_server(tmp_path: Path) -> None:
    frame = show(small_graph(), "nb", graph_file_dir=tmp_path, inline=False)
    src = frame.src or ""
    assert src.startswith("http://127.0.0.1:") and src.endswith("/?slug=nb")
    assert "<iframe" in frame._repr_html_()
    base = src.split("?")[0]
    with urllib.request.urlopen(base + "data/nb.json", timeout=10) as r:
        assert json.loads(r.read())["metadata"]["slug"] == "nb"
    again = small_graph().show("nb2", graph_file_dir=tmp_path, proxy="none")  # same server
    assert (again.src or "").split("?")[0] == base


def test_jupyterhub_prefix_routes_through_jupyter_server_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(jupyter-server-proxy is one of the test extras: installed, so ``auto`` takes it.)"""
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada/")
    route = choose_route("auto")
    assert route == Route("jupyter", "/user/ada/proxy/{port}/")
    assert route is not None and route.url(8123) == "/user/ada/proxy/8123/"


def test_base_url_comes_from_the_parent_jupyter_server(tmp_path: Path) -> None:
    assert jupyter_base_url() is None  # no server file: a kernel VS Code or a console started
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    (runtime / f"jpserver-{os.getppid()}.json").write_text(json.dumps({"base_url": "/lab/"}))
    assert jupyter_base_url() == "/lab/"
    assert choose_route("jupyter") == Route("jupyter", "/lab/proxy/{port}/")


def test_bad_proxy_choices_say_what_to_give() -> None:
    with pytest.raises(ValueError, match="one of auto, jupyter, colab, none"):
        choose_route("jupyterhub")
    with pytest.raises(ValueError, match="may name only"):
        choose_route("/p/{port}/{user}/")
    with pytest.raises(ValueError, match="absolute path"):
        choose_route("proxy/{port}/")
    with pytest.raises(RuntimeError, match=r"proxy='/user/NAME/proxy/\{port\}/'"):
        choose_route("jupyter")
    with pytest.raises(RuntimeError, match="Colab only"):
        choose_route("colab")
    with pytest.raises(ValueError, match="inline=True needs no proxy"):
        show(small_graph(), inline=True, proxy="none")


def test_in_colab_show_uses_the_kernel_port_proxy(colab: list[str], tmp_path: Path) -> None:
    frame = show(small_graph(), "nb", graph_file_dir=tmp_path)
    src = frame.src or ""
    port = int(colab[0].removeprefix("google.colab.kernel.proxyPort(").rstrip(")"))
    assert colab == [f"google.colab.kernel.proxyPort({port})"]
    assert src == COLAB_URL.format(port=port) + "?slug=nb"
    proxy_host = f"abc123-{port}-colab.googleusercontent.com"
    local = f"http://127.0.0.1:{port}/"
    with httpx.Client(base_url=local, timeout=10) as client:
        proxied = {"Host": proxy_host, "Origin": f"https://{proxy_host}"}
        assert client.get("data/nb.json", headers=proxied).status_code == 200
        other = {"Host": proxy_host, "Origin": "https://evil.example"}
        assert client.get("data/nb.json", headers=other).status_code == 403
        assert client.get("data/nb.json", headers={"Host": "evil.example"}).status_code == 403


def test_colab_comes_before_jupyter_in_auto(
    colab: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada/")
    assert choose_route("auto") == Route("colab")
    assert colab == []  # the proxy URL is asked for only once a port is chosen


def test_behind_a_proxy_the_lab_takes_its_host_with_the_token(tmp_path: Path) -> None:
    server, base = start_notebook_server(Route("template", "/user/ada/proxy/{port}/"), tmp_path)
    assert base == f"/user/ada/proxy/{server.port}/" and server.token
    ok = {"Host": "hub.example.org", "Origin": "https://hub.example.org"}
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}/", timeout=10) as client:
        assert client.get("api/info", headers=ok).status_code == 401  # no token
        context = f"/user/ada/proxy/{server.port}"
        first = client.get(
            "api/info",
            params={"token": server.token},
            headers={**ok, "X-Forwarded-Context": context},
        )
        assert first.status_code == 200
        cookie = first.headers["set-cookie"]
        assert f"Path={context}" in cookie and "HttpOnly" in cookie
        authed = {**ok, "Authorization": f"token {server.token}"}
        assert client.get("api/info", headers=authed).status_code == 200
        bad_origin = {**authed, "Origin": "https://evil.example"}
        assert client.get("api/info", headers=bad_origin).status_code == 403
        other_port = {**authed, "Origin": "https://hub.example.org:8443"}
        assert client.get("api/info", headers=other_port).status_code == 403


def test_a_directly_reached_lab_keeps_the_default_guard(tmp_path: Path) -> None:
    server, base = start_notebook_server(Route("local"), tmp_path)
    assert base == f"http://127.0.0.1:{server.port}/" and server.token is None
    with httpx.Client(base_url=base, timeout=10) as client:
        assert client.get("api/info").status_code == 200
        proxied = {"Host": "hub.example.org", "Origin": "https://hub.example.org"}
        assert client.get("api/info", headers=proxied).status_code == 403
