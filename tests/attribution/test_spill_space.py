"""``offload="disk"`` is refused before it writes when its spill file will not fit the temporary
folder: the patterns before the forward pass, the edge rows once the features are counted; the
room is the folder's free space (capped by RAM on a tmpfs) or ``CIRCUITLAB_AVAILABLE_DISK``."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch

from circuitlab.attribution import attribute
from circuitlab.attribution.memory import ModelShapes, TranscoderShapes, human
from circuitlab.attribution.memory_check import AVAILABLE_MEMORY_ENV, AttributionPlan
from circuitlab.attribution.spill_space import (
    AVAILABLE_DISK_ENV,
    NotEnoughDiskError,
    SpillRoom,
    check_spill_space,
    filesystem_type,
    spill_room,
)
from circuitlab.replacement import ReplacementModel

from conftest import PROMPT, build


@pytest.fixture(scope="module")
def rm() -> ReplacementModel:
    return build("llama", dtype=torch.float32)


@pytest.fixture
def spill_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """TMPDIR for the test: what the spill file and the offloaded modules would leave there."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _spill_parts(rm: ReplacementModel) -> tuple[int, int]:
    """(pattern bytes, edge-row bytes) the two stages of the check ask for on PROMPT."""
    graph = attribute(rm, PROMPT, check_memory=False)
    plan = AttributionPlan.of(rm, len(PROMPT), offload="disk", dtype="float32")
    plan.n_active, plan.settings["max_n_logits"] = graph.n_active, graph.n_logits
    parts = plan.estimate().parts
    return parts["attention patterns in a mapped file"], parts["edge rows in a mapped file"]


def _run(rm: ReplacementModel) -> tuple[list[str], Exception | None]:
    started: list[str] = []

    def progress(phase: str, done: int, total: int) -> None:
        if done == 0:
            started.append(phase)

    try:
        attribute(rm, PROMPT, offload="disk", progress=progress)
    except NotEnoughDiskError as e:
        return started, e
    return started, None


def test_no_room_for_the_patterns_is_refused_before_the_forward_pass(
    rm: ReplacementModel, spill_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(AVAILABLE_DISK_ENV, "1KiB")
    started, err = _run(rm)
    assert isinstance(err, NotEnoughDiskError) and isinstance(err, OSError)
    assert started == [] and list(spill_dir.iterdir()) == []
    text = str(err)
    assert "attention patterns" in text and "1.0 KiB is free" in text
    assert "TMPDIR" in text and str(spill_dir) in text and "check_memory=False" in text


def test_no_room_for_the_edge_rows_is_refused_before_any_row(
    rm: ReplacementModel, spill_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    patterns, edges = _spill_parts(rm)
    assert patterns < edges  # so a room between them lets the forward pass run
    monkeypatch.setenv(AVAILABLE_DISK_ENV, str(edges - 1))
    started, err = _run(rm)
    assert isinstance(err, NotEnoughDiskError)
    assert "forward" in started and "logit rows" not in started and "feature rows" not in started
    assert err.what == "edge rows" and err.needed == edges
    assert f"about {human(edges)} more for the edge rows" in str(err)
    assert "edge_dtype='bfloat16'" in str(err)
    assert list(spill_dir.iterdir()) == []  # the spill file was unlinked, nothing offloaded yet
    # exactly enough room runs, and so does check_memory=False with none
    monkeypatch.setenv(AVAILABLE_DISK_ENV, str(edges))
    assert _run(rm)[1] is None
    monkeypatch.setenv(AVAILABLE_DISK_ENV, "1")
    attribute(rm, PROMPT, offload="disk", check_memory=False)


def test_in_memory_runs_are_not_checked(
    rm: ReplacementModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(AVAILABLE_DISK_ENV, "1")
    attribute(rm, PROMPT, offload=None)
    attribute(rm, PROMPT, offload="cpu")


def test_patterns_on_an_accelerator_need_no_room() -> None:
    est = AttributionPlan(*_shapes(), 64, {"offload": "disk"}).estimate()
    room = SpillRoom(0, Path("/x"), "test")
    check_spill_space(est, "forward", on_accelerator=True, room=room)
    with pytest.raises(NotEnoughDiskError, match="attention patterns"):
        check_spill_space(est, "forward", room=room)
    with pytest.raises(ValueError, match="stage"):
        check_spill_space(est, "graph", room=room)


def _shapes() -> tuple[ModelShapes, TranscoderShapes]:
    model = ModelShapes(
        n_layers=2, d_model=16, n_heads=2, n_kv_heads=2, d_head=8, d_mlp=32, vocab_size=50,
        n_params=10_000, gated_mlp=True,
    )  # fmt: skip
    return model, TranscoderShapes("plt", 2, 16, 64, False, 4)


def test_filesystem_type_takes_the_longest_mount(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/vda / ext4 rw 0 0\n"
        "tmpfs /scratch tmpfs rw 0 0\n"
        "/dev/vdb /scratch/big\\040disk xfs rw 0 0\n"
        "broken\n"
    )
    assert filesystem_type("/home/user", mounts) == "ext4"
    assert filesystem_type("/scratch/x", mounts) == "tmpfs"
    assert filesystem_type("/scratch", mounts) == "tmpfs"
    assert filesystem_type("/scratch/big disk/f", mounts) == "xfs"
    assert filesystem_type("/scratchpad", mounts) == "ext4"
    assert filesystem_type("/x", tmp_path / "missing") is None


def test_a_tmpfs_is_capped_by_the_available_ram(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(f"tmpfs {tmp_path} tmpfs rw 0 0\n")
    monkeypatch.delenv(AVAILABLE_DISK_ENV, raising=False)
    monkeypatch.setenv(AVAILABLE_MEMORY_ENV, "1MiB")
    room = spill_room(tmp_path, mounts=mounts)
    assert room.in_memory and room.bytes == 2**20 and "tmpfs" in room.source
    mounts.write_text(f"/dev/vda {tmp_path} ext4 rw 0 0\n")
    room = spill_room(tmp_path, mounts=mounts)
    assert not room.in_memory and room.bytes > 2**20 and room.directory == tmp_path


def test_the_override_is_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AVAILABLE_DISK_ENV, "2GiB")
    assert spill_room(tmp_path).bytes == 2 * 2**30
    monkeypatch.setenv(AVAILABLE_DISK_ENV, "lots")
    with pytest.raises(ValueError, match=AVAILABLE_DISK_ENV):
        spill_room(tmp_path)
