"""Atomic writes keep the old file on failure, leave no temporary files, and use normal modes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from circuitlab.atomic import atomic_path, write_atomic


def test_written_file_has_the_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").read_bytes() == b"{}"
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644


def test_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "graph.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph.safetensors"]
