"""Every command that writes checks its output paths before any work: a missing folder, a
folder where a file is wanted (or the reverse) and an unwritable folder each fail at once with
one line naming the path and the fix, never a hidden temporary file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from circuitlab.atomic import write_atomic
from circuitlab.cli import UsageError, main
from circuitlab.cli._output import check_output_dir, check_output_file
from circuitlab.replacement import ReplacementModel


def _cases(tmp: Path, tc: Path, model: Path) -> list[tuple[list[str], str]]:
    """``(argv, fragment of the one-line error)``: each names a path that cannot be written."""
    missing = tmp / "no-such-folder"
    a_file = tmp / "file.txt"
    a_file.write_text("the capital of Texas is Austin\n")
    folder = tmp / "a-folder"
    folder.mkdir(exist_ok=True)
    t, m = ["-t", str(tc)], ["-m", str(model)]
    p = ["-p", "the capital of Texas is"]
    no_folder = f"the folder {missing} does not exist"
    return [
        (["attribute", *p, *t, "-o", str(missing / "g.safetensors")], no_folder),
        (["attribute", *p, *t, "-o", str(folder)], f"{folder} is a folder"),
        (
            ["attribute", *p, *t, "--slug", "s", "--graph_file_dir", str(a_file)],
            f"--graph_file_dir {a_file} is a file",
        ),
        (
            ["batch", str(a_file), "--out", str(a_file / "run"), *t],
            f"{a_file} is a file, so the folder cannot be created",
        ),
        (
            ["validate", str(tmp / "g.safetensors"), *t, "--json", str(missing / "r.json")],
            no_folder,
        ),
        (["validate", str(tmp / "g.safetensors"), *t, "--plot", str(missing / "c.svg")], no_folder),
        (
            ["validate", str(tmp / "g.safetensors"), *t, "--graph_file_dir", str(a_file)],
            "is a file",
        ),
        (
            [
                "compare",
                str(tmp / "a.safetensors"),
                str(tmp / "b.safetensors"),
                "--json",
                str(missing / "d.json"),
            ],
            no_folder,
        ),  # fmt: skip
        (["heads", *m, *p, "--json", str(missing / "h.jsonl")], no_folder),
        (
            ["features", "build", *t, "--corpus", str(a_file), "-o", str(a_file)],
            f"-o/--out {a_file} is a file",
        ),
        (
            ["train", *m, "--corpus", str(a_file), "-o", str(a_file / "out")],
            "so the folder cannot be created",
        ),
        (["demo", "--out", str(a_file)], f"--out {a_file} is a file"),
    ]


def test_unwritable_outputs_fail_before_any_model_is_loaded(
    tiny_dirs: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    model, tc = tiny_dirs

    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded before the output path was checked")

    monkeypatch.setattr(ReplacementModel, "from_pretrained", no_loading)
    monkeypatch.setattr("circuitlab.heads.LabModel.load", no_loading)
    monkeypatch.setattr("circuitlab.models.loading.load_model", no_loading)
    failures = []
    for argv, fragment in _cases(tmp_path, tc, model):
        code = main(argv)
        err = capsys.readouterr().err.strip()
        ok = code == 2 and fragment in err and len(err.splitlines()) == 1
        if not ok or ".circuitlab.tmp" in err:
            failures.append(f"{argv}: exit {code}, {err!r}")
    assert not failures, "\n".join(failures)


def test_folders_are_created_and_files_may_replace_old_ones(tmp_path: Path) -> None:
    assert check_output_dir(tmp_path / "a" / "b", "--out") == tmp_path / "a" / "b"
    old = tmp_path / "old.json"
    old.write_text("{}")
    assert check_output_file(old, "--json") == old
    assert check_output_file("relative.json", "--json") == Path("relative.json")
    assert check_output_file(None, "--json") is None and check_output_dir(None, "--out") is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_a_read_only_folder_is_named(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(UsageError, match=f"the folder {locked} is not writable"):
            check_output_file(locked / "g.safetensors", "-o")
        with pytest.raises(UsageError, match="is not writable"):
            check_output_dir(locked / "new", "--out")
    finally:
        locked.chmod(0o700)


def test_library_writes_name_the_target_not_a_temporary_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"the folder {tmp_path / 'nope'} does not exist"):
        write_atomic(tmp_path / "nope" / "g.safetensors", b"x")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        write_atomic(tmp_path, b"x")
