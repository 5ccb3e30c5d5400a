"""Output paths, checked before any work starts.

A command that writes its result after minutes of attribution, training or dashboard building
checks every path it will write first, so a typo fails at once with the path and the fix:

* a **file** flag (``-o graph.safetensors``, ``--json``, ``--plot``, ``--save-means``): not a
  folder, in a folder that exists (it is not created: a mistyped folder should not appear) and
  is writable;
* a **folder** flag (``--graph_file_dir``, ``--out``): not a file; created with its parents
  when missing, so the nearest folder that exists must be writable.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import UsageError


def check_output_file(path: str | os.PathLike[str] | None, flag: str) -> Path | None:
    """The file ``flag`` names, if it can be written (see the module docstring)."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.is_dir():
        raise UsageError(f"{flag} {path} is a folder: give a file name (e.g. {p / _example(flag)})")
    folder = p.parent
    if not folder.exists():
        raise UsageError(
            f"{flag} {path}: the folder {folder} does not exist; create it "
            f"(mkdir -p {folder}) or pass a path in an existing folder"
        )
    if not folder.is_dir():
        raise UsageError(f"{flag} {path}: {folder} is a file, not a folder; pass another path")
    _writable(folder, flag, path)
    return p


def check_output_dir(path: str | os.PathLike[str] | None, flag: str) -> Path | None:
    """The folder ``flag`` names, if it exists or can be created, and can be written into."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise UsageError(f"{flag} {path} is a file, not a folder; pass a folder (it is created)")
    existing = p
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{flag} {path}: {existing} is a file, so the folder cannot be created")
    _writable(existing, flag, path)
    return p


def _writable(folder: Path, flag: str, path: object) -> None:
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(
            f"{flag} {path}: the folder {folder} is not writable; pass a path you can write to "
            "(or fix the folder's permissions)"
        )


def _example(flag: str) -> str:
    for key, name in _EXAMPLES.items():
        if key in flag:
            return name
    return "result.json"


_EXAMPLES = {
    "graph_output_path": "graph.safetensors",
    "--plot": "curves.svg",
    "--save-means": "means.safetensors",
}
