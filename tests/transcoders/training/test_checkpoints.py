"""Checkpoints: at every interval, on SIGTERM (a real `circuitlab train` process), with the
metric accumulators; a resumed run equals the uninterrupted one, weights and metrics.json;
a finished run extends; a checkpoint exports as transcoders."""

from __future__ import annotations

import json
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
from circuitlab.transcoders import load_transcoders
from circuitlab.transcoders.training import TrainConfig, export_checkpoint, train_transcoders
from circuitlab.transcoders.training import trainer as trainer_mod

# the root tests/conftest.py (on sys.path), not tests/transcoders/conftest.py
from conftest import WORDS, tiny_tokenizer  # pyright: ignore[reportAttributeAccessIssue]

FAST: dict[str, Any] = dict(
    d_transcoder=32,
    k=3,
    batch_size=64,
    buffer_tokens=512,  # 8 minibatches per buffer
    context=16,
    model_batch=16,
    log_every=3,
    lr=1e-2,
    activation="jump_relu",
)


def _texts(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) for _ in range(n)]


def _train(out: Path, extend: bool = False, **kw: Any) -> Any:
    cfg = TrainConfig(**{**FAST, **kw})
    hf = tiny_model("llama", dtype=torch.float32)
    return train_transcoders(
        hf, _texts(), out, cfg, tokenizer=tiny_tokenizer(), extend=extend, verbose=False
    )


def _metrics(out: Path) -> Any:
    """metrics.json without wall times (the only thing an interruption may change)."""

    def strip(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k != "seconds"}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v

    return strip(json.loads((out / "metrics.json").read_text()))


def _ckpt_step(out: Path) -> int:
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    return json.loads(state["progress"])["step"]


def _assert_same_weights(a: Path, b: Path) -> None:
    for name in sorted(p.name for p in a.glob("*.safetensors")):
        from safetensors.torch import load_file

        x, y = load_file(a / name), load_file(b / name)
        assert x.keys() == y.keys()
        for key in x:
            torch.testing.assert_close(x[key], y[key], rtol=0, atol=0, msg=f"{name} {key}")


def test_checkpoint_at_the_first_interval_mid_buffer_and_resume_is_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kw: dict[str, Any] = dict(n_tokens=1920, checkpoint_every=5)  # checkpoints at 5, 10, ...
    _train(tmp_path / "a", **kw)
    real = trainer_mod._step
    calls = {"n": 0}

    def crashing(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 13:  # a crash: no handler runs; the checkpoint of step 10 remains
            raise RuntimeError("crash")
        real(*args, **kwargs)

    monkeypatch.setattr(trainer_mod, "_step", crashing)
    with pytest.raises(RuntimeError, match="crash"):
        _train(tmp_path / "b", **kw)
    assert _ckpt_step(tmp_path / "b") == 10  # step 10 is the 2nd minibatch of the 2nd buffer
    monkeypatch.setattr(trainer_mod, "_step", real)
    _train(tmp_path / "b", **kw)
    _assert_same_weights(tmp_path / "a" / "transcoders", tmp_path / "b" / "transcoders")
    assert _metrics(tmp_path / "b") == _metrics(tmp_path / "a")


_STOPPABLE = """
import sys, time
from pathlib import Path
from circuitlab.cli import main
from circuitlab.transcoders.training import trainer
real, calls, flag = trainer._step, [0], Path(sys.argv[2])
def step(*args, **kwargs):
    calls[0] += 1
    if calls[0] == int(sys.argv[1]):  # wait, in the middle of this step, for the SIGTERM
        flag.with_suffix(".reached").touch()
        deadline = time.time() + 120
        while not flag.with_suffix(".sent").exists() and time.time() < deadline:
            time.sleep(0.01)
    real(*args, **kwargs)
trainer._step = step
sys.exit(main(sys.argv[3:]))
"""


def _run_until_sigterm(args: list[str], at_step: int, flag: Path) -> subprocess.CompletedProcess:
    """Runs ``circuitlab train`` in a child process and sends it SIGTERM during step
    ``at_step`` (the child pauses there until the signal has been sent)."""
    cmd = [sys.executable, "-c", textwrap.dedent(_STOPPABLE), str(at_step), str(flag), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not flag.with_suffix(".reached").exists() and proc.poll() is None:
        assert time.time() < deadline, "the child never reached the step"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    flag.with_suffix(".sent").touch()
    out, err = proc.communicate(timeout=240)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _cli_args(tmp_path: Path, out: Path, **extra: str) -> list[str]:
    model = tmp_path / "model"
    if not model.is_dir():
        tiny_model("llama", dtype=torch.float32).save_pretrained(model)  # type: ignore[operator]
        tiny_tokenizer().save_pretrained(model)
        (tmp_path / "c.txt").write_text("\n\n".join(_texts()))
    args = ["train", "-m", str(model), "--corpus", str(tmp_path / "c.txt"), "-o", str(out)]
    args += ["--d-transcoder", "32", "--tokens", "1920", "--batch-size", "64"]
    args += ["--buffer-tokens", "512", "--context", "16", "--checkpoint-every", "100"]
    args += ["--eval-every", "4", "--eval-tokens", "60", "--lr", "1e-2", "--quiet"]
    for flag, value in extra.items():
        args += [f"--{flag.replace('_', '-')}", value]
    return args


def test_sigterm_checkpoints_and_the_resumed_run_equals_an_uninterrupted_one(
    tmp_path: Path,
) -> None:
    """A real `circuitlab train` process is sent SIGTERM during step 11 (mid buffer, between
    the checkpoint interval's multiples): it checkpoints, exits 143, and the rerun finishes with
    the same weights and metrics.json as a run never stopped."""
    straight = tmp_path / "straight"
    assert main(_cli_args(tmp_path, straight)) == 0
    out = tmp_path / "stopped"
    proc = _run_until_sigterm(_cli_args(tmp_path, out), 11, tmp_path / "flag")
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    assert "SIGTERM: stopped at step 11 of 30" in proc.stderr
    assert _ckpt_step(out) == 11 and not (out / "transcoders").exists()
    partial = json.loads((out / "metrics.json").read_text())
    assert not partial["done"] and partial["steps"] == 11

    assert main(_cli_args(tmp_path, out)) == 0
    _assert_same_weights(straight / "transcoders", out / "transcoders")
    assert _metrics(out) == _metrics(straight)
    # the interrupted checkpoint's export names the model relative to its own folder
    exported = export_checkpoint(straight / "checkpoint.pt", tmp_path / "a" / "b" / "c")
    assert "model_name: ../../../model" in (tmp_path / "a" / "b" / "c" / "config.yaml").read_text()
    assert getattr(exported, "model_name", None) == "../../../model"


def test_a_finished_run_extends_to_more_tokens(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _train(out, n_tokens=640)  # 10 steps
    first = _metrics(out)
    with pytest.raises(ValueError, match="--extend"):
        _train(out, n_tokens=1280)
    _train(out, n_tokens=1280, extend=True)
    m = _metrics(out)
    assert m["done"] and m["steps"] == 20 and m["tokens"] == 20 * 64
    assert m["history"][: len(first["history"])] == first["history"]
    assert m["history"][-1]["step"] == 20
    with pytest.raises(ValueError, match="already trained 20 steps"):
        _train(out, n_tokens=640, extend=True)
    # a rerun of the finished command trains nothing and changes nothing
    before = (out / "transcoders" / "layer_0.safetensors").read_bytes()
    _train(out, n_tokens=1280, extend=True)
    assert (out / "transcoders" / "layer_0.safetensors").read_bytes() == before


def test_a_checkpoint_exports_as_transcoders(tmp_path: Path) -> None:
    run = tmp_path / "run"
    trained = _train(run, n_tokens=640, kind="clt", skip=True)
    cli_out = tmp_path / "exported"
    assert main(["train", "--export", str(run / "checkpoint.pt"), "-o", str(cli_out)]) == 0
    _assert_same_weights(run / "transcoders", cli_out)
    tc = load_transcoders(str(cli_out))
    x = torch.randn(5, 16)
    torch.testing.assert_close(tc(x[None].expand(2, 5, 16)), trained(x[None].expand(2, 5, 16)))
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        export_checkpoint(tmp_path / "nothing", tmp_path / "x")
    assert main(["train", "--export", str(tmp_path / "nothing"), "-o", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()  # checked before the output folder is made
