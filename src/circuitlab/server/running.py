"""Running the lab: in the foreground (``serve``) or in a background thread (``start_server``).

Bound to loopback (the default) the lab answers only pages of its own origin on this machine;
bound anywhere else it also needs a token, made here unless one is given, and printed in the
URL to open (docs/security.md).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import uvicorn

from circuitlab.server.app import create_app
from circuitlab.server.dashboards import FeatureDirs
from circuitlab.server.guard import (
    LOOPBACK_HOSTS,
    TOKEN_ENV,
    check_token,
    is_loopback,
    is_wildcard,
    new_token,
)
from circuitlab.server.heads import HeadsLab
from circuitlab.server.jobs import DEFAULT_MAX_FEATURE_NODES, DEFAULT_MAX_PENDING, Tracer

DEFAULT_PORT = 8041
DEFAULT_HOST = "127.0.0.1"


def build_app(
    graph_file_dir: str | Path,
    features_dir: FeatureDirs = None,
    *,
    host: str = DEFAULT_HOST,
    models: Mapping[str, Any] | None = None,
    tracer: Tracer | None = None,
    heads_models: Mapping[str, Any] | None = None,
    attribute_kwargs: Mapping[str, Any] | None = None,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    max_feature_nodes: int | None = DEFAULT_MAX_FEATURE_NODES,
    max_pending: int = DEFAULT_MAX_PENDING,
    token: str | None = None,
    allow_hosts: Iterable[str] = (),
) -> Any:
    """The app for ``graph_file_dir``; ``models`` (name -> ``ReplacementModel``) enable tracing
    and the heads view; ``heads_models`` (name -> ``heads.LabModel``) the heads view alone.
    Page traces keep at most ``max_feature_nodes`` features (unless ``attribute_kwargs`` name
    a number) and at most ``max_pending`` wait (more: HTTP 503).

    ``host`` is the address the server binds: beyond loopback ``token`` is required (see
    ``lab_token``) and the ``Host`` names accepted are that address (every local name for
    ``0.0.0.0``) plus ``allow_hosts``.
    """
    if not is_loopback(host) and not token:
        raise ValueError(f"serving on {host} needs a token (lab_token makes one)")
    Path(graph_file_dir).mkdir(parents=True, exist_ok=True)
    if tracer is None and models:
        tracer = Tracer(
            models,
            graph_file_dir,
            node_threshold=node_threshold,
            edge_threshold=edge_threshold,
            attribute_kwargs=attribute_kwargs,
            max_feature_nodes=max_feature_nodes,
            max_pending=max_pending,
        )
    heads = None
    if heads_models:
        heads = HeadsLab(heads_models, graph_dir=Path(graph_file_dir))
    elif tracer is not None and all(hasattr(m, "transcoders") for m in tracer.models.values()):
        heads = HeadsLab.from_replacement_models(
            tracer.models,
            locks={name: tracer.model_lock(name) for name in tracer.models},
            graph_dir=Path(graph_file_dir),
        )
    return create_app(
        graph_file_dir,
        features_dir,
        tracer=tracer,
        heads=heads,
        allowed_hosts=allowed_hosts(host, allow_hosts),
        token=token,
    )


def allowed_hosts(host: str, extra: Iterable[str] = ()) -> list[str]:
    """The ``Host`` names a server bound to ``host`` answers (plus the address a connection
    arrived on, which ``guard`` always accepts)."""
    names = list(LOOPBACK_HOSTS)
    if is_wildcard(host):
        names += [socket.gethostname(), socket.getfqdn()]
    elif not is_loopback(host):
        names = [host]
    return [*names, *extra]


def lab_token(host: str, token: str | None = None) -> str | None:
    """The token a lab on ``host`` uses: ``token`` if given, else ``$CIRCUITLAB_TOKEN``, else a
    new one beyond loopback (None on loopback). An empty token beyond loopback is refused."""
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    if token is None and not is_loopback(host):
        token = new_token()
    if token:
        check_token(token)
    if token == "" and not is_loopback(host):
        raise ValueError(
            f"a lab on {host} without a token would let anyone who can reach this machine read "
            "your graphs and run the model: keep the generated token (or give --token), or "
            "serve on 127.0.0.1 and reach it through an SSH tunnel"
        )
    return token or None


def lab_url(host: str, port: int, token: str | None = None, slug: str | None = None) -> str:
    """The URL to open: the bound address (this machine's name for 0.0.0.0), slug and token."""
    shown = socket.gethostname() if is_wildcard(host) else host
    if ":" in shown:
        shown = f"[{shown}]"
    query = {k: v for k, v in (("slug", slug), ("token", token)) if v}
    return f"http://{shown}:{port}/" + (f"?{urlencode(query, quote_via=quote)}" if query else "")


def serve(
    graph_file_dir: str | Path,
    features_dir: FeatureDirs = None,
    *,
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    token: str | None = None,
    slug: str | None = None,
    **kwargs: Any,
) -> None:
    """Serve the lab until interrupted (Ctrl+C), printing the URL to open (at ``slug``).
    See ``build_app`` for ``kwargs`` and ``lab_token`` for ``token``."""
    token = lab_token(host, token)
    app = build_app(graph_file_dir, features_dir, host=host, token=token, **kwargs)
    print(f"circuitlab lab on {lab_url(host, port, token, slug)}  (Ctrl+C stops it)", flush=True)
    if is_wildcard(host):
        print(f"  or {lab_url('127.0.0.1', port, token, slug)}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", ws="websockets-sansio")


class LabServer:
    """A lab server running in a daemon thread; ``url`` to open, ``stop()`` to end it."""

    def __init__(self, app: Any, host: str, port: int, token: str | None = None):
        self.host, self.port, self.token = host, port, token
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", ws="websockets-sansio"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="circuitlab-lab")
        self.app = app

    @property
    def base(self) -> str:
        """``http://host:port/``: where the lab's files are (send the token along)."""
        return lab_url(self.host, self.port)

    @property
    def url(self) -> str:
        """The page to open, with the token when the lab has one."""
        return lab_url(self.host, self.port, self.token)

    def start(self, timeout: float = 20.0) -> LabServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the lab server did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> LabServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def start_server(
    graph_file_dir: str | Path,
    features_dir: FeatureDirs = None,
    *,
    port: int | None = None,
    host: str = DEFAULT_HOST,
    token: str | None = None,
    **kwargs: Any,
) -> LabServer:
    """Start the lab in a background thread (``port=None`` picks a free one); beyond loopback
    with a token (``lab_token``), which ``LabServer.url`` carries."""
    token = lab_token(host, token)
    app = build_app(graph_file_dir, features_dir, host=host, token=token, **kwargs)
    return LabServer(app, host, port or free_port(host), token).start()
