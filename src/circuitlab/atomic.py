"""Atomic file writes: a temporary file beside the target, fsync, rename, fsync the folder.

Nothing already on disk is lost or half-written: until the rename the old file is intact, and
a failed or interrupted write removes its temporary file. The result gets the permissions a
plain ``open(path, "w")`` would give (``0o666`` minus the umask), not ``mkstemp``'s ``0o600``.

A writer killed mid-write (``kill -9``, power loss) cannot remove its temporary file, so the
name says whose it is: ``.{target}.{pid}.{random}.circuitlab.tmp``. ``remove_stale_temporaries``
deletes those whose process is gone (or that are a day old); the lab server runs it over its
graph folder when it starts. JSON goes through ``write_json_atomic``, which never writes the
bare ``NaN``/``Infinity`` that JSON parsers (and the lab page) refuse.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".circuitlab.tmp"
_TEMP_NAME = re.compile(
    r"^\.(?P<target>.+)\.(?P<pid>\d+)\.[a-z0-9_]+" + re.escape(TEMP_SUFFIX) + "$"
)
STALE_AFTER_S = 24 * 3600.0


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_dir(directory: Path) -> None:
    """Makes a rename inside ``directory`` durable (no-op where directories can't be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; when the block succeeds it replaces ``path``.

    For writers that take a file name (``safetensors.save_file``, ``pyarrow.parquet``)."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder; give a file name")
    if not directory.is_dir():
        raise FileNotFoundError(
            f"cannot write {path}: the folder {directory} does not exist; create it first"
        )
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=directory
        )
    except PermissionError:  # named after the target, not the temporary file
        raise PermissionError(
            f"cannot write {path}: the folder {directory} is not writable"
        ) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(directory)


def write_atomic(path: str | Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | Path, value: Any, **dumps_kwargs: Any) -> None:
    """Writes ``value`` as JSON to ``path`` atomically (compact unless ``indent`` is given).

    Raises ``ValueError`` (and writes nothing) when ``value`` holds NaN or an infinity: JSON has
    no such numbers, and a file with bare ``NaN`` in it cannot be read by browsers.
    """
    if "indent" not in dumps_kwargs:
        dumps_kwargs.setdefault("separators", (",", ":"))
    text = json.dumps(value, allow_nan=False, **dumps_kwargs)
    write_atomic(path, text.encode())


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary file of ``atomic_path``."""
    return _TEMP_NAME.match(name) is not None


def remove_stale_temporaries(
    directory: str | Path, *, max_age_s: float = STALE_AFTER_S
) -> list[Path]:
    """Deletes the temporaries in ``directory`` left by writers that died; returns them.

    A temporary is stale when the process named in it is gone, or it is older than
    ``max_age_s`` (a recycled process id). Files of live processes, this one's included, are
    kept: they may be being written right now.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        m = _TEMP_NAME.match(entry.name)
        if m is None or not entry.is_file(follow_symlinks=False):
            continue
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > max_age_s
            pid = int(m["pid"])
            if old or (pid != os.getpid() and not _process_alive(pid)):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:  # gone already, or not ours to remove
            continue
    return removed


def _process_alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill would terminate it on Windows: rely on age alone
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True
