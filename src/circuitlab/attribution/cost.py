"""Predicted CPU time and graph file size of ``attribute``, from shapes alone.

The companion of ``attribution.memory`` (same inputs; ``circuitlab estimate-memory`` prints
all three). Time is the work of each phase divided by the rate of that kind of work on this
machine (``attribution.cost_rates``: calibrated with ``circuitlab estimate-memory
--calibrate``, else the reference machine's):

* **forward**: the model's matmuls (``2 * params * tokens``, attention ``4 * layers * heads
  * d_head * tokens^2``, the unembedding) and the patterns it writes (``[layers, heads, pos,
  pos]``, streamed);
* **sources**: the transcoder encoders on every token (``2 * layers * tokens * d_transcoder
  * d_model``) and one read per active feature (reconstructions);
* **logit rows** and **feature rows**: the backward sweeps (``attribution.backward``). A sweep
  of ``rows`` targets whose furthest position is ``p - 1`` does, for every layer a row passes
  (``layer_steps``, summed over its rows: a row read at layer ``l`` passes ``l`` layers, a
  logit row all of them),

  - dense projections on ``p`` positions (``W_O``, ``W_V``, the skip path): ``2 p d (heads +
    kv_heads) d_head (+ 2 p d^2)`` flops at the *matmul* rate;
  - the transposed pattern on its blocked causal area (``cost_rates.blocked_area(p)``, the
    term quadratic in positions): ``2 heads d_head area`` flops at the *pattern* rate;

  and ``Sources.read`` projects each row's gradient onto the features written below its read
  layer at positions ``< p`` (``read_pairs``) and the error nodes there (``p`` a layer), at the
  memory-bound *read* rate; the tokens' read is ``p d`` entries per row at the *elementwise*
  rate. Each row is then copied into its edge blocks (*stream* rate, per entry).
* **ranking**: under a cap, the influence of every node is recomputed from the rows so far
  before each ranking chunk (one pass over the stored entries, *stream* rate);
* **graph**: the kept blocks renumbered and written (the file's entries, *stream* rate).

The row schedule is predicted as the engine runs it (``schedule``): logit rows in sweeps at
the last position; feature rows ranked in chunks of ``update_interval * batch_size`` (or all
at once uncapped), each chunk sorted by position and cut into sweeps of ``sweep_batch`` rows
(the batch that the memory check picks). What is *assumed*: uncapped, the rows are the active
features, spread evenly over the non-BOS positions and the layers (the ``j``-th of ``m``
sweeps reaches ``(j + 1) / m`` of the prompt, a row passes ``(L - 1) / 2`` layers); under a
cap, influence ranking first takes the last position's features (the ones the logits read
directly, ``n_active / (n - 1)`` of them, the deepest first), then features near the end of the
prompt and in the lower layers, which the schedule takes as spread evenly over the last
``SELECTION_WINDOW`` positions and passing ``SELECTED_DEPTH * L`` layers (measured on SmolLM2,
and prompt-dependent); each layer's active features spread evenly over the positions. ``benchmarks/capped.py`` compares this with measured runs, sweep by
sweep; the stated accuracy is ``TIME_TOLERANCE``.

The file (``graph.storage``) holds the kept edge rows in the edge dtype (selected features,
errors and tokens of earlier layers and positions, ``attribution.memory``'s row model
restricted to selected features), int32 node lists and the active features.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .cost_rates import REFERENCE, CostRates, blocked_area
from .memory import (
    _DTYPE_BYTES,
    DEFAULT_L0,
    POSITION_CHUNKS,
    ModelShapes,
    TranscoderShapes,
    human,
)

#: ``backward.ATTENTION_BLOCK`` (not imported: this module does not need torch).
ATTENTION_BLOCK = 256
#: ``attribute``'s default ``update_interval``: ranking chunks of this many sweeps' rows.
UPDATE_INTERVAL = 4
#: Under a cap, after the last position's features, the layers a chosen feature's row passes
#: on average, as a share of the model's layers: influence ranking picks shallow features
#: (SmolLM2 with the 30 x 4,096 PLTs, cap 7,500, ``benchmarks/capped.py``: 0.13 at 128 tokens,
#: 0.20 at 512; 0.18 puts the two complete runs' time at 0.80x and 1.44x the prediction).
SELECTED_DEPTH = 0.18
#: Under a cap, the chosen features lie near the end of the prompt: their positions are taken
#: as spread evenly over the last this many (measured: on average 37 positions before the end
#: at 128 tokens, 28 at 512).
SELECTION_WINDOW = 64
#: The stated accuracy of the time prediction: measured CPU time of one thread lies within
#: ``1 / TIME_TOLERANCE`` .. ``TIME_TOLERANCE`` of the prediction made with rates calibrated
#: under the same load (``benchmarks/README.md``, *Capped long prompts*).
TIME_TOLERANCE = 1.5


@dataclass(frozen=True)
class Sweep:
    """One backward sweep: ``rows`` targets; ``positions`` = its furthest target position + 1
    (the gradients are ``[rows, positions, d]``); ``layer_steps`` = layers passed, summed over
    its rows; ``read_pairs`` = (source feature, row) pairs ``Sources.read`` projects."""

    rows: int
    positions: int
    layer_steps: float
    read_pairs: float


@dataclass(frozen=True)
class CostEstimate:
    """Predicted CPU seconds per phase, the sweeps behind them and the graph file's bytes."""

    seconds: dict[str, float]
    file_bytes: int
    rates: CostRates
    sweeps: int
    sweep_batch: int
    feature_rows: int

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    @property
    def seconds_per_row(self) -> float:
        """Predicted CPU seconds per feature row (the sweeps and the rows' copies)."""
        return self.seconds["feature rows"] / max(1, self.feature_rows)

    def to_json(self) -> dict[str, Any]:
        return {
            "predicted_seconds": self.total_seconds,
            "seconds": self.seconds,
            "time_tolerance": TIME_TOLERANCE,
            "rates": asdict(self.rates),
            "sweeps": self.sweeps,
            "sweep_batch": self.sweep_batch,
            "file_bytes": self.file_bytes,
        }

    def report(self) -> str:
        r = self.rates
        lines = [
            f"predicted time: {self.total_seconds:,.0f} s of CPU (one thread; stated accuracy "
            f"x{TIME_TOLERANCE:g} either way), {self.sweeps:,} sweeps of up to "
            f"{self.sweep_batch} rows",
            f"  rates ({r.machine}): matmul {r.matmul / 1e9:.0f} GFLOP/s, pattern "
            f"{r.pattern / 1e9:.0f} GFLOP/s, read {r.read / 1e6:.1f} M pairs/s, elementwise "
            f"{r.elementwise / 1e6:.0f} M entries/s, stream {r.stream / 1e6:.0f} M entries/s"
            + ("" if r.machine != "reference" else " (`--calibrate` measures this machine's)"),
        ]
        lines += [f"  {k:<14}{v:>10,.1f} s" for k, v in self.seconds.items()]
        lines += [f"predicted graph file: {human(self.file_bytes)}"]
        return "\n".join(lines)


def sweep_work(model: ModelShapes, transcoders: TranscoderShapes, sweep: Sweep) -> dict[str, float]:
    """The work of one sweep: ``matmul`` and ``pattern`` flops, ``read`` pairs (see the module
    docstring)."""
    d, h, kv, dh, p = model.d_model, model.n_heads, model.n_kv_heads, model.d_head, sweep.positions
    dense = 2 * p * d * (h + kv) * dh + (2 * p * d * d if transcoders.skip else 0)
    pattern = 2 * h * dh * blocked_area(p, ATTENTION_BLOCK)
    return {
        "matmul": sweep.layer_steps * dense,
        "pattern": sweep.layer_steps * pattern,
        "read": sweep.read_pairs + sweep.layer_steps * p,  # features, errors (one a position)
        "elementwise": sweep.rows * p * d,  # the tokens' read
    }


def sweep_seconds(
    model: ModelShapes, transcoders: TranscoderShapes, sweep: Sweep, rates: CostRates
) -> float:
    """Predicted CPU seconds of one sweep (without the copy of its rows into the store)."""
    w = sweep_work(model, transcoders, sweep)
    return (
        w["matmul"] / rates.matmul
        + w["pattern"] / rates.pattern
        + w["read"] / rates.read
        + w["elementwise"] / rates.elementwise
    )


def schedule(
    model: ModelShapes,
    transcoders: TranscoderShapes,
    n_tokens: int,
    n_active: int,
    feature_rows: int,
    n_logits: int,
    sweep_batch: int,
    rank_every: int,
) -> tuple[list[Sweep], list[Sweep]]:
    """The predicted ``(logit sweeps, feature sweeps)`` of ``attribute`` (the module
    docstring's assumptions): ``feature_rows`` rows ranked ``rank_every`` at a time (all at
    once when ``feature_rows == n_active``), each chunk cut into sweeps of ``sweep_batch``."""
    L, n, b = model.n_layers, n_tokens, max(1, sweep_batch)
    n_out = (transcoders.n_layers + 1) / 2 if transcoders.kind == "clt" else 1
    per_layer = n_active / L * n_out  # features written into one layer
    logits = []
    for start in range(0, n_logits, b):
        k = min(b, n_logits - start)
        logits.append(Sweep(k, n, k * L, k * L * per_layer))
    if feature_rows < n_active:
        return logits, _capped_sweeps(L, n, per_layer, feature_rows, n_active, b, rank_every)
    # Uncapped: every active feature, spread evenly over the positions and the layers.
    features = []
    m = math.ceil(feature_rows / b)
    for j in range(m):
        k = min(b, feature_rows - j * b)
        p = max(1, min(n, round(n * (j + 1) / m)))
        steps = k * (L - 1) / 2
        # sources of earlier layers at positions < p (the BOS has none)
        features.append(Sweep(k, p, steps, steps * per_layer * max(p - 1, 0) / max(n - 1, 1)))
    return logits, features


def _capped_sweeps(
    L: int,
    n: int,
    per_layer: float,
    feature_rows: int,
    n_active: int,
    b: int,
    rank_every: int,
) -> list[Sweep]:
    """Feature sweeps under a cap: ranked first, the last position's features (what the logits
    read directly: ``n_active / (n - 1)`` of them, the deepest first, ``(L - 1) / 2`` layers
    on average), then features spread evenly over the last ``SELECTION_WINDOW`` positions
    passing ``SELECTED_DEPTH * L`` layers; each chunk of ``rank_every`` rows sorted by
    position and cut into sweeps of ``b``."""
    per_position = max(1, round(n_active / max(n - 1, 1)))  # the last position's features
    at_last = min(feature_rows, per_position)
    window = min(n - 1, SELECTION_WINDOW)
    sweeps = []
    for start in range(0, feature_rows, max(1, rank_every)):
        rows = min(rank_every, feature_rows - start)
        last = max(0, min(rows, at_last - start))
        spread = rows - last
        # each row's (position + 1, layers passed), sorted by position as the engine sorts;
        # the last position's features are ranked deepest first (L - 1 down to 0)
        pos = [n - window + window * (i + 1) / spread for i in range(spread)] + [n] * last
        depth = [SELECTED_DEPTH * L] * spread + [
            (L - 1) * (1 - (start + i + 0.5) / per_position) for i in range(last)
        ]
        for lo in range(0, rows, b):
            hi = min(lo + b, rows)
            p = max(1, min(n, round(pos[hi - 1])))
            steps = sum(depth[lo:hi])
            sweeps.append(Sweep(hi - lo, p, steps, steps * per_layer * (p - 1) / max(n - 1, 1)))
    return sweeps


def estimate_cost(
    model: ModelShapes,
    transcoders: TranscoderShapes,
    n_tokens: int,
    *,
    max_feature_nodes: int | None = 7500,
    max_n_logits: int = 10,
    batch_size: int = 256,
    sweep_batch: int | None = None,
    update_interval: int = UPDATE_INTERVAL,
    l0: float | None = None,
    n_active: int | None = None,
    edge_dtype: str = "float32",
    rates: CostRates = REFERENCE,
) -> CostEstimate:
    """CPU seconds per phase and file size of ``attribute`` on an ``n_tokens`` prompt (see the
    module docstring); ``l0``/``n_active`` as in ``attribution.memory.estimate_memory``.
    ``sweep_batch``: the rows per sweep (default ``batch_size``; the memory check may pick a
    halving of it, see ``memory_check.check_before_sweep``)."""
    L, d, n, T = model.n_layers, model.d_model, n_tokens, transcoders.d_transcoder
    if n_tokens < 1 or batch_size < 1:
        raise ValueError("n_tokens and batch_size must be at least 1")
    if l0 is None:
        l0 = transcoders.k if transcoders.k is not None else DEFAULT_L0
    if n_active is None:
        n_active = int(min(l0, T) * L * max(n - 1, 0))
    rows = min(max_feature_nodes if max_feature_nodes is not None else n_active, n_active)
    batch = sweep_batch or batch_size
    logit_sweeps, feature_sweeps = schedule(
        model, transcoders, n, n_active, rows, max_n_logits, batch, update_interval * batch_size
    )
    entries = row_entries(model, n, n_active)
    body = model.n_params - model.vocab_size * d
    forward = (
        2 * body * n + 4 * L * model.n_heads * model.d_head * n * n + 2 * n * d * model.vocab_size
    )
    patterns = L * model.n_heads * n * n  # written, then scaled in place by the sources phase
    sweep = sum(sweep_seconds(model, transcoders, s, rates) for s in feature_sweeps)
    seconds = {
        "forward": forward / rates.matmul + patterns / rates.stream,
        "sources": 2 * L * n * T * d / rates.matmul
        + n_active / rates.read
        + patterns / rates.stream,
        "logit rows": sum(sweep_seconds(model, transcoders, s, rates) for s in logit_sweeps)
        + max_n_logits * (n_active + (L + 1) * n) / rates.stream,
        "feature rows": sweep + rows * entries / rates.stream,
        "ranking": ranking_entries(
            model, n, rows, n_active, max_n_logits, update_interval * batch_size
        )
        / rates.stream,
        "graph": file_entries(model, n, rows, n_active, max_n_logits) / rates.stream,
    }
    return CostEstimate(
        seconds,
        file_bytes(model, transcoders, n, rows, n_active, max_n_logits, edge_dtype),
        rates,
        len(logit_sweeps) + len(feature_sweeps),
        batch,
        rows,
    )


def row_entries(model: ModelShapes, n_tokens: int, n_active: int) -> float:
    """Stored entries of an average feature row: features and errors of earlier layers and the
    tokens, up to its position chunk's end (``graph.edges``)."""
    L, n = model.n_layers, n_tokens
    pos_share = 0.5 + 0.5 / min(n, POSITION_CHUNKS)
    return (n_active * (L - 1) / (2 * L) + (L - 1) / 2 * n + n) * pos_share


def ranking_entries(
    model: ModelShapes, n_tokens: int, rows: int, n_active: int, n_logits: int, rank_every: int
) -> float:
    """Entries the influence passes read before the ranking chunks (none uncapped): the logit
    rows and the feature rows done so far, before each chunk of ``rank_every`` rows."""
    if rows >= n_active:
        return 0.0
    logit_entries = n_logits * (n_active + (model.n_layers + 1) * n_tokens)
    entries = row_entries(model, n_tokens, n_active)
    return sum(logit_entries + done * entries for done in range(0, rows, max(1, rank_every)))


def file_entries(
    model: ModelShapes, n_tokens: int, rows: int, n_active: int, n_logits: int
) -> float:
    """Edge entries of the graph's kept blocks (``file_bytes``' values, in entries)."""
    L, n = model.n_layers, n_tokens
    pos_share = 0.5 + 0.5 / min(n, POSITION_CHUNKS)
    feature_row = (rows * (L - 1) / (2 * L) + (L - 1) / 2 * n + n) * pos_share
    return n_logits * (rows + (L + 1) * n) + rows * feature_row


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
    values = file_entries(model, n, rows, n_active, n_logits) * _DTYPE_BYTES[edge_dtype]
    node_lists = 4 * (rows + n_logits + L * POSITION_CHUNKS * (rows + (L + 1) * n) / 2)
    features = n_active * (3 * 8 + 4) + rows * 8 + n * 8
    return int(values + node_lists + features + 64 * 2**10)
