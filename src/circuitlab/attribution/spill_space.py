"""Refusing ``offload="disk"`` before it runs when its spill file will not fit where it goes.

With ``offload="disk"`` the attention patterns (on the CPU) and every edge block go to one
unlinked temporary file (``offload.SpillFile``) in ``tempfile.gettempdir()`` (``TMPDIR``).
On a long prompt that file is far larger than the graph: 4,096 tokens on SmolLM2-135M with a
7,500-feature cap write ~17 GiB of patterns and ~18 GiB of edge rows. A full disk would
otherwise end the run with ``No space left on device`` after hours of work, so ``attribute``
checks, as it checks memory (``attribution.memory_check``) and at the same two stages:

1. before the forward pass: the patterns' bytes (exact: ``layers * heads * pos^2``), when the
   model runs on the CPU (on an accelerator they stay in device memory);
2. once the active features are counted: the edge rows' bytes (``attribution.memory``'s row
   model, with the exact active features; the patterns are already in the file, so the free
   space measured then has them taken off).

Each compares with the free space of the spill folder's file system (``shutil.disk_usage``).
When that folder is a ``tmpfs`` or ``ramfs`` (``/proc/mounts``), the file lives in memory, so
the room is also capped by the available RAM. ``CIRCUITLAB_AVAILABLE_DISK`` (bytes, or
``40GiB``) replaces the measured free space, for tests and for disks shared with other jobs.
``attribute(check_memory=False)`` skips this check too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .memory import MemoryEstimate, human
from .memory_check import available_memory, parse_bytes

#: Replaces the measured free space of the spill folder when set: bytes or ``40GiB``/``500MB``.
AVAILABLE_DISK_ENV = "CIRCUITLAB_AVAILABLE_DISK"
#: File systems whose files are held in memory.
MEMORY_FILESYSTEMS = ("tmpfs", "ramfs")
#: The part of ``MemoryEstimate.parts`` each stage writes to the spill file.
STAGE_PARTS = {
    "forward": "attention patterns in a mapped file",
    "sweep": "edge rows in a mapped file",
}


@dataclass(frozen=True)
class SpillRoom:
    """Free bytes for the spill file, the folder it goes to, and where the number came from."""

    bytes: int
    directory: Path
    source: str
    in_memory: bool = False


class NotEnoughDiskError(OSError):
    """``offload="disk"`` would fill the spill folder's file system; nothing was written.

    ``needed``: bytes the stage writes to the spill file; ``room``: what is free there;
    ``message(cli=True)`` names CLI flags instead of keywords.
    """

    def __init__(self, *, needed: int, room: SpillRoom, what: str, context: str):
        self.needed, self.room, self.what, self.context = needed, room, what, context
        super().__init__(self.message())

    def message(self, *, cli: bool = False) -> str:
        room = self.room
        kind = "a file system in memory" if room.in_memory else "a disk"
        cap, half, hatch = (
            ("--max_feature_nodes", "--edge_dtype bfloat16", "--no-memory-check")
            if cli
            else ("max_feature_nodes", "edge_dtype='bfloat16'", "check_memory=False")
        )
        lower = f"a lower {cap}"
        if "bfloat16" not in self.context and self.what == "edge rows":
            lower += f", {half} (half the edge rows)"
        return (
            f"not enough space for offload='disk': its spill file takes about "
            f"{human(self.needed)} more for the {self.what} ({self.context}) in "
            f"{room.directory} ({kind}), but {human(room.bytes)} is free ({room.source}). "
            f"Set TMPDIR to a folder on a disk with more room, or use {lower} or a shorter "
            f"prompt. To run anyway: {hatch} (or set {AVAILABLE_DISK_ENV} to the bytes you can "
            "spare)."
        )


def spill_room(
    directory: str | Path | None = None, *, mounts: str | Path = "/proc/mounts"
) -> SpillRoom:
    """Free bytes where ``offload.SpillFile`` writes (``directory``, else the temp folder)."""
    folder = Path(directory if directory is not None else tempfile.gettempdir())
    override = os.environ.get(AVAILABLE_DISK_ENV)
    if override:
        n = parse_bytes(override, AVAILABLE_DISK_ENV)
        return SpillRoom(n, folder, f"{AVAILABLE_DISK_ENV}={override}")
    free = shutil.disk_usage(folder).free
    fs = filesystem_type(folder, mounts)
    if fs not in MEMORY_FILESYSTEMS:
        return SpillRoom(free, folder, "free on its file system")
    ram = available_memory("cpu").get("ram")
    if ram is not None and ram.bytes < free:
        return SpillRoom(ram.bytes, folder, f"{fs}: {ram.source}", in_memory=True)
    return SpillRoom(free, folder, f"free on its {fs}", in_memory=True)


def filesystem_type(path: str | Path, mounts: str | Path = "/proc/mounts") -> str | None:
    """The file system type of the mount that holds ``path`` (None if ``mounts`` is unreadable)."""
    target = os.path.realpath(path)
    best, best_type = "", None
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, fields[2]
    return best_type


def check_spill_space(
    estimate: MemoryEstimate,
    stage: str,
    *,
    on_accelerator: bool = False,
    room: SpillRoom | None = None,
) -> None:
    """Raises ``NotEnoughDiskError`` when ``stage``'s writes to the spill file (see the module
    docstring) exceed ``room`` (default ``spill_room()``)."""
    if stage not in STAGE_PARTS:
        raise ValueError(f"stage must be one of {', '.join(STAGE_PARTS)}; got {stage!r}")
    if stage == "forward" and on_accelerator:
        return  # the patterns stay in device memory
    part = STAGE_PARTS[stage]
    needed = estimate.parts.get(part, 0)
    if needed <= 0:
        return
    room = spill_room() if room is None else room
    if needed <= room.bytes:
        return
    a = estimate.assumptions
    context = f"{a.get('n_tokens')} tokens"
    if stage == "sweep":
        context += f", {a.get('n_active', 0):,} active features, "
        context += f"{a.get('feature_rows', 0):,} feature rows, {a.get('edge_dtype')} edges"
    raise NotEnoughDiskError(
        needed=needed, room=room, what=part.removesuffix(" in a mapped file"), context=context
    )
