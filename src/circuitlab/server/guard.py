"""Who may talk to the lab, and what its error answers may say (docs/security.md).

Every HTTP request and websocket handshake passes ``Guard.check``:

* **Host** (DNS rebinding): the ``Host`` header must name an allowed host (loopback names for a
  loopback bind; the bound address and ``--allow-host`` names otherwise) or the very address
  the connection arrived on (an IP literal, which no other site's page can share an origin with).
* **Origin** (other sites' pages): when present it must be this server itself, scheme, host and
  port: ``null`` (sandboxed iframes, ``file:`` pages) and every other origin are refused. Two
  additions for a lab a notebook shows through a proxy (``server/notebook.py``): ``origins``
  the guard names outright (Colab's proxy page), and, when any ``Host`` is allowed (which needs
  the token), an origin naming the same host and port as ``Host`` under its own scheme (a proxy
  that ends TLS forwards an ``https`` page's requests over ``http``).
* **Token** (beyond loopback): ``?token=``, ``Authorization: token ...`` (or ``Bearer``) or the
  cookie this server sets when the page is first opened with its token (``HttpOnly``,
  ``SameSite=Strict``), compared in constant time.

``public_text`` keeps the server's file paths out of error answers.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from starlette.requests import HTTPConnection
from starlette.responses import Response

from circuitlab.server.files import HTTPProblem

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
TOKEN_ENV = "CIRCUITLAB_TOKEN"
_DEFAULT_PORT = {"http": 80, "https": 443}
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~-]{8,}")
_COOKIE_PATH = re.compile(r"(/[A-Za-z0-9._~%@+-]+)+")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    """``0.0.0.0`` / ``::`` (and the empty host): every interface of the machine."""
    return host.strip().strip("[]") in ("", "0.0.0.0", "::")


def new_token() -> str:
    """A fresh secret for a lab served beyond loopback."""
    return secrets.token_urlsafe(32)


def check_token(token: str) -> str:
    """``token`` if it can be one: 8 or more of ``A-Z a-z 0-9 . _ ~ -`` (safe unquoted in URLs
    and cookies alike); else ``ValueError``."""
    if not _TOKEN_CHARS.fullmatch(token):
        raise ValueError(
            "a token needs at least 8 characters, each a letter, digit or one of . _ ~ -"
        )
    return token


@dataclass(frozen=True)
class Guard:
    """The checks one app applies: allowed ``Host`` names, an optional token, other origins."""

    hosts: frozenset[str] | None = frozenset(LOOPBACK_HOSTS)  # None: any name (token required)
    token: str | None = None
    # (scheme, host, port) of pages let in besides the server's own (a notebook proxy's page)
    origins: frozenset[tuple[str, str, int | None]] = frozenset()

    def __post_init__(self) -> None:
        if self.hosts is None and not self.token:
            raise ValueError("allowing any Host name (allowed_hosts=None) needs a token")
        if self.token is not None:
            check_token(self.token)

    @classmethod
    def make(
        cls, hosts: Iterable[str] | None, token: str | None, origins: Iterable[str] = ()
    ) -> Guard:
        """``origins``: pages (``scheme://host[:port]``) allowed besides the server's own."""
        names = None if hosts is None else frozenset(_hostname(h) for h in hosts)
        keys = set()
        for origin in origins:
            key = _origin_key(origin)
            if key is None:
                raise ValueError(f"{origin!r} is not an origin: give scheme://host[:port]")
            keys.add(key)
        return cls(names, token or None, frozenset(keys))

    @property
    def cookie_name(self) -> str:
        """Per token, so two labs on one machine (cookies ignore ports) keep their own."""
        digest = hashlib.sha256((self.token or "").encode()).hexdigest()[:12]
        return f"circuitlab-token-{digest}"

    def check(self, conn: HTTPConnection) -> HTTPProblem | None:
        """None when ``conn`` (a request or a websocket handshake) may proceed."""
        problem = check_host_and_origin(conn.headers, self.hosts, conn.scope, self.origins)
        return problem or self.check_token(conn)

    def check_token(self, conn: HTTPConnection) -> HTTPProblem | None:
        if self.token is None:
            return None
        given = self.token_given(conn)
        if given is not None and secrets.compare_digest(given.encode(), self.token.encode()):
            return None
        return HTTPProblem(
            401,
            "this lab needs its token: open the URL the server printed at start "
            "(http://HOST:PORT/?token=...) or send 'Authorization: token ...'",
        )

    def token_given(self, conn: HTTPConnection) -> str | None:
        auth = conn.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() in ("token", "bearer") and value.strip():
            return value.strip()
        return conn.query_params.get("token") or conn.cookies.get(self.cookie_name)

    def remember(self, conn: HTTPConnection, response: Response) -> None:
        """After a good ``?token=``, a cookie so the page's own requests carry it."""
        if self.token is None or "token" not in conn.query_params:
            return
        if conn.cookies.get(self.cookie_name) == self.token:
            return
        response.set_cookie(
            self.cookie_name,
            self.token,
            httponly=True,
            samesite="strict",
            secure=conn.url.scheme == "https",
            path=self.cookie_path(conn),
        )

    def cookie_path(self, conn: HTTPConnection) -> str:
        """``/``; behind jupyter-server-proxy (any ``Host``) the prefix it forwards the lab
        under (``X-Forwarded-Context: /user/NAME/proxy/PORT``), so the cookie stays with this
        lab instead of going to every path of the Jupyter server's origin."""
        prefix = conn.headers.get("x-forwarded-context", "") if self.hosts is None else ""
        return prefix if _COOKIE_PATH.fullmatch(prefix) else "/"


def check_host_and_origin(
    headers: Any,
    hosts: frozenset[str] | set[str] | None,
    scope: Any = None,
    origins: Iterable[tuple[str, str, int | None]] = (),
) -> HTTPProblem | None:
    """None when the ``Host`` is allowed and any ``Origin`` is this same server or one of
    ``origins`` (``(scheme, host, port)``).

    ``scope`` (the ASGI scope) gives the scheme served and the address the connection arrived
    on; without it the scheme is taken to be ``http``. With ``hosts=None`` (any name: a lab
    behind a proxy, token required) the origin's own scheme is used, since the proxy may have
    ended TLS: its host and port must still be the ``Host``'s.
    """
    scope = scope or {}
    host = headers.get("host", "")
    own = _split(f"//{host}")
    if own is None or not own.hostname:
        return HTTPProblem(400, "a Host header is needed")
    name = own.hostname
    if hosts is not None and name not in hosts and not _arrived_on(name, scope):
        return HTTPProblem(403, f"host {host!r} is not allowed (DNS rebinding guard)")
    origin = headers.get("origin")
    if origin is None:
        return None  # not sent by a browser page (or a same-origin GET)
    key = _origin_key(origin)
    if key is not None and key in origins:
        return None
    scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
    if hosts is None and key is not None:
        scheme = key[0]
    if key != (scheme, name, _port(own, scheme)):
        return HTTPProblem(403, f"cross-origin request from {origin[:100]!r} refused")
    return None


def _arrived_on(name: str, scope: Any) -> bool:
    """Whether ``name`` is the IP address this connection arrived on (no DNS name can be)."""
    local = str((scope.get("server") or ("",))[0] or "")
    try:
        return ipaddress.ip_address(name) == ipaddress.ip_address(local)
    except ValueError:
        return False


def _split(url: str) -> SplitResult | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        return None
    return parts


def _port(parts: SplitResult, scheme: str) -> int | None:
    return parts.port or _DEFAULT_PORT.get(scheme)


def _origin_key(origin: str) -> tuple[str, str, int | None] | None:
    parts = _split(origin.strip())
    if parts is None or parts.scheme not in _DEFAULT_PORT or not parts.hostname:
        return None  # "null", other schemes, garbage
    return parts.scheme, parts.hostname, _port(parts, parts.scheme)


def _hostname(host: str) -> str:
    parts = _split(f"//{host.strip()}")
    return (parts.hostname if parts else None) or host.strip().strip("[]").lower()


# ---- error answers without the server's paths ----------------------------------------------

_ABS_PATH = re.compile(r"(?<![\w.:/~-])(?:/|[A-Za-z]:\\)[^\s'\"`,;()\[\]{}<>]*")


def public_text(text: str, roots: Iterable[Path | str | None] = ()) -> str:
    """``text`` with paths under ``roots`` made relative to them and any other absolute path
    cut to its last part, so error answers never show where the server keeps its files."""
    for root in roots:
        if root is None:
            continue
        for form in {str(Path(root)), str(Path(root).resolve())}:
            if len(form) > 1:
                under = re.escape(form.rstrip("/\\"))
                text = re.sub(under + r"[/\\](?=[^\s/\\])", "", text)
                text = re.sub(under + r"(?![\w.-])", ".", text)
    return _ABS_PATH.sub(lambda m: _last_part(m.group(0)), text)


def _last_part(path: str) -> str:
    name = re.split(r"[/\\]", path.rstrip("/\\"))[-1]
    return name or "<path>"
