"""The lab's guard against other sites and other machines, tested on the real server (uvicorn in
a thread, reached over TCP with httpx and the ``websockets`` client): ``Origin: null`` and
foreign origins, the wrong scheme, DNS rebinding, a non-loopback bind with and without its
token; and error answers that never show the server's file paths. See docs/security.md."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from circuitlab.cli import main
from circuitlab.graph.export import create_graph_files
from circuitlab.server import LabServer, Tracer, start_server

from .helpers import small_graph

WEBSOCKETS = ("/api/ws", "/api/heads/ws")


def machine_ip() -> str | None:
    """This machine's non-loopback IPv4 address (reachable from itself), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.254.254.254", 9))  # nothing is sent: this only picks a route
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") or ip == "0.0.0.0" else ip


def lab(folder: Path, host: str = "127.0.0.1", **kwargs: Any) -> LabServer:
    """A lab that traces (``/api/ws``) and has a heads model (``/api/heads/ws``); its model is
    never run here: the checks happen before any request reaches it."""
    create_graph_files(small_graph(), "small", folder, 1.0, 1.0)
    tracer = Tracer({"m": object()}, folder, run_fn=lambda *_: small_graph())
    return start_server(folder, host=host, tracer=tracer, heads_models={"m": object()}, **kwargs)


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LabServer]:
    with lab(tmp_path / "graphs") as server:
        yield server


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[tuple[LabServer, str]]:
    """A lab bound beyond loopback (this machine's IP, else 0.0.0.0) and the address to reach
    it on."""
    ip = machine_ip()
    with lab(tmp_path / "graphs", host=ip or "0.0.0.0") as server:
        yield server, ip or "127.0.0.1"


def http(
    addr: str, port: int, method: str, path: str, headers: dict[str, str] | None = None, **kw: Any
) -> httpx.Response:
    with httpx.Client(trust_env=False, timeout=10) as c:
        return c.request(method, f"http://{addr}:{port}{path}", headers=headers, **kw)


def ws_status(addr: str, port: int, path: str, host: str | None = None, **kw: Any) -> int:
    """101 when the websocket opens, else the HTTP status of the refused handshake.

    ``host`` replaces the ``Host`` header (the socket still goes to ``addr``)."""
    sock = socket.create_connection((addr, port), timeout=10)
    try:
        with connect(f"ws://{host or f'{addr}:{port}'}{path}", sock=sock, proxy=None, **kw) as ws:
            if path == "/api/ws":
                assert json.loads(ws.recv(timeout=10))["type"] == "jobs"
            return 101
    except InvalidStatus as e:
        return e.response.status_code
    finally:
        sock.close()


def save(addr: str, port: int, headers: dict[str, str]) -> httpx.Response:
    return http(addr, port, "POST", "/save_graph/small", headers, json={"qParams": {}})


def foreign_origins(port: int) -> list[str]:
    return [
        "null",  # a sandboxed iframe, a file: page
        "http://evil.example",
        f"http://evil.example:{port}",
        f"https://127.0.0.1:{port}",  # the wrong scheme
        f"http://127.0.0.1:{port + 1}",  # another port of this machine
        f"http://127.0.0.1:{port}.evil.example",
        "garbage",
    ]


# ---- origins ------------------------------------------------------------------------------


def test_foreign_and_null_origins_are_refused_over_http(local: LabServer) -> None:
    port = local.port
    for origin in foreign_origins(port):
        assert http("127.0.0.1", port, "GET", "/api/jobs", {"Origin": origin}).status_code == 403
        assert save("127.0.0.1", port, {"Origin": origin}).status_code == 403, origin
    own = f"http://127.0.0.1:{port}"
    assert http("127.0.0.1", port, "GET", "/api/jobs", {"Origin": own}).status_code == 200
    assert save("127.0.0.1", port, {"Origin": own}).status_code == 200


@pytest.mark.parametrize("path", WEBSOCKETS)
def test_foreign_and_null_origins_are_refused_over_websockets(local: LabServer, path: str) -> None:
    port = local.port
    for origin in foreign_origins(port):
        assert ws_status("127.0.0.1", port, path, origin=origin) == 403, origin
    assert ws_status("127.0.0.1", port, path, origin=f"http://127.0.0.1:{port}") == 101
    assert ws_status("127.0.0.1", port, path) == 101  # a program, not a page: no Origin


# ---- DNS rebinding ------------------------------------------------------------------------


def test_dns_rebinding_is_refused_on_loopback(local: LabServer) -> None:
    port = local.port
    for host in ("evil.example", f"evil.example:{port}", "testserver", "127.0.0.1.evil.example"):
        assert http("127.0.0.1", port, "GET", "/", {"Host": host}).status_code == 403, host
        assert http("127.0.0.1", port, "GET", "/data/small.json", {"Host": host}).status_code == 403
        for path in WEBSOCKETS:
            assert ws_status("127.0.0.1", port, path, host=host) == 403, (host, path)
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert http("127.0.0.1", port, "GET", "/api/info", {"Host": host}).status_code == 200


def test_dns_rebinding_is_refused_beyond_loopback(remote: tuple[LabServer, str]) -> None:
    server, addr = remote
    port, auth = server.port, {"Authorization": f"token {getattr(server, 'token', None)}"}
    for host in ("evil.example", f"evil.example:{port}"):
        # even with the token (a rebound page never has it, but the Host check stands alone)
        r = http(addr, port, "GET", "/api/info", {"Host": host, **auth})
        assert r.status_code == 403, host
        for path in WEBSOCKETS:
            assert ws_status(addr, port, path, host=host, additional_headers=auth) == 403
    assert http(addr, port, "GET", "/api/info", auth).status_code == 200


# ---- the token beyond loopback -------------------------------------------------------------


def test_a_non_loopback_bind_refuses_requests_without_its_token(
    remote: tuple[LabServer, str],
) -> None:
    server, addr = remote
    port = server.port
    for path in ("/", "/data/graph-metadata.json", "/data/small.json", "/api/jobs", "/api/info"):
        assert http(addr, port, "GET", path).status_code == 401, path
        assert http(addr, port, "GET", f"{path}?token=wrong-token").status_code == 401
        assert http(addr, port, "GET", path, {"Authorization": "token nope"}).status_code == 401
    own = {"Origin": f"http://{addr}:{port}"}
    assert save(addr, port, own).status_code == 401
    for path in WEBSOCKETS:
        assert ws_status(addr, port, path, origin=own["Origin"]) == 403
        assert ws_status(addr, port, f"{path}?token=wrong-token") == 403
    token = server.token  # made at start and carried in the URL to open
    assert token and len(token) >= 32 and server.url.endswith(f"/?token={token}")


def test_the_token_opens_the_page_and_its_cookie_carries_it(
    remote: tuple[LabServer, str],
) -> None:
    server, addr = remote
    port, token = server.port, getattr(server, "token", None)
    assert token, "a lab bound beyond loopback has a token"
    page = http(addr, port, "GET", f"/?token={token}")
    assert page.status_code == 200 and "<html" in page.text.lower()
    cookie = page.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    name_value = cookie.split(";")[0]
    assert name_value.endswith(f"={token}")
    # the page's own requests: same origin, the cookie and no token in the URL
    same = {"Origin": f"http://{addr}:{port}", "Cookie": name_value}
    assert http(addr, port, "GET", "/data/small.json", same).status_code == 200
    assert save(addr, port, same).status_code == 200
    for path in WEBSOCKETS:
        cookie_only = {"Cookie": name_value}
        assert (
            ws_status(addr, port, path, origin=same["Origin"], additional_headers=cookie_only)
            == 101
        )
        assert ws_status(addr, port, f"{path}?token={token}") == 101
    # programs: the header
    auth = {"Authorization": f"token {token}"}
    assert http(addr, port, "GET", "/api/jobs", auth).status_code == 200
    # the token never makes another origin acceptable
    assert save(addr, port, {"Origin": "null", "Cookie": name_value}).status_code == 403
    cookie_only = {"Cookie": name_value}
    assert ws_status(addr, port, "/api/ws", origin="null", additional_headers=cookie_only) == 403


def test_serving_beyond_loopback_without_a_token_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = main(["serve", "--graph_file_dir", str(tmp_path), "--host", "0.0.0.0", "--token", ""])
    assert code == 2
    err = capsys.readouterr().err
    assert "without a token" in err and "127.0.0.1" in err
    with pytest.raises(ValueError, match="without a token"):
        start_server(tmp_path, host="0.0.0.0", token="")
    for bad in ("short", "has space;and=more"):  # too short; not safe in a cookie or URL
        assert main(["serve", "--graph_file_dir", str(tmp_path), "--token", bad]) == 2
        assert "at least 8 characters" in capsys.readouterr().err
    # without --token one is made and printed in the URL to open
    import circuitlab.server.running as running

    monkeypatch.delenv("CIRCUITLAB_TOKEN", raising=False)
    monkeypatch.setattr(running.uvicorn, "run", lambda *a, **k: None)
    assert main(["serve", "--graph_file_dir", str(tmp_path), "--host", "0.0.0.0"]) == 0
    out = capsys.readouterr().out
    assert "?token=" in out and ":8041/" in out


# ---- error answers -------------------------------------------------------------------------


def test_error_answers_do_not_show_the_servers_paths(tmp_path: Path) -> None:
    folder = tmp_path / "secret-place" / "graphs"
    create_graph_files(small_graph(), "small", folder, 1.0, 1.0)
    (folder / "small.safetensors").write_bytes(b"not a graph")  # a broken graph beside its JSON

    def failing_run(*_: Any) -> Any:
        return (folder / "weights.bin").read_bytes()  # FileNotFoundError naming the full path

    tracer = Tracer({"m": object()}, folder, run_fn=failing_run)
    with start_server(folder, tracer=tracer, heads_models={"m": object()}) as server:
        base = f"http://127.0.0.1:{server.port}"
        with httpx.Client(trust_env=False, timeout=10) as c:
            steer = c.post(f"{base}/api/steer", json={"slug": "small", "node_ids": ["0_0_1"]})
            assert steer.status_code == 400 and "small.safetensors" in steer.text
            job = c.post(f"{base}/api/trace", json={"prompt": "hi", "slug": "t"}).json()["job"]
            deadline = time.monotonic() + 20
            while (failed := c.get(f"{base}/api/jobs").json()["jobs"])[0]["status"] != "failed":
                assert time.monotonic() < deadline, failed
                time.sleep(0.05)
        assert failed[0]["id"] == job["id"] and "weights.bin" in failed[0]["error"]
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        with connect(f"ws://127.0.0.1:{server.port}/api/heads/ws", sock=sock, proxy=None) as ws:
            ws.send('{"type": "analysis", "slug": "small"}')
            while (end := json.loads(ws.recv(timeout=10)))["type"] != "end":
                pass
        assert end["status"] == "failed" and "small.safetensors" in end["error"]
    answers = [steer.text, json.dumps(failed), json.dumps(end)]
    for text in answers:
        assert str(tmp_path) not in text and "secret-place" not in text, text
