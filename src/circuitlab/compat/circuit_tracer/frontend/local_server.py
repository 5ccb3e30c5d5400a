"""``serve(data_dir, frontend_dir=None, features_dir=None, port=8032)``: circuitlab's lab
with circuit-tracer's call.

Returns a ``Server`` with ``stop()`` (and ``get_logs()``, ``url``). Unlike circuit-tracer's
server it binds 127.0.0.1 only and serves circuitlab's own page (no CDN); ``frontend_dir`` is
accepted and ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from circuitlab.server.running import LabServer, start_server

DEFAULT_PORT = 8032


class Server:
    """A running lab: ``stop()`` ends it (more than once is fine), ``url`` opens it."""

    def __init__(self, lab: LabServer):
        self.lab = lab
        self.logs: list[str] = []
        self._stopped = False

    @property
    def url(self) -> str:
        return self.lab.url

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self.lab.stop()

    def get_logs(self) -> list[str]:
        return self.logs


def serve(
    data_dir: str | Path,
    frontend_dir: Any = None,
    features_dir: str | Path | int | None = None,
    port: int = DEFAULT_PORT,
) -> Server:
    """Serves the graph files in ``data_dir`` at ``http://127.0.0.1:{port}/`` in a thread,
    with feature dashboards from ``features_dir`` when given: a circuitlab dashboard store
    (``circuitlab features build``); a folder without one is refused, naming the fix.

    circuit-tracer's PyPI 0.5.0 release has ``serve(data_dir, frontend_dir, port)`` and its
    repository's ``serve(data_dir, frontend_dir, features_dir, port)``: an ``int`` in the third
    place is taken as the port, so positional calls of both work.
    """
    del frontend_dir  # circuitlab's page is built into the package
    if isinstance(features_dir, int):
        port, features_dir = features_dir, None
    return Server(start_server(data_dir, features_dir, port=port))
