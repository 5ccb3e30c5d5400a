"""Atomic writes keep the old file on failure, leave no temporary files, and use normal modes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from circuitlab.atomic import (
    TEMP_SUFFIX,
    atomic_path,
    is_temporary,
    remove_stale_temporaries,
    write_atomic,
    write_json_atomic,
)


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


def test_temporaries_are_named_after_their_target_and_process(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "g.json") as tmp:
        assert is_temporary(tmp.name) and tmp.name.startswith(f".g.json.{os.getpid()}.")
        assert tmp.name.endswith(TEMP_SUFFIX)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / f".graph.safetensors.{_dead_pid()}.k2x9a_b1{TEMP_SUFFIX}"
    dead.write_bytes(b"\0" * 1024)  # what a save killed mid-write leaves
    mine = tmp_path / f".graph.json.{os.getpid()}.abcdefgh{TEMP_SUFFIX}"  # a write in progress
    mine.write_bytes(b"{")
    others = [tmp_path / ".hidden", tmp_path / "graph.json", tmp_path / ".notes.123.abc.tmp"]
    for p in others:
        p.write_bytes(b"keep")
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [mine.name, *(p.name for p in others)]
    )
    old = time.time() - 2 * 24 * 3600
    os.utime(mine, (old, old))  # a day old: its process id has been recycled
    assert remove_stale_temporaries(tmp_path) == [mine]


def test_json_with_nan_is_refused_and_the_old_file_kept(tmp_path: Path) -> None:
    target = tmp_path / "g.json"
    write_json_atomic(target, {"a": [1, 2.5]})
    assert json.loads(target.read_text()) == {"a": [1, 2.5]}
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError):
            write_json_atomic(target, {"a": [bad]})
    assert json.loads(target.read_text()) == {"a": [1, 2.5]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.json"]
