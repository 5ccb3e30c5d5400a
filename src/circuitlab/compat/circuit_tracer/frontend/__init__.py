"""``circuit_tracer.frontend``: the local graph server."""

from .local_server import Server, serve

__all__ = ["Server", "serve"]
