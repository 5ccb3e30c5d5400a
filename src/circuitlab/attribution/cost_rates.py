"""The throughputs behind ``attribution.cost``'s time prediction, and how to measure them.

The backward sweep spends its time in three kinds of work (``attribution.backward``,
``attribution.sources``), each with its own speed on a given machine:

* **matmul**: dense projections (``W_O``, ``W_V``, the skip path), floating-point operations
  per second, as the sweep computes them;
* **pattern**: the attention pattern's products over causal key blocks
  (``backward.causal_matmul``), operations per second;
* **read**: (source, row) pairs per second that ``Sources.read`` projects a gradient onto,
  the sources being a layer's features and error nodes (rebuilt decoder vectors, batched
  products, scatter into the rows: memory-bound, so not a flop rate);
* **elementwise**: gradient entries per second of the tokens' read (a product and a sum over
  ``d`` for every row and position: ``sources._read_vectors``), memory-bound;
* **stream**: edge entries per second of one pass over stored rows (``|A|`` times a vector,
  as influence ranking does; also the rate of copying rows into blocks and writing them out).

``calibrate()`` measures the five with one torch thread in a few seconds, on tensors of the
sweep's shapes (SmolLM2-135M's ``d_model`` 576, ``d_head`` 64, 512 positions, 32 rows), and
``save_rates`` keeps them in the user cache (``cost-rates.json``) so later predictions on the
same machine use them (``circuitlab estimate-memory --calibrate``). Without a calibration the
rates of the reference machine (``REFERENCE``) apply.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

#: The file under the user cache that ``save_rates``/``load_rates`` use.
RATES_FILE = "cost-rates.json"


@dataclass(frozen=True)
class CostRates:
    """Throughputs of one CPU thread (or one device); see the module docstring."""

    matmul: float  # flop/s
    pattern: float  # flop/s
    read: float  # (feature, row) pairs per second
    elementwise: float  # gradient entries per second
    stream: float  # edge entries per second
    machine: str = "reference"

    def scaled_to(self, matmul: float) -> CostRates:
        """These rates with ``matmul`` set and the others scaled by the same factor (what
        ``--gflops`` does: one measured speed, the reference machine's proportions)."""
        if matmul <= 0:
            raise ValueError(f"the matmul rate must be positive, got {matmul}")
        f = matmul / self.matmul
        return replace(
            self,
            matmul=matmul,
            pattern=self.pattern * f,
            read=self.read * f,
            elementwise=self.elementwise * f,
            stream=self.stream * f,
            machine=f"{self.machine}, scaled to {matmul / 1e9:g} GFLOP/s",
        )


#: One torch thread of the 2-core machine this project is developed on (Intel Xeon, AVX-512,
#: torch 2.13): the median of three ``calibrate()`` runs on 2026-12-07, while the machine was
#: shared (load average 6-7), as the runs of ``benchmarks/capped.py`` it is compared with
#: (``benchmarks/README.md``, *Capped long prompts*). The three differed by up to 10%; the
#: memory-bound rates fall most when other jobs share the caches (the read rate halved beside
#: a long attribution).
REFERENCE = CostRates(matmul=95.8e9, pattern=118.9e9, read=10.8e6, elementwise=329e6, stream=366e6)


def machine_id() -> str:
    """What a calibration is valid for: processor, CPU count and torch's version."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} x{os.cpu_count()} torch {torch.__version__}"


def calibrate(seconds: float = 1.0) -> CostRates:
    """Measures the five rates with one torch thread, about ``seconds`` each (the thread
    count is restored afterwards)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        matmul, pattern = _attention_rates(seconds)
        return CostRates(
            matmul=matmul,
            pattern=pattern,
            read=_read_rate(seconds),
            elementwise=_elementwise_rate(seconds),
            stream=_stream_rate(seconds),
            machine=machine_id(),
        )
    finally:
        torch.set_num_threads(threads)


_D, _D_HEAD, _POS, _ROWS = 576, 64, 512, 32


def _timed(work: object, seconds: float) -> float:
    """Seconds of CPU per call of ``work()`` (called until ``seconds`` have passed; one
    warm-up call first)."""
    assert callable(work)
    work()
    n, start = 0, time.process_time()
    while True:
        work()
        n += 1
        spent = time.process_time() - start
        if spent >= seconds:
            return spent / n


def _attention_rates(seconds: float) -> tuple[float, float]:
    """``(matmul, pattern)`` rates of the sweep's transposed attention
    (``FrozenBackward._attention_t`` on one layer of SmolLM2's shapes, 9 heads sharing 3 value
    heads): the pattern's blocked products timed alone, the dense projections as the rest."""
    import torch

    from .backward import ATTENTION_BLOCK, FrozenBackward, _Layer, causal_matmul

    heads, kv = _D // _D_HEAD, 3
    sweep = FrozenBackward.__new__(FrozenBackward)  # only the head counts are needed
    sweep.n_heads, sweep.n_kv, sweep.d_head = heads, kv, _D_HEAD
    pattern = torch.rand(heads, _POS, _POS).tril()  # [heads, q, k]: zero where k > q
    layer = _Layer(
        pattern_t=pattern.transpose(1, 2),
        post_attn=None,
        ln2=None,
        post_mlp=None,
        W_V=torch.randn(kv * _D_HEAD, _D),
        W_O=torch.randn(_D, heads * _D_HEAD),
        W_skip=None,
    )
    grad, out = torch.randn(_ROWS, _POS, _D), torch.zeros(_ROWS, _POS, _D)
    x, gv = torch.randn(_ROWS * _D_HEAD, _POS), torch.zeros(_ROWS * _D_HEAD, _POS)
    per_head = _timed(lambda: causal_matmul(x, pattern[0], gv), seconds / 2)
    whole = _timed(lambda: sweep._attention_t(layer, grad, out), seconds)
    dense = 2 * _ROWS * _POS * _D * (heads + kv) * _D_HEAD
    pattern_flops = 2 * _ROWS * _D_HEAD * blocked_area(_POS, ATTENTION_BLOCK)
    # (the rest is at least a third of the whole: guards against a noisy subtraction)
    return dense / max(whole - heads * per_head, whole / 3), pattern_flops / per_head


def _read_rate(seconds: float, per_position: int = 16, d_transcoder: int = 4096) -> float:
    """``Sources.read`` of one layer's features (``per_position`` active at each of ``_POS``
    positions, random 4,096-feature transcoder) into ``_ROWS`` rows."""
    import torch

    from ..transcoders.base import SparseActivations
    from ..transcoders.random import random_transcoder_set
    from .sources import Sources, pack_decoders

    g = torch.Generator().manual_seed(0)
    tc = random_transcoder_set(1, _D, d_transcoder, seed=0)
    idx = torch.stack(
        [
            torch.randperm(d_transcoder, generator=g)[:per_position].sort().values
            for _ in range(_POS)
        ]
    )
    indices = torch.stack(
        [torch.zeros_like(idx), torch.arange(_POS)[:, None].expand_as(idx), idx], -1
    ).reshape(-1, 3)
    features = SparseActivations(indices, torch.rand(len(indices), generator=g) + 0.1)
    n_cols = len(features) + 2 * _POS
    sources = Sources(
        features=features,
        decoders=pack_decoders(tc, features, _POS, n_cols, torch.float32),
        errors=torch.randn(1, _POS, _D),
        tokens=torch.randn(_POS, _D),
        n_layers=1,
        n_pos=_POS,
    )
    out = torch.zeros(_ROWS, n_cols + 1)
    grad = torch.randn(_ROWS, _POS, _D)
    pairs = (len(features) + _POS) * _ROWS  # the features and one error node a position
    return pairs / _timed(lambda: sources.read(out, 0, grad), seconds)


def _elementwise_rate(seconds: float) -> float:
    """The tokens' read of a ``[_ROWS, _POS, _D]`` gradient, in entries per second."""
    import torch

    from .sources import READ_CHUNK_ELEMENTS, _read_vectors

    grad, tokens = torch.randn(_ROWS, _POS, _D), torch.randn(_POS, _D)
    out = torch.zeros(_ROWS, _POS)
    width = READ_CHUNK_ELEMENTS // (_ROWS * _D)
    work = lambda: _read_vectors(out, 0, grad, tokens, width)  # noqa: E731
    return _ROWS * _POS * _D / _timed(work, seconds)


def _stream_rate(seconds: float, rows: int = 64, cols: int = 2**18) -> float:
    """Entries per second of ``w @ |A|`` over ``A [rows, cols]`` (64 MiB, beyond the caches)."""
    import torch

    a, w = torch.randn(rows, cols), torch.rand(rows)
    return rows * cols / _timed(lambda: w @ a.abs(), seconds)


def blocked_area(n_pos: int, block: int) -> int:
    """Entries of a ``[n_pos, n_pos]`` transposed causal pattern that the blocked product
    touches: key block ``[lo, hi)`` reads queries ``lo..n_pos``."""
    return sum(min(block, n_pos - lo) * (n_pos - lo) for lo in range(0, n_pos, block))


def rates_path() -> Path:
    """``cost-rates.json`` in the user cache (``$CIRCUITLAB_CACHE`` or ``~/.cache/circuitlab``)."""
    from ..models.packaged import cache_dir

    return cache_dir() / RATES_FILE


def save_rates(rates: CostRates, path: Path | None = None) -> Path:
    """Writes ``rates`` (atomically) and returns the file."""
    path = rates_path() if path is None else path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(rates), indent=1))
    tmp.replace(path)
    return path


def load_rates(path: Path | None = None) -> CostRates:
    """The calibrated rates of this machine when a calibration for it is saved, else
    ``REFERENCE``."""
    path = rates_path() if path is None else path
    try:
        saved = CostRates(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return REFERENCE
    return saved if saved.machine == machine_id() else REFERENCE
