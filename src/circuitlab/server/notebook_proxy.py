"""Where a notebook's browser can reach a lab server on the kernel's machine.

The browser showing a notebook is often not on the kernel's machine (JupyterHub, a Jupyter
server on a GPU box, Colab), so ``http://127.0.0.1:PORT/`` would name the browser's own
machine. A ``Route`` says how the browser gets to the kernel's port instead:

* ``jupyter``: through jupyter-server-proxy, at ``{base_url}proxy/{port}/`` of the Jupyter
  server that started the kernel (an absolute path, so the page keeps the notebook's scheme and
  host; ``base_url`` is ``$JUPYTERHUB_SERVICE_PREFIX`` on JupyterHub, else the ``base_url`` the
  kernel's parent server wrote in its ``jpserver-{pid}.json`` runtime file).
* ``colab``: through Colab's kernel port proxy, the URL ``google.colab.kernel.proxyPort(port)``
  gives (``google.colab.output.eval_js``, as Colab documents it).
* a template such as ``"/user/me/proxy/{port}/"`` or ``"https://box.example.org/lab/{port}/"``:
  any other proxy that forwards that path to the kernel machine's ``127.0.0.1:{port}``.
* ``local``: ``http://127.0.0.1:{port}/``, when the browser runs on the kernel's machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

RouteKind = Literal["jupyter", "colab", "template", "local"]
PROXY_CHOICES = ("auto", "jupyter", "colab", "none")


@dataclass(frozen=True)
class Route:
    """How the browser reaches the kernel's port: ``kind`` and, for ``jupyter`` and
    ``template``, the URL pattern with ``{port}``."""

    kind: RouteKind
    pattern: str = ""

    @property
    def behind_proxy(self) -> bool:
        """Requests arrive with the proxy's ``Host`` and the notebook's ``Origin``."""
        return self.kind in ("jupyter", "template")

    def url(self, port: int) -> str:
        """The lab's base URL (ending in ``/``) as the notebook's browser names it."""
        if self.kind == "colab":
            return colab_proxy_url(port)
        if self.kind == "local":
            return f"http://127.0.0.1:{port}/"
        url = self.pattern.format(port=port)
        return url if url.endswith("/") else url + "/"


def choose_route(proxy: str = "auto") -> Route | None:
    """The route for ``proxy`` (one of ``PROXY_CHOICES`` or a URL template with ``{port}``);
    for ``"auto"``: Colab when in Colab, else jupyter-server-proxy when it is installed and the
    kernel's Jupyter server is found, else None (no server the browser is known to reach)."""
    if "{port}" in proxy:
        return Route("template", _check_template(proxy))
    if proxy not in PROXY_CHOICES:
        raise ValueError(
            f"proxy={proxy!r}: give one of {', '.join(PROXY_CHOICES)} or a URL template with "
            "{port}, such as '/user/me/proxy/{port}/'"
        )
    if proxy == "none":
        return Route("local")
    if proxy in ("auto", "colab") and in_colab():
        return Route("colab")
    if proxy == "colab":
        raise RuntimeError("proxy='colab' works in Google Colab only (google.colab not found)")
    base = jupyter_base_url()
    if proxy == "jupyter":
        if base is None:
            raise RuntimeError(
                "proxy='jupyter': the Jupyter server of this kernel was not found (no "
                "$JUPYTERHUB_SERVICE_PREFIX, no jpserver-*.json of the parent process); give "
                "the path yourself, e.g. proxy='/user/NAME/proxy/{port}/'"
            )
        return Route("jupyter", base + "proxy/{port}/")
    if base is not None and importlib.util.find_spec("jupyter_server_proxy") is not None:
        return Route("jupyter", base + "proxy/{port}/")
    return None


def in_colab() -> bool:
    """Whether this kernel runs in Google Colab, whose kernel imports ``google.colab`` at start.
    (A ``google-colab`` package merely installed elsewhere does not count: its ``eval_js`` would
    wait for a Colab front end that is not there.)"""
    return "google.colab" in sys.modules


def colab_proxy_url(port: int) -> str:
    """Colab's proxy URL for the kernel's ``port`` (``https://…colab.googleusercontent.com/``)."""
    from google.colab.output import eval_js  # type: ignore[import-not-found]

    url = str(eval_js(f"google.colab.kernel.proxyPort({int(port)})"))
    if urlsplit(url).scheme not in ("http", "https"):
        raise RuntimeError(f"Colab's proxyPort({port}) gave {url[:100]!r}, not an http(s) URL")
    return url if url.endswith("/") else url + "/"


def jupyter_base_url() -> str | None:
    """The ``base_url`` (``/`` or ``/user/NAME/``) of the Jupyter server running this kernel:
    ``$JUPYTERHUB_SERVICE_PREFIX`` when set, else the parent process's server runtime file;
    None when neither is found (a kernel started by VS Code or a console, for instance)."""
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "").strip()
    if prefix:
        return _slashed(prefix)
    info = server_info(os.getppid())
    base = info.get("base_url") if info else None
    return _slashed(base) if isinstance(base, str) and base else None


def server_info(pid: int, runtime_dir: str | Path | None = None) -> dict[str, Any] | None:
    """What the Jupyter server of process ``pid`` wrote about itself (``jpserver-{pid}.json``,
    or the classic notebook's ``nbserver-{pid}.json``) in the Jupyter runtime folder."""
    folder = Path(runtime_dir) if runtime_dir else _runtime_dir()
    for name in (f"jpserver-{pid}.json", f"nbserver-{pid}.json"):
        try:
            info = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(info, dict):
            return info
    return None


def _runtime_dir() -> Path:
    try:
        from jupyter_core.paths import jupyter_runtime_dir  # type: ignore[import-not-found]
    except ImportError:
        folder = os.environ.get("JUPYTER_RUNTIME_DIR", "~/.local/share/jupyter/runtime")
        return Path(folder).expanduser()
    return Path(jupyter_runtime_dir()).expanduser()


def _slashed(path: str) -> str:
    path = "/" + path.strip("/") + "/"
    return "/" if path == "//" else path


def _check_template(template: str) -> str:
    try:
        url = template.format(port=8041)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"proxy={template!r}: a template may name only {{port}} ({e})") from None
    parts = urlsplit(url)
    if not (url.startswith("/") or parts.scheme in ("http", "https")):
        raise ValueError(
            f"proxy={template!r}: give an absolute path ('/prefix/{{port}}/') or an http(s) URL"
        )
    return template
