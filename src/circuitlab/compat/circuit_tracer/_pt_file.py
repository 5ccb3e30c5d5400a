"""Writing a graph as the ``.pt`` file circuit-tracer's ``Graph.from_pt`` reads.

circuit-tracer saves ``torch.save`` of a dict of tensors and plain values, in which two
entries are instances of its own classes: ``cfg`` (``UnifiedConfig``) and the items of
``logit_targets`` (``LogitTarget``). Its reader builds its ``Graph`` from them, so a file it
can read must name those two classes. This writer stores plain data and names exactly those two
classes, by module path, in place of the compatibility layer's own records with the same
fields; nothing else in the file is an object. circuitlab reads such files back through its
restricted unpickler (``circuitlab.graph.import_circuit_tracer_pt``), which allows exactly
those names, so no file is ever fully unpickled.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from circuitlab.graph.targets import LogitTarget

from .utils.tl_nnsight_mapping import UnifiedConfig

# Our record class -> the (module, name) circuit-tracer's reader resolves it to.
_CT_NAMES: dict[type, tuple[str, str]] = {
    UnifiedConfig: ("circuit_tracer.utils.tl_nnsight_mapping", "UnifiedConfig"),
    LogitTarget: ("circuit_tracer.attribution.targets", "LogitTarget"),
}


# The pure-Python pickler: its ``save_global`` can be extended (the C one's cannot).
_PyPickler: Any = pickle._Pickler


class _Pickler(_PyPickler):
    def save_global(self, obj: Any, name: str | None = None) -> None:
        alias = _CT_NAMES.get(obj)
        if alias is None:
            super().save_global(obj, name)
            return
        module, qualname = alias
        self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode())
        self.memoize(obj)


class _PickleModule:
    """What ``torch.save(pickle_module=...)`` needs: a ``Pickler`` class."""

    Pickler = _Pickler
    __name__ = "circuitlab.compat.circuit_tracer._pt_file"


def write_pt(data: dict[str, Any], path: str | Path) -> None:
    """``torch.save(data, path)`` with circuit-tracer's class names, atomically."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(data, tmp, pickle_module=_PickleModule, pickle_protocol=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
