"""matplotlib, an optional extra (``pip install 'circuitlab[plots]'``), imported in one place."""

from __future__ import annotations

import importlib
from types import ModuleType


def import_pyplot() -> ModuleType | None:
    """``matplotlib.pyplot`` on the Agg backend (files only, no display), or None when
    matplotlib is not installed; callers say what to do instead. Imported by name so that
    circuitlab never depends on it."""
    try:
        matplotlib = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        return importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return None
