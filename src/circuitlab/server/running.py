"""Running the lab: in the foreground (``serve``) or in a background thread (``start_server``)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import uvicorn

from circuitlab.server.app import LOOPBACK_HOSTS, create_app
from circuitlab.server.heads import HeadsLab
from circuitlab.server.jobs import DEFAULT_MAX_FEATURE_NODES, DEFAULT_MAX_PENDING, Tracer

DEFAULT_PORT = 8041
DEFAULT_HOST = "127.0.0.1"


def build_app(
    graph_file_dir: str | Path,
    features_dir: str | Path | None = None,
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
) -> Any:
    """The app for ``graph_file_dir``; ``models`` (name -> ``ReplacementModel``) enable tracing
    and the heads view; ``heads_models`` (name -> ``heads.LabModel``) the heads view alone.
    Page traces keep at most ``max_feature_nodes`` features (unless ``attribute_kwargs`` name
    a number) and at most ``max_pending`` wait (more: HTTP 503)."""
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
    loopback = host in ("127.0.0.1", "localhost", "::1")
    return create_app(
        graph_file_dir,
        features_dir,
        tracer=tracer,
        heads=heads,
        allowed_hosts=LOOPBACK_HOSTS if loopback else None,
    )


def serve(
    graph_file_dir: str | Path,
    features_dir: str | Path | None = None,
    *,
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    **kwargs: Any,
) -> None:
    """Serve the lab until interrupted (Ctrl+C). See ``build_app`` for ``kwargs``."""
    app = build_app(graph_file_dir, features_dir, host=host, **kwargs)
    uvicorn.run(app, host=host, port=port, log_level="warning", ws="websockets-sansio")


class LabServer:
    """A lab server running in a daemon thread; ``url`` to open, ``stop()`` to end it."""

    def __init__(self, app: Any, host: str, port: int):
        self.host, self.port = host, port
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", ws="websockets-sansio"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="circuitlab-lab")
        self.app = app

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

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
    features_dir: str | Path | None = None,
    *,
    port: int | None = None,
    host: str = DEFAULT_HOST,
    **kwargs: Any,
) -> LabServer:
    """Start the lab in a background thread (``port=None`` picks a free one)."""
    app = build_app(graph_file_dir, features_dir, host=host, **kwargs)
    return LabServer(app, host, port or free_port(host)).start()
