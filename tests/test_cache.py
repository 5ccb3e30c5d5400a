"""Two processes building the same cache entry at once both succeed, and the entry is whole:
the packaged model's GGUF conversion and the fitted SmolLM2 transcoders, with the lock (the
second waits, nothing is built twice) and without it (both build; the rename race is won by
one and the other counts it as done)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from circuitlab.cache import build_once

# Runs in a child process: the slow parts (reading a GGUF, fitting transcoders) are replaced by
# a tiny model / random transcoders, made after both processes are ready and slowed down, so
# that the two builds overlap.
_CHILD = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[4])  # tests/, for the tiny tokenizer
root, what, lock = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "lock"
os.environ["CIRCUITLAB_CACHE"] = str(root / "cache")
import transformers
from circuitlab import cache, examples
from circuitlab.models import packaged
from circuitlab.models.tiny import tiny_model
from circuitlab.transcoders import random_transcoder_set
from conftest import tiny_tokenizer

if not lock:  # both processes build; only the rename decides
    import contextlib
    cache.locked = lambda path: contextlib.nullcontext()

def slow(value):
    (root / f"built-{os.getpid()}").touch()
    time.sleep(1.0)
    return value

packaged.packaged_gguf = lambda name="smollm2": root / "pkg" / "smollm2.gguf"
transformers.AutoModelForCausalLM.from_pretrained = lambda *a, **k: slow(
    tiny_model("llama", n_layers=1, d_model=16))
transformers.AutoTokenizer.from_pretrained = lambda *a, **k: tiny_tokenizer()
examples.packaged_model_dir = lambda name="smollm2": root / "model"
examples.fit_transcoders = lambda *a, **k: slow(random_transcoder_set(1, 16, 8))

(root / f"ready-{os.getpid()}").touch()
deadline = time.time() + 60
while len(list(root.glob("ready-*"))) < 2 and time.time() < deadline:
    time.sleep(0.01)
if what == "model":
    print(packaged.packaged_model_dir("smollm2"))
else:
    print(examples.fitted_transcoders_dir(d_transcoder=8, verbose=False))
"""


@pytest.mark.parametrize(
    ("what", "lock"), [("model", "lock"), ("model", "nolock"), ("transcoders", "lock")]
)
def test_two_processes_building_one_cache_entry_both_succeed(
    tmp_path: Path, what: str, lock: str
) -> None:
    tests = str(Path(__file__).parent)
    cmd = [sys.executable, "-c", textwrap.dedent(_CHILD), str(tmp_path), what, lock, tests]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-3000:]
    paths = {out.strip().splitlines()[-1] for out, _ in results}
    assert len(paths) == 1
    target = Path(paths.pop())
    marker = "config.json" if what == "model" else "config.yaml"
    assert (target / marker).is_file()
    if what == "model":
        assert any(target.glob("*.safetensors")) and (target / "tokenizer.json").is_file()
    else:
        assert (target / "layer_0.safetensors").is_file()
    built = len(list(tmp_path.glob("built-*")))
    assert built == (1 if lock == "lock" else 2)
    leftovers = [p.name for p in target.parent.iterdir() if p.name.endswith(".partial")]
    assert leftovers == []


def test_a_failed_build_leaves_no_entry_and_a_later_one_succeeds(tmp_path: Path) -> None:
    target = tmp_path / "entry"

    def failing(folder: Path) -> None:
        (folder / "half").write_text("x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        build_once(target, failing, marker="done")
    assert not target.exists()
    with pytest.raises(RuntimeError, match="wrote no done"):
        build_once(target, lambda folder: None, marker="done")
    target.mkdir()  # an incomplete leftover (e.g. from an older version) is replaced
    (target / "stale").write_text("x")

    def good(folder: Path) -> None:
        (folder / "done").write_text("ok")

    built = build_once(target, good, marker="done")
    assert built == target and (target / "done").read_text() == "ok"
    assert not (target / "stale").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".entry.lock", "entry"]
