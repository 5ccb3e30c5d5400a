"""Activation patching: which components carry the difference between two prompts.

Run the *corrupted* prompt, replace one component's activation with its value on the *clean*
prompt, and measure the target metric ``m`` (a pre-softcap logit difference, see ``dla.Target``)
at one position. The normalised recovery is

    recovery = (m_patched - m_corrupted) / (m_clean - m_corrupted)

so 0 means the patch changed nothing and 1 means it restored the clean behaviour. Components:
``head`` (one head's output ``z``, at every position or at one), ``resid`` (the residual stream
entering a block, at one position or all) and ``mlp`` (what an MLP adds to the residual).

Batched and exact at the endpoints: every forward holds the clean prompt (row 0), the corrupted
prompt (row 1) and one patched copy of the corrupted prompt per remaining row; a patch copies
row 0's activation into its row *inside the same forward*. Identical inputs in one batch give
bitwise identical outputs, so a patch that copies an equal value gives exactly 0 and a patch
that copies the whole state (every position of the residual) gives exactly 1. Patches at
positions before the first token where the prompts differ copy equal values (the model is
causal): they are not run and score exactly 0. If ``m_clean == m_corrupted`` there is nothing
to recover and every recovery is 0. Those shared leading tokens run once, as a KV cache
that every row of a batch reuses.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from ..models.kvcache import cache_kwargs, output_cache
from ..models.session import Plan, hooked
from ..models.tokens import Prompt
from ._model import LabModel
from ._taps import taps
from .dla import ResolvedTarget, Target, resolve_target, unembed_direction
from .trace import MLP_IN, MLP_OUT

Kind = Literal["head", "resid", "mlp"]
KINDS: tuple[Kind, ...] = ("head", "resid", "mlp")


@dataclass(frozen=True)
class Site:
    """One patch: ``kind`` at ``layer`` (``head`` for heads), at ``pos`` or every position."""

    kind: Kind
    layer: int
    head: int | None = None
    pos: int | None = None


def sweep_sites(lab: LabModel, kind: Kind, n_pos: int, per_position: bool) -> list[Site]:
    """Every site of ``kind``, layer-major (then head, then position)."""
    if kind not in KINDS:
        raise ValueError(f"Unknown patch kind {kind!r}; use one of {', '.join(KINDS)}.")
    positions: Sequence[int | None] = range(n_pos) if per_position else [None]
    heads: Sequence[int | None] = range(lab.n_heads) if kind == "head" else [None]
    return [
        Site(kind, layer, head, pos)
        for layer in range(lab.n_layers)
        for head in heads
        for pos in positions
    ]


@dataclass
class PatchPair:
    """Clean and corrupted token ids ``[pos]`` and the metric's target and position."""

    clean: torch.Tensor
    corrupted: torch.Tensor
    target: ResolvedTarget
    pos: int

    @property
    def first_diff(self) -> int:
        """The first position where the prompts differ (``n_pos`` if they are equal)."""
        diff = (self.clean != self.corrupted).nonzero()
        return int(diff[0]) if diff.numel() else int(self.clean.shape[0])


def make_pair(
    lab: LabModel, clean: Prompt, corrupted: Prompt, target: Target, pos: int = -1
) -> PatchPair:
    a, b = lab.tokens(clean), lab.tokens(corrupted)
    if a.shape != b.shape:
        raise ValueError(
            f"The clean prompt is {a.shape[0]} tokens and the corrupted one {b.shape[0]}; "
            "patching needs prompts of the same token length (swap words of equal length)."
        )
    n = int(a.shape[0])
    if not -n <= pos < n:
        raise ValueError(f"Position {pos} is outside the {n}-token prompt.")
    logits = None
    if target.answer is None:
        with torch.inference_mode():
            logits = lab.model(input_ids=a[None], use_cache=False, logits_to_keep=1).logits[0, -1]
    return PatchPair(a, b, resolve_target(lab, target, logits), pos % n)


@dataclass
class BatchOut:
    """Metrics of one forward: ``rows [n]`` patched, and the clean and corrupted endpoints."""

    rows: torch.Tensor
    clean: float
    corrupted: float

    @classmethod
    def of_metrics(cls, m: torch.Tensor, pair: PatchPair) -> BatchOut:
        """From the metric of every batch row ``m [2 + n]``: clean, corrupted, then patched.

        Identical prompts have identical endpoints by definition. Rows of one batch can differ
        in the last bit (MKL's GEMM on AVX-512 rounds a row by its place in the batch), which
        would turn a zero span into a recovery of noise / 1e-16."""
        clean = float(m[0])
        corrupted = clean if torch.equal(pair.clean, pair.corrupted) else float(m[1])
        return cls(rows=m[2:].cpu(), clean=clean, corrupted=corrupted)

    def recovery(self) -> torch.Tensor:
        span = self.clean - self.corrupted
        if span == 0:
            return torch.zeros_like(self.rows)
        return (self.rows - self.corrupted) / span


def _masks(sites: Sequence[Site], n_pos: int, n_heads: int) -> dict[tuple[str, int], torch.Tensor]:
    """Boolean masks ``[batch, pos, heads or 1, 1]`` of what each layer's patch replaces."""
    masks: dict[tuple[str, int], torch.Tensor] = {}
    for row, s in enumerate(sites, start=2):
        key = (s.kind, s.layer)
        if key not in masks:
            width = n_heads if s.kind == "head" else 1
            masks[key] = torch.zeros(len(sites) + 2, n_pos, width, 1, dtype=torch.bool)
        masks[key][row, slice(None) if s.pos is None else s.pos, s.head or 0] = True
    return masks


def _prefix_cache(lab: LabModel, ids: torch.Tensor, batch: int) -> object:
    """The KV cache of the tokens both prompts share, repeated for ``batch`` rows."""
    out = lab.model(input_ids=ids[None], use_cache=True, logits_to_keep=1)
    cache = output_cache(out)
    cache.batch_repeat_interleave(batch)  # type: ignore[union-attr]
    return cache


@torch.inference_mode()
def run_batch(lab: LabModel, pair: PatchPair, sites: Sequence[Site]) -> BatchOut:
    """One forward: clean, corrupted and one patched corrupted row per site.

    The tokens before the first difference (and before the metric's position) are the same in
    every row and no patch there changes anything, so they run once, as a shared KV cache.
    """
    start = min(pair.first_diff, pair.pos)
    n_pos, n_heads = int(pair.clean.shape[0]) - start, lab.n_heads
    shifted = [
        Site(s.kind, s.layer, s.head, None if s.pos is None else s.pos - start) for s in sites
    ]
    device = lab.device
    masks = {k: m.to(device) for k, m in _masks(shifted, n_pos, n_heads).items()}
    ids = torch.cat([pair.clean[None], pair.corrupted.expand(len(sites) + 1, -1)])
    cache = _prefix_cache(lab, pair.clean[:start], ids.shape[0]) if start > 0 else None

    def copy(mask: torch.Tensor | None, x: torch.Tensor, width: int) -> torch.Tensor | None:
        if mask is None:
            return None
        shaped = x.reshape(x.shape[0], x.shape[1], width, -1)
        return torch.where(mask, shaped[:1], shaped).reshape(x.shape)

    def z(layer: int, x: torch.Tensor) -> torch.Tensor | None:
        return copy(masks.get(("head", layer)), x, n_heads)

    def resid(layer: int, x: torch.Tensor) -> torch.Tensor | None:
        return copy(masks.get(("resid", layer)), x, 1)

    def mlp(layer: int, read: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        new = copy(masks.get(("mlp", layer)), out, 1)
        return out if new is None else new

    finals: list[torch.Tensor] = []

    def final(layer: int, x: torch.Tensor) -> None:
        finals.append(x[:, pair.pos - start])

    has_mlp = any(k[0] == "mlp" for k in masks)
    plan = Plan(mlp_out=mlp if has_mlp else None)
    with (
        hooked(lab.model, lab.adapter, plan, MLP_IN, MLP_OUT),
        taps(lab.model, lab.adapter, z=z, resid_pre=resid, final_out=final),
    ):
        lab.model(
            input_ids=ids[:, start:],
            use_cache=cache is not None,
            **cache_kwargs(lab.model, cache),
            logits_to_keep=1,
        )
    u, c = unembed_direction(lab, pair.target)
    m = (finals[0] @ u.to(finals[0].dtype)).double() + c
    return BatchOut.of_metrics(m, pair)


@dataclass
class LayerPatches:
    """The results of one layer's sites, in site order."""

    layer: int
    sites: list[Site]
    recovery: torch.Tensor
    metric: torch.Tensor


def iter_patching(
    lab: LabModel, pair: PatchPair, sites: Sequence[Site], *, batch_size: int = 256
) -> Iterator[tuple[BatchOut, LayerPatches]]:
    """Runs ``sites`` (layer-major) in batches; yields each layer once all its sites are done.

    Sites at positions before the prompts' first difference are not run (recovery 0).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1.")
    first = pair.first_diff
    todo = [s for s in sites if s.pos is None or s.pos >= first]
    results: dict[Site, tuple[float, float]] = {}
    endpoints: BatchOut | None = None
    pending = sorted(set(s.layer for s in sites))
    for start in range(0, max(len(todo), 1), batch_size):
        chunk = todo[start : start + batch_size]
        out = run_batch(lab, pair, chunk)
        endpoints = endpoints or out
        for s, r, m in zip(chunk, out.recovery().tolist(), out.rows.tolist(), strict=True):
            results[s] = (r, m)
        # Sites are layer-major: every layer below the next unrun site's layer is complete.
        rest = todo[start + batch_size :]
        done_below = rest[0].layer if rest else lab.n_layers
        while pending and pending[0] < done_below:
            yield endpoints, _layer(pending.pop(0), sites, results, endpoints)


def _layer(
    layer: int, sites: Sequence[Site], results: dict[Site, tuple[float, float]], ends: BatchOut
) -> LayerPatches:
    mine = [s for s in sites if s.layer == layer]
    values = [results.get(s, (0.0, ends.corrupted)) for s in mine]
    return LayerPatches(
        layer=layer,
        sites=mine,
        recovery=torch.tensor([v[0] for v in values], dtype=torch.float64),
        metric=torch.tensor([v[1] for v in values], dtype=torch.float64),
    )


@dataclass
class PatchResult:
    """A sweep of one kind.

    ``recovery`` and ``metric`` (the patched logit difference) are ``[layer, head]`` or
    ``[layer, head, pos]`` for heads, ``[layer, pos]`` or ``[layer]`` for resid and mlp.
    """

    kind: Kind
    per_position: bool
    target: ResolvedTarget
    pos: int
    clean_metric: float
    corrupted_metric: float
    recovery: torch.Tensor
    metric: torch.Tensor


def patch_sweep(
    lab: LabModel,
    clean: Prompt,
    corrupted: Prompt,
    target: Target | None = None,
    *,
    kind: Kind = "head",
    per_position: bool | None = None,
    pos: int = -1,
    batch_size: int = 256,
) -> PatchResult:
    """Patches every site of ``kind`` (see the module docstring).

    ``per_position`` defaults to False for heads (a head's output at every position at once)
    and True for ``resid`` and ``mlp`` (a layer x position grid).
    """
    pair = make_pair(lab, clean, corrupted, target or Target(), pos)
    per_pos = kind != "head" if per_position is None else per_position
    n_pos = int(pair.clean.shape[0])
    sites = sweep_sites(lab, kind, n_pos, per_pos)
    layers: list[LayerPatches] = []
    ends: BatchOut | None = None
    for out, lp in iter_patching(lab, pair, sites, batch_size=batch_size):
        ends = out
        layers.append(lp)
    assert ends is not None
    shape = [lab.n_layers]
    if kind == "head":
        shape.append(lab.n_heads)
    if per_pos:
        shape.append(n_pos)
    return PatchResult(
        kind=kind,
        per_position=per_pos,
        target=pair.target,
        pos=pair.pos,
        clean_metric=ends.clean,
        corrupted_metric=ends.corrupted,
        recovery=torch.cat([lp.recovery for lp in layers]).reshape(shape),
        metric=torch.cat([lp.metric for lp in layers]).reshape(shape),
    )
