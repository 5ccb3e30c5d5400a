"""Data-parallel training: `torchrun --nproc_per_node 2 --standalone` (gloo, two CPU processes)
gives the weights and metrics of one process on the same data; rank 0 alone writes; SIGTERM
under torchrun checkpoints and the resumed run still equals the single process."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from circuitlab.cli import main
from circuitlab.models.tiny import tiny_model
from circuitlab.transcoders.training import TrainConfig
from circuitlab.transcoders.training import trainer as trainer_mod
from circuitlab.transcoders.training.distributed import World

# the root tests/conftest.py (on sys.path), not tests/transcoders/conftest.py
from conftest import WORDS, tiny_tokenizer  # pyright: ignore[reportAttributeAccessIssue]

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _texts(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) for _ in range(n)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    tiny_model("llama", dtype=torch.float32).save_pretrained(root / "model")  # type: ignore[operator]
    tiny_tokenizer().save_pretrained(root / "model")
    (root / "c.txt").write_text("\n\n".join(_texts()))
    return root


def _args(root: Path, out: Path, activation: str) -> list[str]:
    """BatchTopK with AuxK (a 256-token dead window: AuxK is on from step 5) or JumpReLU with
    its sparsity penalty, in float64, with held-out evaluation every 10 steps."""
    args = ["train", "-m", str(root / "model"), "--corpus", str(root / "c.txt"), "-o", str(out)]
    args += ["--activation", activation, "--k", "3", "--d-transcoder", "32"]
    args += ["--tokens", "1920", "--batch-size", "64", "--buffer-tokens", "512"]
    args += ["--context", "16", "--dead-window", "256", "--lr", "1e-2", "--eval-every", "10"]
    args += ["--eval-tokens", "60", "--cache-activations", str(root / "cache")]
    return [*args, "--train-dtype", "float64", "--checkpoint-every", "100", "--quiet"]


def _torchrun(cmd: list[str], **kw: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kw
    )


def _state(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoint.pt", weights_only=True)["model"]


def _assert_same_run(a: Path, b: Path) -> None:
    """Weights (float64 training) and metrics.json, wall times aside, of two finished runs."""
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=1e-9, atol=1e-11, msg=key)
    ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (a, b))
    assert ma["done"] and mb["done"] and ma["steps"] == mb["steps"] == 30
    assert ma["tokens"] == mb["tokens"] == 1920
    for ha, hb in zip(ma["history"] + ma["held_out"], mb["history"] + mb["held_out"], strict=True):
        assert ha["step"] == hb["step"] and ha["tokens"] == hb["tokens"]
        for name in ("fvu", "l0", "dead"):
            assert ha[name] == pytest.approx(hb[name], rel=1e-9, abs=1e-12), (ha["step"], name)
    assert len(ma["held_out"]) == 3


@pytest.mark.parametrize("activation", ["batchtopk", "jump_relu"])
def test_two_gloo_processes_equal_one_process(setup: Path, activation: str) -> None:
    one, two = setup / f"one-{activation}", setup / f"two-{activation}"
    assert main(_args(setup, one, activation)) == 0
    proc = _torchrun([*TORCHRUN, "-m", "circuitlab", *_args(setup, two, activation)])
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    _assert_same_run(one, two)
    assert stdout.count("saved ") == 1  # rank 0 alone reports
    assert not list(two.glob(".*tmp"))  # nothing half-written by a second writer
    if activation == "batchtopk":  # the AuxK and global-threshold paths ran
        m = json.loads((two / "metrics.json").read_text())
        assert any(d > 0 for h in m["history"] for d in h["dead"])


_STOPPABLE = """
import os, sys, time
from pathlib import Path
from circuitlab.cli import main
from circuitlab.transcoders.training import trainer
real, calls, flag = trainer._step, [0], Path(sys.argv[2])
def step(*args, **kwargs):
    calls[0] += 1
    if calls[0] == int(sys.argv[1]) and os.environ["RANK"] == "0":  # rank 1 waits in DDP
        flag.with_suffix(".reached").touch()
        deadline = time.time() + 120
        while not flag.with_suffix(".sent").exists() and time.time() < deadline:
            time.sleep(0.01)
    real(*args, **kwargs)
trainer._step = step
sys.exit(main(sys.argv[3:]))
"""


def test_sigterm_under_torchrun_checkpoints_and_the_resumed_run_equals_one_process(
    setup: Path,
) -> None:
    one, two = setup / "one-batchtopk", setup / "stopped"
    if not (one / "checkpoint.pt").is_file():
        assert main(_args(setup, one, "batchtopk")) == 0
    script, flag = setup / "stoppable.py", setup / "flag"
    script.write_text(textwrap.dedent(_STOPPABLE))
    args = _args(setup, two, "batchtopk")
    proc = _torchrun([*TORCHRUN, str(script), "13", str(flag), *args])
    deadline = time.time() + 240
    while not flag.with_suffix(".reached").exists() and proc.poll() is None:
        assert time.time() < deadline, "rank 0 never reached the step"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # torchrun passes it on to both workers
    flag.with_suffix(".sent").touch()
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode != 0
    assert "SIGTERM: stopped at step 13 of 30" in stderr, stderr[-3000:]
    state = torch.load(two / "checkpoint.pt", weights_only=True)
    assert json.loads(state["progress"])["step"] == 13 and not (two / "transcoders").exists()

    proc = _torchrun([*TORCHRUN, "-m", "circuitlab", *args])
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    _assert_same_run(one, two)


def test_several_processes_need_the_activation_cache_and_an_even_batch() -> None:
    two = World(rank=0, size=2)
    with pytest.raises(ValueError, match="--cache-activations"):
        trainer_mod._check_world(TrainConfig(), two)
    with pytest.raises(ValueError, match="multiple of 2"):
        trainer_mod._check_world(TrainConfig(cache_dir="c", batch_size=63), two)
    trainer_mod._check_world(TrainConfig(cache_dir="c", batch_size=64), two)
