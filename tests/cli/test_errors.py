"""Every subcommand: ``--help`` shows examples; user mistakes give one line naming the problem
and the fix, a non-zero exit, and no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from circuitlab.cli import _commands, main

COMMANDS = [m.NAME for m in _commands()]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_works_and_shows_examples(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    examples = out.split("examples:")[1]
    assert f"circuitlab {command}" in examples
    lines = examples.strip("\n").splitlines()
    for prev, line in zip(lines, lines[1:], strict=False):
        assert "      --" not in line.strip(), f"a lost line break in: {line}"
        if line.startswith("      "):
            assert prev.endswith("\\"), f"continuation without a backslash: {prev}"


def test_every_command_is_listed(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(c in out for c in COMMANDS)
    assert {"attribute", "batch", "estimate-memory", "serve"} <= set(COMMANDS)


def _cases(tmp: Path, tc: Path, model: Path) -> list[tuple[list[str], str]]:
    """``(argv, a fragment the one-line message must contain)``."""
    bad_jsonl = tmp / "bad.jsonl"
    bad_jsonl.write_text('{"prompt": "a"}\n{"prompt": "b",}\n')
    good_jsonl = tmp / "good.jsonl"
    good_jsonl.write_text('{"prompt": "the capital of"}\n')
    a_file = tmp / "file.txt"
    a_file.write_text("x")
    empty_dir = tmp / "empty"
    empty_dir.mkdir(exist_ok=True)
    garbage_tc, odd_tc = tmp / "garbage-tc", tmp / "odd-tc"
    for d in (garbage_tc, odd_tc):
        d.mkdir(exist_ok=True)
    hooks = "feature_input_hook: mlp.hook_in\nfeature_output_hook: hook_mlp_out\n"
    (garbage_tc / "config.yaml").write_text("model_kind: transcoder_set\n" + hooks)
    (garbage_tc / "layer_0.safetensors").write_text("garbage")
    (odd_tc / "config.yaml").write_text("model_kind: sparse_thing\n" + hooks)
    t, m = ["-t", str(tc)], ["-m", str(model)]
    return [
        # attribute
        (["attribute", "-p", "x", "-t", "/nope/tc", "-o", "g.safetensors"], "no such file"),
        (["attribute", "-p", "x", "-t", str(empty_dir), "-o", "g.safetensors"], "no config.yaml"),
        (["attribute", "-p", "x", *t, "-m", "/nope/model", "-o", "g.safetensors"], "-m/--model"),
        (["attribute", "-p", "x", *t, "-m", str(empty_dir), "-o", "g"], "no config.json"),
        (["attribute", "-p", "x", *t, "-o", "g", "--backend", "tl"], "invalid choice: 'tl'"),
        (["attribute", "-p", "x", *t, "-m", "nobody/no-model", "-o", "g"], "Hugging Face hub"),
        (["attribute", "-p", "x", "-t", str(garbage_tc), *m, "-o", "g"], "not readable"),
        (["attribute", "-p", "x", "-t", str(odd_tc), *m, "-o", "g"], "unknown model_kind"),
        (["attribute", "-p", "x", *t], "nothing would be saved"),
        (["attribute", "-p", "x", *t, "--server", "-o", "g"], "--server needs --slug"),
        (["attribute", "-p", "x", *t, "-o", "g", "--batch_size", "0"], "--batch_size must be"),
        (["attribute", "-p", "x", *t, "-o", "g", "--desired_logit_prob", "2"], "(0, 1]"),
        (["attribute", "-p", "x", *t, "--offload", "gpu"], "invalid choice"),
        (["attribute", "-p", "x"], "required: -t/--transcoder_set"),
        (
            [
                "attribute",
                "-p",
                "the capital",
                *t,
                "-o",
                str(tmp / "g.safetensors"),
                "--target",
                "not-one-token",
            ],
            "exactly one token",
        ),  # fmt: skip
        # batch
        (["batch", str(tmp / "nope.jsonl"), "--out", str(tmp / "o"), *t], "no such prompt file"),
        (["batch", str(bad_jsonl), "--out", str(tmp / "o"), *t], "bad.jsonl line 2: not valid"),
        (["batch", str(good_jsonl), "--out", str(tmp / "o"), *t, "--num-gpus", "1"], "add --ray"),
        (["batch", str(good_jsonl), "--out", str(a_file), *t], "is a file"),
        (["batch", str(good_jsonl), "--out", str(tmp / "o"), "-t", "/nope"], "no such file"),
        # estimate-memory
        (["estimate-memory", "-t", "/nope", "--n-tokens", "8"], "no such file"),
        (["estimate-memory", *t], "one of the arguments -p/--prompt --n-tokens is required"),
        (["estimate-memory", *t, "--n-tokens", "0"], "--n-tokens must be at least 1"),
        (["estimate-memory", *t, "-p", "x", "--n-tokens", "3"], "not allowed with"),
        (["estimate-memory", *t, "-m", str(empty_dir), "--n-tokens", "3"], "no config.json"),
        # serve
        (["serve", "--graph_file_dir", str(tmp / "nope")], "is not a folder"),
        (["serve", "--graph_file_dir", str(tmp), "--port", "0"], "--port must be"),
        # intervene / generate
        (["intervene", "-p", "x", *t], "no interventions given"),
        (["intervene", "-p", "x", "--ablate", "a", "0", "1"], "L must be an integer"),
        (["intervene", "-p", "x", "--ablate", "0", "1", "2"], "no model"),
        (["generate", "-p", "x", "--pinned", *t], "--graph-json"),
        (["generate", "-p", "x", "--graph-json", str(tmp / "no.json"), "--pinned", *t], "no.json"),
        # heads
        (["heads", "-p", "x"], "pass -m/--model"),
        (["heads", "-m", "smollm2", "-p", "x", "--preset", "ioi"], "exactly one of"),
        (["heads", "-m", "smollm2", "-p", "x", "--patch", "neurons"], "unknown --patch kind"),
        (["heads", "-m", "/nope/model", "-p", "x"], "/nope/model"),
        (["heads", "-m", "nobody/no-model", "-p", "x"], "Hugging Face hub"),
        # features
        (["features", "build", *t, "--corpus", str(tmp / "c.txt"), "-o", str(tmp)], "c.txt"),
        (["features", "build", *t, "--corpus", "x.txt", "-o", str(tmp), "--top-k", "0"], "--top-k"),
        (["features", "show", str(tmp / "nope"), "0", "1"], "nope"),
        # train
        (["train", *m, "--corpus", str(tmp / "c.txt"), "-o", str(tmp / "t")], "c.txt"),
        (
            [
                "train",
                *m,
                "--corpus",
                str(a_file),
                "-o",
                str(tmp / "t"),
                "--k",
                "99",
                "--activation",
                "topk",
                "--d-transcoder",
                "8",
            ],
            "exceeds --d-transcoder",
        ),  # fmt: skip
        (
            ["train", "-m", "/nope/model", "--corpus", str(a_file), "-o", str(tmp / "t")],
            "-m/--model /nope/model: no such file or folder",
        ),
        (
            ["features", "build", "-m", "./nope", *t, "--corpus", str(a_file), "-o", str(tmp)],
            "-m/--model ./nope: no such file or folder",
        ),
        (["generate", "-p", "x", *t, "-m", "/nope", "--ablate", "0", "1", "2"], "no such file"),
        (["serve", "--graph_file_dir", str(tmp), "-m", "/nope/m", *t], "no such file or folder"),
    ]


def _progress(line: str) -> bool:
    """A progress bar (e.g. transformers' "Loading weights") or a warning, not the error."""
    return "it/s]" in line or "%|" in line or "warning" in line.lower()


def test_user_mistakes_give_one_line_and_no_traceback(
    tiny_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    """Each case in a fresh ``python -m circuitlab`` (the real entry point, offline)."""
    model, tc = tiny_dirs
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    failures = []
    cases = _cases(tmp_path, tc, model)
    script = (
        "import sys, json; from circuitlab.cli import main\n"
        "for argv in json.loads(sys.stdin.read()):\n"
        "    try:\n"
        "        code = main(argv)\n"
        "    except SystemExit as e:\n"
        "        code = e.code\n"
        "    print('@@', code, flush=True); print('@@', file=sys.stderr, flush=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps([c for c, _ in cases]),
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    codes = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("@@")]
    errs = proc.stderr.split("@@\n")
    assert len(codes) == len(cases), proc.stderr[-3000:]
    for (argv, fragment), code, err in zip(cases, codes, errs, strict=False):
        lines = [ln for ln in err.splitlines() if ln.strip() and not _progress(ln)]
        if code in ("0", "None") or "Traceback" in err or len(lines) != 1 or fragment not in err:
            failures.append(f"{argv}: exit {code}, stderr {err.strip()!r}")
    assert not failures, "\n".join(failures)
