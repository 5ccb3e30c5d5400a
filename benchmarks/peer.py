"""Drive circuit-tracer 0.5.0 (the peer) from circuitlab's venv, in a subprocess.

The peer lives in its own venv (see benchmarks/README.md). Its interpreter is found at
``$CIRCUITLAB_PEER_PYTHON`` or ``/work/ct-venv/bin/python``; when neither works,
:func:`find_peer_python` returns ``None`` and :func:`peer_missing_reason` says why, so a
benchmark can skip its peer columns with a clear message.

    from peer import find_peer_python, run_peer          # run as a script from benchmarks/
    # or: from benchmarks.peer import ...                # from the repo root

    if find_peer_python() is None:
        print(f"skipping circuit-tracer columns: {peer_missing_reason()}")
    else:
        res = run_peer(model_dir, transcoder_dir, [bos, *ids], batch_size=64,
                       max_feature_nodes=512)
        res.adjacency_matrix, res.attribute_seconds, res.peak_rss_bytes

This module does not import circuitlab.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open

PEER_ENV_VAR = "CIRCUITLAB_PEER_PYTHON"
DEFAULT_PEER_PYTHON = Path("/work/ct-venv/bin/python")
CT_RUNNER = Path(__file__).resolve().with_name("ct_runner.py")
PEER_INSTALL_HINT = (
    "create it with: python3 -m venv /work/ct-venv && /work/ct-venv/bin/pip install torch==2.13.0 "
    "&& /work/ct-venv/bin/pip install circuit-tracer==0.5.0 && /work/ct-venv/bin/pip install "
    f"nnsight==0.6.3 (or point ${PEER_ENV_VAR} at a python that has circuit_tracer)"
)

Backend = Literal["nnsight", "transformerlens"]
DType = Literal["float32", "float64", "bfloat16", "float16"]


class PeerUnavailableError(RuntimeError):
    """No usable peer interpreter (circuit-tracer venv) was found."""


class PeerRunError(RuntimeError):
    """ct_runner.py failed; the message carries the command and the tail of its stderr."""

    def __init__(self, message: str, returncode: int | None, stderr: str) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


@dataclass(frozen=True)
class PeerResult:
    """circuit-tracer's graph for one prompt plus timings and memory, as written by ct_runner."""

    adjacency_matrix: torch.Tensor  # (N, N) float32, rows = targets, cols = sources
    active_features: torch.Tensor  # (n_active, 3) int64: layer, pos, feature
    selected_features: torch.Tensor  # (n_selected,) int64 indices into active_features
    activation_values: torch.Tensor  # (n_active,) float32
    logit_token_ids: torch.Tensor  # (n_logits,) int64
    logit_probabilities: torch.Tensor  # (n_logits,) float32
    input_tokens: torch.Tensor  # (n_pos,) int64, as the peer saw them
    metadata: dict[str, Any] = field(repr=False)
    subprocess_seconds: float = 0.0  # wall time of the whole subprocess (imports, load, run)

    @property
    def attribute_seconds(self) -> float:
        """Wall time of ``circuit_tracer.attribute`` alone (perf_counter)."""
        return float(self.metadata["timings_s"]["attribute_total"])

    @property
    def attribute_cpu_seconds(self) -> float:
        """CPU time (all threads) of ``circuit_tracer.attribute`` alone (process_time)."""
        return float(self.metadata["timings_s"]["attribute_cpu"])

    @property
    def load_seconds(self) -> float:
        """Transcoder + model load time (perf_counter), excluding interpreter/import start-up."""
        return float(self.metadata["timings_s"]["load_total"])

    @property
    def phase_seconds(self) -> dict[str, float]:
        """Per-phase times: precompute, forward, targets, logit_rows, feature_rows, packaging."""
        return {k: float(v) for k, v in self.metadata["timings_s"]["phases"].items()}

    @property
    def peak_rss_bytes(self) -> int:
        """Peak RSS of the peer process at the end (ru_maxrss), load included."""
        return int(self.metadata["memory_bytes"]["peak_end"])

    @property
    def rss_before_attribute_bytes(self) -> int:
        return int(self.metadata["memory_bytes"]["rss_before_attribute"])

    @property
    def attribute_peak_increment_bytes(self) -> int:
        """Peak RSS during attribute (the peak mark is reset just before it) minus RSS before it."""
        return int(self.metadata["memory_bytes"]["attribute_peak_increment"])

    @property
    def n_layers(self) -> int:
        return int(self.metadata["n_layers"])

    @property
    def n_pos(self) -> int:
        return int(self.input_tokens.shape[0])


def _has_circuit_tracer(python: str) -> str | None:
    """None if *python* runs and can find circuit_tracer, else the reason it can't."""
    code = "import importlib.util,sys; sys.exit(importlib.util.find_spec('circuit_tracer') is None)"
    try:
        proc = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=120, env=_peer_env()
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{python} does not run: {exc}"
    if proc.returncode != 0:
        return f"{python} has no circuit_tracer package"
    return None


@functools.lru_cache(maxsize=1)
def _probe() -> tuple[str | None, str]:
    env_value = os.environ.get(PEER_ENV_VAR)
    if env_value:
        candidates = [env_value]
    else:
        candidates = [str(DEFAULT_PEER_PYTHON)]
    reasons: list[str] = []
    for cand in candidates:
        if not Path(cand).exists():
            reasons.append(f"{cand} does not exist")
            continue
        why = _has_circuit_tracer(cand)
        if why is None:
            return cand, ""
        reasons.append(why)
    source = f"${PEER_ENV_VAR}" if env_value else f"default {DEFAULT_PEER_PYTHON}"
    return (
        None,
        f"peer circuit-tracer venv not usable ({source}: {'; '.join(reasons)}); {PEER_INSTALL_HINT}",
    )


def find_peer_python() -> str | None:
    """Path of the peer venv's python (``$CIRCUITLAB_PEER_PYTHON`` or /work/ct-venv), or None."""
    return _probe()[0]


def peer_missing_reason() -> str:
    """Why :func:`find_peer_python` returned None ("" when the peer is available)."""
    return _probe()[1]


def _peer_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    }
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        WANDB_DISABLED="true",
        PYTHONUNBUFFERED="1",
    )
    return env


def run_peer(
    model_dir: str | os.PathLike[str],
    transcoder_dir: str | os.PathLike[str],
    prompt_ids: Sequence[int],
    *,
    batch_size: int = 256,
    max_feature_nodes: int | None = None,
    max_n_logits: int = 10,
    desired_logit_prob: float = 0.95,
    update_interval: int = 4,
    dtype: DType = "float32",
    backend: Backend = "nnsight",
    offload: Literal["cpu", "disk"] | None = None,
    lazy_decoder: bool = True,
    threads: int | None = None,
    seed: int = 0,
    timeout: float | None = None,
    python: str | None = None,
    out_path: str | os.PathLike[str] | None = None,
    pt_out: str | os.PathLike[str] | None = None,
) -> PeerResult:
    """Run circuit-tracer's ``attribute`` on *prompt_ids* in the peer venv and read its result.

    *prompt_ids* are used as given (include the BOS yourself; if the first id is not a special
    token, circuit-tracer prepends one and ``result.input_tokens`` shows it). *transcoder_dir*
    must hold circuit-tracer's ``config.yaml`` + ``layer_{i}.safetensors`` (or a CLT's
    ``W_enc_{i}``/``W_dec_{i}`` files). Raises :class:`PeerUnavailableError` when no peer
    interpreter is found and :class:`PeerRunError` (with the subprocess's stderr) on failure.
    The output file is deleted afterwards unless *out_path* is given; *pt_out* also saves
    circuit-tracer's own ``.pt`` graph there (``Graph.to_pt``).
    """
    py = python or find_peer_python()
    if py is None:
        raise PeerUnavailableError(peer_missing_reason())
    ids = [int(t) for t in prompt_ids]
    if not ids:
        raise ValueError("prompt_ids is empty")

    tmpdir: tempfile.TemporaryDirectory[str] | None = None
    if out_path is None:
        tmpdir = tempfile.TemporaryDirectory(prefix="circuitlab_peer_")
        out = Path(tmpdir.name) / "peer.safetensors"
    else:
        out = Path(out_path)
    cmd = [
        py,
        str(CT_RUNNER),
        "--model", str(Path(model_dir).resolve()),
        "--transcoders", str(Path(transcoder_dir).resolve()),
        "--prompt-ids", json.dumps(ids),
        "--out", str(out),
        "--batch-size", str(batch_size),
        "--max-n-logits", str(max_n_logits),
        "--desired-logit-prob", repr(desired_logit_prob),
        "--update-interval", str(update_interval),
        "--dtype", dtype,
        "--backend", backend,
        "--seed", str(seed),
        "--lazy-decoder" if lazy_decoder else "--no-lazy-decoder",
    ]  # fmt: skip
    if max_feature_nodes is not None:
        cmd += ["--max-feature-nodes", str(max_feature_nodes)]
    if offload is not None:
        cmd += ["--offload", offload]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    if pt_out is not None:
        cmd += ["--pt-out", str(Path(pt_out).resolve())]

    try:
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, env=_peer_env()
            )
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            raise PeerRunError(
                f"circuit-tracer run timed out after {timeout}s\n{_tail(err)}", None, err
            ) from exc
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0 or not out.exists():
            shown = " ".join(cmd[:2] + ["..."])
            raise PeerRunError(
                f"circuit-tracer run failed (exit {proc.returncode}): {shown}\n"
                f"--- peer stderr (tail) ---\n{_tail(proc.stderr)}",
                proc.returncode,
                proc.stderr,
            )
        return _read(out, elapsed)
    finally:
        if tmpdir is not None:
            tmpdir.cleanup()


def read_peer_output(path: str | os.PathLike[str]) -> PeerResult:
    """Read a file written by ct_runner.py."""
    return _read(Path(path), 0.0)


def _read(path: Path, elapsed: float) -> PeerResult:
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as f:
        meta_raw = (f.metadata() or {}).get("ct_runner")
        for key in f.keys():
            tensors[key] = f.get_tensor(key)
    if meta_raw is None:
        raise PeerRunError(f"{path} has no ct_runner metadata", None, "")
    return PeerResult(
        adjacency_matrix=tensors["adjacency_matrix"],
        active_features=tensors["active_features"],
        selected_features=tensors["selected_features"],
        activation_values=tensors["activation_values"],
        logit_token_ids=tensors["logit_token_ids"],
        logit_probabilities=tensors["logit_probabilities"],
        input_tokens=tensors["input_tokens"],
        metadata=json.loads(meta_raw),
        subprocess_seconds=elapsed,
    )


def _tail(text: str, n_lines: int = 40) -> str:
    lines = text.strip().splitlines()
    return "\n".join(lines[-n_lines:]) if lines else "(no stderr)"


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/peer.py``: say whether the peer is available."""
    del argv
    py = find_peer_python()
    if py is None:
        print(peer_missing_reason())
        return 1
    print(f"peer python: {py}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
