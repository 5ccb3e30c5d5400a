"""Predicted wall time and graph file size of ``attribute``, from shapes alone.

The companion of ``attribution.memory`` (same inputs; ``circuitlab estimate-memory`` prints
all three). Time is counted in floating-point operations per phase and divided by a rate:

* **forward**: the model's matmuls (``2 * params * tokens``), attention (``4 * layers *
  heads * d_head * tokens^2``) and the unembedding;
* **sources**: the transcoder encoders on every token (``2 * layers * tokens * d_transcoder
  * d_model``);
* **rows**: per row, for each layer it passes (all of them for a logit row, half on average
  for a feature row), the transposed attention on the causal half of ``[pos, pos]`` per head
  (the cost that grows with ``tokens^2`` and dominates long prompts), the value and output
  projections, the skip path, and the projection onto the sources written there; a feature
  row's batch reaches on average ``FEATURE_ROW_REACH`` of the prompt (rows are batched by
  position); plus the row's copy into its edge blocks.

``FLOPS_PER_SECOND`` was measured with ``benchmarks/capped.py`` on the 2-core machine this
project is developed on (SmolLM2-135M, 4,096-feature PLTs; CPU time of one torch thread, which
the other jobs on that shared machine do not stretch as they do wall time); other machines
differ, a GPU by one to two orders of magnitude: pass ``flops_per_second`` (CLI ``--gflops``)
measured there, e.g. from one short run (``seconds = flops / rate``).

The file (``graph.storage``) holds the kept edge rows in the edge dtype (selected features,
errors and tokens of earlier layers and positions, ``attribution.memory``'s row model
restricted to selected features), int32 node lists and the active features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .memory import (
    _DTYPE_BYTES,
    DEFAULT_L0,
    POSITION_CHUNKS,
    ModelShapes,
    TranscoderShapes,
    human,
)

#: Operations per CPU-second of one torch thread on the reference machine (2 cores), fitted to
#: ``benchmarks/capped.py`` (SmolLM2, cap 7,500: 74 s of CPU at 128 tokens).
FLOPS_PER_SECOND = 150e9
#: The transposed attention's rate relative to ``FLOPS_PER_SECOND``: its ``[256, pos]`` blocks of
#: a transposed pattern run slower than the projections (fitted to 2,048 tokens).
ATTENTION_RATE = 0.25
#: The furthest position of a feature row's batch, as a share of the prompt.
FEATURE_ROW_REACH = 0.75
#: Block of ``backward.ATTENTION_BLOCK`` (not imported: this module does not need torch).
ATTENTION_BLOCK = 256


@dataclass(frozen=True)
class CostEstimate:
    """Predicted seconds per phase and the graph file's bytes."""

    seconds: dict[str, float]
    file_bytes: int
    flops_per_second: float

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    def seconds_per_row(self, n_rows: int) -> float:
        return self.seconds["feature rows"] / max(1, n_rows)

    def to_json(self) -> dict[str, Any]:
        return {
            "predicted_seconds": self.total_seconds,
            "seconds": self.seconds,
            "flops_per_second": self.flops_per_second,
            "file_bytes": self.file_bytes,
        }

    def report(self) -> str:
        lines = [
            f"predicted time: {self.total_seconds:,.0f} s at {self.flops_per_second / 1e9:.0f} "
            f"GFLOP/s (one CPU thread of the reference machine unless --gflops; a GPU is one to two orders faster)"
        ]
        lines += [f"  {k:<14}{v:>10,.1f} s" for k, v in self.seconds.items()]
        lines += [f"predicted graph file: {human(self.file_bytes)}"]
        return "\n".join(lines)


def causal_share(n_pos: int) -> float:
    """Share of ``[pos, pos]`` the blocked transposed attention computes on."""
    n_blocks = -(-n_pos // ATTENTION_BLOCK)
    return (n_blocks + 1) / (2 * n_blocks)


def row_flops(
    model: ModelShapes,
    transcoders: TranscoderShapes,
    n_layers: float,
    p: float,
    n_tokens: int,
    n_active: int,
) -> float:
    """Operations of one row passing ``n_layers`` layers at its batch's first ``p`` positions
    (of ``n_tokens``; ``n_active`` features)."""
    d, h, dh = model.d_model, model.n_heads, model.d_head
    attention = 2 * h * dh * p * p * causal_share(int(p)) / ATTENTION_RATE  # in matmul terms
    projections = 2 * p * d * (h + model.n_kv_heads) * dh
    skip = 2 * p * d * d if transcoders.skip else 0
    n_out = (transcoders.n_layers + 1) / 2 if transcoders.kind == "clt" else 1
    read = 2 * d * (n_active / model.n_layers * n_out * p / n_tokens + p)
    return n_layers * (attention + projections + skip + read)


def estimate_cost(
    model: ModelShapes,
    transcoders: TranscoderShapes,
    n_tokens: int,
    *,
    max_feature_nodes: int | None = 7500,
    max_n_logits: int = 10,
    l0: float | None = None,
    n_active: int | None = None,
    edge_dtype: str = "float32",
    flops_per_second: float = FLOPS_PER_SECOND,
) -> CostEstimate:
    """Wall time per phase and file size of ``attribute`` on an ``n_tokens`` prompt (see the
    module docstring); ``l0``/``n_active`` as in ``attribution.memory.estimate_memory``."""
    if flops_per_second <= 0:
        raise ValueError(f"flops_per_second must be positive, got {flops_per_second}")
    L, d, n, T = model.n_layers, model.d_model, n_tokens, transcoders.d_transcoder
    if l0 is None:
        l0 = transcoders.k if transcoders.k is not None else DEFAULT_L0
    if n_active is None:
        n_active = int(min(l0, T) * L * max(n - 1, 0))
    rows = min(max_feature_nodes if max_feature_nodes is not None else n_active, n_active)
    n_cols = n_active + (L + 1) * n
    body = model.n_params - model.vocab_size * d
    flops = {
        "forward": 2 * body * n
        + 4 * L * model.n_heads * model.d_head * n * n
        + 2 * n * d * model.vocab_size,
        "sources": 2 * L * n * T * d,
        "logit rows": max_n_logits
        * (row_flops(model, transcoders, L, n, n, n_active) + 10 * n_cols),
        "feature rows": rows
        * (row_flops(model, transcoders, L / 2, FEATURE_ROW_REACH * n, n, n_active) + 10 * n_cols),
    }
    seconds = {k: v / flops_per_second for k, v in flops.items()}
    return CostEstimate(
        seconds,
        file_bytes(model, transcoders, n_tokens, rows, n_active, max_n_logits, edge_dtype),
        flops_per_second,
    )


def file_bytes(
    model: ModelShapes,
    transcoders: TranscoderShapes,
    n_tokens: int,
    rows: int,
    n_active: int,
    n_logits: int,
    edge_dtype: str = "float32",
) -> int:
    """Bytes of the saved graph (``graph.storage``): edge values, node lists, features."""
    L, n = model.n_layers, n_tokens
    eb = _DTYPE_BYTES[edge_dtype]
    pos_share = 0.5 + 0.5 / min(n, POSITION_CHUNKS)
    feature_row = (rows * (L - 1) / (2 * L) + (L - 1) / 2 * n + n) * pos_share
    logit_row = rows + (L + 1) * n
    values = (n_logits * logit_row + rows * feature_row) * eb
    node_lists = 4 * (rows + n_logits + L * POSITION_CHUNKS * (rows + (L + 1) * n) / 2)
    features = n_active * (3 * 8 + 4) + rows * 8 + n * 8
    return int(values + node_lists + features + 64 * 2**10)
