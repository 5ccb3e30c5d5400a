"""``attribute``: build the attribution graph of a prompt, phase by phase.

Phases (timed; ``verbose=True`` prints a report and shows a progress bar):

0. forward: one plain forward pass records patterns, norm scales, transcoder inputs/outputs;
1. sources: active features, error vectors, token embeddings; the transposed frozen model;
2. targets: salient logits or the requested targets;
3. logit rows: the edges into each target;
4. feature rows: edges into features, chosen greedily by estimated influence on the targets
   when ``max_feature_nodes`` is below the number of active features;
5. graph: rows ordered as ``[selected features | logits]``, columns as ``[selected features |
   errors | tokens | logits]``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import torch
from tqdm.auto import tqdm

from ..graph.edges import EDGE_DTYPES
from ..graph.graph import Graph
from ..replacement import Prompt, ReplacementModel
from ..transcoders.base import SparseActivations
from ..transcoders.identity import transcoder_fingerprint
from .backward import FrozenBackward
from .edge_store import EdgeRows
from .memory_check import check_before_forward, check_before_sweep
from .offload import OFFLOAD_MODES, SpillFile, offloaded
from .sources import Sources
from .spill_space import check_spill_space
from .targets import Targets, TargetSpec, resolve_targets

logger = logging.getLogger("circuitlab.attribution")


Progress = Callable[[str, int, int], None]  # (phase, done, total)


class _Timer:
    def __init__(self, verbose: bool, progress: Progress | None = None):
        self.verbose = verbose
        self.progress = progress
        self.times: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.progress is not None:
            self.progress(name, 0, 1)
        start = time.perf_counter()
        yield
        self.times[name] = time.perf_counter() - start
        logger.info("%s: %.3fs", name, self.times[name])

    def report(self) -> str:
        total = sum(self.times.values())
        lines = [f"  {k:<14}{v:8.3f}s" for k, v in self.times.items()]
        return "\n".join(["attribution phases:", *lines, f"  {'total':<14}{total:8.3f}s"])


@torch.no_grad()
def attribute(
    model: ReplacementModel,
    prompt: Prompt,
    *,
    attribution_targets: Sequence[TargetSpec] | torch.Tensor | None = None,
    max_n_logits: int = 10,
    desired_logit_prob: float = 0.95,
    max_feature_nodes: int | None = None,
    batch_size: int = 256,
    update_interval: int = 4,
    offload: str | None = None,
    verbose: bool = False,
    progress: Progress | None = None,
    check_memory: bool = True,
    edge_dtype: str | torch.dtype | None = None,
) -> Graph:
    """The attribution graph of ``prompt`` in ``model``'s local replacement model.

    ``attribution_targets``: None (salient logits), token strings or ids, ``LogitDiff`` or
    ``CustomTarget`` items (see ``attribution.targets``). ``max_feature_nodes`` caps the number
    of feature rows; features are then chosen greedily by influence, re-ranked every
    ``update_interval * batch_size`` rows. ``batch_size`` targets share one backward sweep.
    ``offload`` ("cpu" or "disk") moves the MLPs and transcoders off the model's device (or
    to a temporary file) while the sweep runs, for models that barely fit; they are restored
    afterwards, also on error. ``"disk"`` also writes the edge blocks to an unlinked temporary
    file as they are computed and keeps them as memory maps (``offload.SpillFile``).
    ``edge_dtype`` stores the edges as ``"float32"`` (the default; ``float64`` for float64
    models), ``"bfloat16"`` or ``"float16"`` (half the memory and file size; influence and
    pruning still compute in float32).
    ``progress(phase, done, total)`` is called as each phase starts (``done=0``) and after
    each batch of logit and feature rows; an exception it raises (e.g. a cancellation) stops
    the attribution there.
    ``check_memory``: before the forward pass and again before the first edge row, the
    predicted memory is compared with the available memory; ``NotEnoughMemoryError`` (naming
    both and the settings that would fit) is raised instead of running out of memory
    (``attribution.memory_check``). With ``offload="disk"`` the spill file's size is compared
    with the free space of the temporary folder (``TMPDIR``) at the same two points, and
    ``NotEnoughDiskError`` raised instead of filling it (``attribution.spill_space``).
    ``False`` skips both checks.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if offload not in OFFLOAD_MODES:
        raise ValueError(f"offload must be None, 'cpu' or 'disk'; got {offload!r}.")
    timer = _Timer(verbose, progress)
    dtype = model.dtype
    store_dtype = _edge_dtype(edge_dtype, dtype)
    tc = model.transcoders
    plan = None
    if check_memory:
        plan = check_before_forward(
            model,
            prompt,
            batch_size=batch_size,
            max_feature_nodes=max_feature_nodes,
            max_n_logits=max_n_logits,
            offload=offload,
            edge_dtype=str(store_dtype).removeprefix("torch."),
        )
        if offload == "disk":
            on_accelerator = model.device.type != "cpu"
            check_spill_space(plan.estimate(), "forward", on_accelerator=on_accelerator)

    spill = SpillFile() if offload == "disk" else None
    with timer.phase("forward"):
        # On disk, each layer's pattern goes to the spill file as soon as it is computed: a
        # long prompt never holds every layer's [heads, pos, pos] pattern in memory at once.
        # (On an accelerator the patterns stay in device memory.)
        sink = None if spill is None or model.device.type != "cpu" else spill.put
        ids, cap = model.capture(prompt, pattern_sink=None if sink is None else _dropping(sink))
    n_pos, n_layers = ids.shape[0], model.n_layers

    with timer.phase("sources"):
        sources = Sources.from_capture(model, cap, dtype)
        features = sources.features
        n_active = len(features)
        # The patterns leave the capture (one copy, scaled in place; in the spill file on disk).
        backward = FrozenBackward(model, cap, dtype, consume=True, spill=spill)
        # Encoder rows of the features that get rows: read per batch, or the distinct rows of
        # all active features now when the transcoders are about to be offloaded.
        table = None if offload is None else _encoder_table(model, features.indices, dtype)
        encoders = partial(_encoders, model, features.indices, dtype, table)

    with timer.phase("targets"):
        assert cap.logits is not None and cap.final is not None
        targets = resolve_targets(
            attribution_targets,
            cap.logits[0, -1],
            model.unembed_weight.to(dtype),
            model.tokenizer,
            max_n_logits=max_n_logits,
            desired_logit_prob=desired_logit_prob,
        )
    n_logits = len(targets)
    sweep_batch = batch_size
    if plan is not None:
        sweep_batch = check_before_sweep(plan, model.device, n_active, n_logits)
        if offload == "disk":
            check_spill_space(plan.estimate(batch_size=sweep_batch), "sweep")
        if sweep_batch < batch_size and verbose:
            print(
                f"attribution: {sweep_batch} rows per backward sweep instead of {batch_size}, "
                f"so that its buffers ([{sweep_batch}, {n_pos}, {model.spec.d_model}] gradients, "
                f"[{sweep_batch}, {sources.n_cols:,}] rows) fit in the available memory"
            )
    n_rows_max = min(max_feature_nodes if max_feature_nodes is not None else n_active, n_active)
    store = EdgeRows(features.indices[:, :2], n_layers, n_pos, n_logits, store_dtype, spill)
    bar = tqdm(total=n_logits + n_rows_max, desc="attribution", unit="row", disable=not verbose)

    # The sweep needs neither the MLPs nor the transcoders any more.
    mlps = [model.block(i).get_submodule(model.adapter.mlp) for i in range(n_layers)]
    with offloaded([*mlps, tc], offload):
        with timer.phase("logit rows"):
            for start in range(0, n_logits, sweep_batch):
                sl = slice(start, min(start + sweep_batch, n_logits))
                k = sl.stop - sl.start
                layers, positions = torch.full((k,), n_layers), torch.full((k,), n_pos - 1)
                rows = backward.rows(sources, layers, positions, targets.vecs[sl])
                store.add(rows, layers, positions, torch.arange(sl.start, sl.stop) + sources.n_cols)
                bar.update(k)
                if progress is not None:
                    progress("logit rows", sl.stop, n_logits)

        with timer.phase("feature rows"):
            visited = _feature_rows(
                backward,
                sources,
                features.indices,
                encoders,
                store,
                targets,
                n_rows_max,
                update_interval * batch_size,
                sweep_batch,
                bar,
                progress,
            )
    bar.close()
    # The graph needs none of these: the patterns, capture and sources go before it is built.
    del backward, sources, encoders, table, cap

    with timer.phase("graph"):
        graph = _package(
            model,
            ids,
            features,
            visited,
            store,
            targets,
            n_logits,
            settings=dict(
                max_n_logits=max_n_logits,
                desired_logit_prob=desired_logit_prob,
                max_feature_nodes=max_feature_nodes,
                batch_size=batch_size,
                sweep_batch=sweep_batch,
                dtype=str(dtype).removeprefix("torch."),
                edge_dtype=str(store_dtype).removeprefix("torch."),
            ),
        )
    if verbose:
        print(timer.report())
    graph.settings["timings"] = timer.times
    return graph


def _dropping(
    put: Callable[[torch.Tensor], torch.Tensor],
) -> Callable[[int, torch.Tensor], torch.Tensor]:
    """A capture ``pattern_sink`` that stores each layer's pattern with ``put`` (its layer
    number is not needed: the capture keys the result by layer)."""
    return lambda _layer, pattern: put(pattern)


def _edge_dtype(edge_dtype: str | torch.dtype | None, model_dtype: torch.dtype) -> torch.dtype:
    """The dtype edges are stored in (``attribute``'s ``edge_dtype``)."""
    if edge_dtype is None:
        return torch.float64 if model_dtype == torch.float64 else torch.float32
    dtype = getattr(torch, edge_dtype, None) if isinstance(edge_dtype, str) else edge_dtype
    if dtype not in EDGE_DTYPES:
        raise ValueError(
            f"edge_dtype must be 'float32', 'bfloat16', 'float16' or 'float64'; got {edge_dtype!r}"
        )
    return dtype


def _encoders(
    model: ReplacementModel,
    indices: torch.Tensor,
    dtype: torch.dtype,
    table: tuple[torch.Tensor, torch.Tensor] | None,
    rows: torch.Tensor,
) -> torch.Tensor:
    """Encoder rows ``[len(rows), d]`` of active features ``rows``: from ``table`` (the
    ``_encoder_table`` of ``indices``) when given, else read from the transcoders."""
    if table is not None:
        return table[0][table[1][rows]]
    return _encoder_rows(model, indices[rows], dtype)


def _encoder_rows(
    model: ReplacementModel, indices: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """Encoder rows ``[n, d]`` of the features ``indices [n, 3]`` (layer, pos, idx), in order."""
    table, which = _encoder_table(model, indices, dtype)
    return table[which]


def _encoder_table(
    model: ReplacementModel, indices: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct encoder rows ``table [n_distinct, d]`` of the features ``indices [n, 3]``
    and each feature's row ``which [n]``: at most ``n_layers * d_transcoder`` rows however
    many positions the features cover."""
    tc = model.transcoders
    which = torch.empty(len(indices), dtype=torch.long, device=indices.device)
    parts, size = [], 0
    for layer in torch.unique(indices[:, 0]).tolist():
        sel = (indices[:, 0] == layer).nonzero(as_tuple=True)[0]
        distinct, inverse = torch.unique(indices[sel, 2], return_inverse=True)
        parts.append(tc.encoder_rows(layer, distinct).to(dtype))
        which[sel] = inverse + size
        size += len(distinct)
    if not parts:
        return torch.empty(0, tc.d_model, dtype=dtype, device=model.device), which
    return torch.cat(parts), which


def _feature_rows(
    backward: FrozenBackward,
    sources: Sources,
    indices: torch.Tensor,
    encoders: Callable[[torch.Tensor], torch.Tensor],
    store: EdgeRows,
    targets: Targets,
    n_rows_max: int,
    rank_every: int,
    sweep_batch: int,
    bar: tqdm,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Computes feature rows into ``store`` and returns the visited mask ``[n_active]``.

    ``encoders(rows)`` gives the encoder rows ``[len(rows), d]`` of active features ``rows``.
    Under a cap the features are re-ranked every ``rank_every`` rows (``update_interval *
    batch_size``, so the selection does not depend on ``sweep_batch``, the rows per sweep).
    """
    n_active = len(indices)
    n_cols = sources.n_cols
    visited = torch.zeros(n_active, dtype=torch.bool)
    done = 0
    while done < n_rows_max:
        if n_rows_max == n_active:
            pending = torch.arange(n_active)
        else:
            weights = torch.zeros(n_cols + len(targets), dtype=torch.float32)
            weights[n_cols:] = targets.weights.float()
            influence = store.influence(weights)
            rank = torch.argsort(influence[:n_active], descending=True, stable=True)
            room = min(rank_every, n_rows_max - done)
            pending = rank[~visited[rank]][:room]
        # Sorting a chunk by position lets each batch stop at its furthest position; each
        # batch by decreasing layer is the order the sweep works in (no reordered copy).
        pending = pending[torch.argsort(indices[pending, 1], stable=True)]
        for chunk in pending.split(sweep_batch):
            chunk = chunk[torch.argsort(indices[chunk, 0], descending=True, stable=True)]
            layers, positions = indices[chunk, 0], indices[chunk, 1]
            rows = backward.rows(sources, layers, positions, encoders(chunk))
            store.add(rows, layers, positions, chunk)
            visited[chunk] = True
            done += len(chunk)
            bar.update(len(chunk))
            if progress is not None:
                progress("feature rows", done, n_rows_max)
    return visited


def _package(
    model: ReplacementModel,
    ids: torch.Tensor,
    features: SparseActivations,
    visited: torch.Tensor,
    store: EdgeRows,
    targets: Targets,
    n_logits: int,
    settings: dict,
) -> Graph:
    selected = visited.nonzero(as_tuple=True)[0]
    edge_blocks = store.graph_blocks(selected, n_logits)
    tok = model.tokenizer
    text = str(tok.decode(ids.tolist())) if tok is not None else " ".join(map(str, ids.tolist()))
    return Graph(
        input_string=text,
        input_tokens=ids.cpu(),
        logit_targets=targets.logit_targets,
        logit_probabilities=targets.weights.cpu(),
        vocab_size=model.spec.vocab_size,
        active_features=features.indices.cpu(),
        activation_values=features.values.cpu(),
        selected_features=selected,
        edge_blocks=edge_blocks,
        n_layers=model.n_layers,
        model_name=model.name,
        transcoder_name=model.transcoders.name,
        settings=settings,
        transcoder_fingerprint=transcoder_fingerprint(model.transcoders),
    )
