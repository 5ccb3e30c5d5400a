"""Building a folder of the shared cache once, safely when several processes want it at once.

The cache (``models.packaged.cache_dir()``, default ``~/.cache/circuitlab``) holds results
that take a while to make: a GGUF model converted to safetensors, fitted transcoders. Two
processes asking for the same entry at once (two ``circuitlab`` commands, workers of a batch)
used to race: the second one's save found the first one's folder and raised
``FileExistsError``, or removed a folder the other was about to read. ``build_once``:

1. returns at once when ``target/marker`` exists (the entry is complete: the marker file is
   the last thing a build writes, and the folder appears by a rename, never half-built);
2. otherwise takes an exclusive lock on ``.{name}.lock`` beside the folder (``fcntl.flock``;
   where there is none, step 3 alone still keeps the result whole), so a second process waits
   for the first instead of repeating its work, and checks again;
3. builds into a hidden temporary sibling and renames it to ``target``; if another process
   finished first (the rename fails and ``target/marker`` exists) that is a success, and the
   temporary copy is removed. A failed or interrupted build leaves no ``target``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def build_once(target: str | Path, build: Callable[[Path], None], *, marker: str) -> Path:
    """``target``, built by ``build(folder)`` unless ``target/marker`` already exists (see the
    module docstring); ``build`` must write ``marker`` into the folder it is given."""
    target = Path(target)
    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target.parent / f".{target.name}.lock"):
        if (target / marker).is_file():  # built by another process while we waited
            return target
        tmp = Path(
            tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        )
        try:
            build(tmp)
            if not (tmp / marker).is_file():
                raise RuntimeError(f"building {target} wrote no {marker}")
            os.chmod(tmp, 0o755)
            _publish(tmp, target, marker)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _publish(tmp: Path, target: Path, marker: str) -> None:
    if target.exists() and not (target / marker).is_file():  # an incomplete leftover
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(target, old)
        except FileNotFoundError:
            pass
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.rename(tmp, target)
    except OSError:  # EEXIST/ENOTEMPTY: someone else's complete folder is there now
        if not (target / marker).is_file():
            raise


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive ``fcntl.flock`` on the file ``path`` (made if missing) for the block; a no-op
    where there is no ``fcntl``."""
    try:
        import fcntl
    except ImportError:  # Windows: the callers' renames still keep what they write whole
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
