"""Compatibility layers: run code written for other libraries on circuitlab.

``circuitlab.compat.circuit_tracer`` has circuit-tracer 0.5.0's API. ``install()`` registers it
under the name ``circuit_tracer`` (and each of its submodules), so that unmodified scripts and
notebooks that ``import circuit_tracer`` run on circuitlab::

    import circuitlab.compat
    circuitlab.compat.install()        # or: import circuitlab.compat.as_circuit_tracer

    from circuit_tracer import ReplacementModel, attribute

It refuses when the real circuit-tracer is installed (``force=True`` shadows it for this
process). ``uninstall()`` removes the registration. See docs/migrating.md.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

NAME = "circuit_tracer"
_LAYER = "circuitlab.compat.circuit_tracer"
# circuit-tracer's import paths that the layer mirrors, parents first.
SUBMODULES = (
    "",
    ".attribution",
    ".attribution.attribute",
    ".attribution.targets",
    ".replacement_model",
    ".replacement_model.replacement_model",
    ".graph",
    ".utils",
    ".utils.create_graph_files",
    ".utils.decode_url_features",
    ".utils.demo_utils",
    ".utils.hf_utils",
    ".utils.tl_nnsight_mapping",
    ".transcoder",
    ".transcoder.single_layer_transcoder",
    ".transcoder.cross_layer_transcoder",
    ".frontend",
    ".frontend.local_server",
)


class CircuitTracerInstalledError(RuntimeError):
    """The real circuit-tracer is importable, so ``install()`` will not shadow it."""


def is_installed() -> bool:
    """Whether ``circuit_tracer`` currently names circuitlab's compatibility layer."""
    module = sys.modules.get(NAME)
    return module is not None and module.__name__ == _LAYER


def install(*, force: bool = False) -> ModuleType:
    """Registers ``circuitlab.compat.circuit_tracer`` as ``circuit_tracer`` (and its
    submodules) in ``sys.modules``; returns the layer. Calling it again does nothing.

    Raises:
        CircuitTracerInstalledError: circuit-tracer itself is installed (or already
            imported); pass ``force=True`` to shadow it in this process anyway.
    """
    if is_installed():
        return sys.modules[NAME]
    if not force and _real_circuit_tracer():
        raise CircuitTracerInstalledError(
            "circuit-tracer is installed, so circuitlab.compat.install() will not shadow it: "
            "import circuitlab.compat.circuit_tracer directly, uninstall circuit-tracer, or call "
            "install(force=True) to use circuitlab under the name circuit_tracer in this process"
        )
    for sub in SUBMODULES:
        sys.modules[NAME + sub] = importlib.import_module(_LAYER + sub)
    return sys.modules[NAME]


def uninstall() -> None:
    """Removes the registration made by ``install()`` (a real circuit-tracer is untouched)."""
    for name in [n for n in sys.modules if n == NAME or n.startswith(NAME + ".")]:
        if sys.modules[name].__name__.startswith(_LAYER):
            del sys.modules[name]


def _real_circuit_tracer() -> bool:
    if NAME in sys.modules:
        return True
    try:
        return importlib.util.find_spec(NAME) is not None
    except (ImportError, ValueError):
        return False


__all__ = [
    "CircuitTracerInstalledError",
    "install",
    "is_installed",
    "uninstall",
]
