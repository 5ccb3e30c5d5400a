"""Path patching (Wang et al. 2022, the IOI paper): a head's effect along one path only.

Activation patching (``patching.py``) measures a head's total effect: everything downstream of
it recomputes. Path patching restricts the effect to the paths from a *sender* head to a set of
*receivers*, in the same convention (run the corrupted prompt, bring back a clean value, report
``recovery = (m_patched - m_corrupted) / (m_clean - m_corrupted)`` of the logit difference at
one position):

1. *Sender run.* The corrupted prompt, with the sender head's output ``z`` taken from the clean
   prompt and **every other attention head's output frozen at its corrupted value** (at every
   position). MLPs, norms and everything else recompute, as in the paper: the sender's change
   reaches the receivers directly through the residual and through the MLPs in between, but
   not through other heads.
2. *Receiver run* (receivers are heads). The corrupted prompt again, with only the receivers'
   chosen inputs (``q``, ``k`` and/or ``v``) replaced by their values in the sender run;
   everything else recomputes normally, and the metric is read at the end.

With ``receivers="logits"`` the metric of the sender run is the result: the sender's effect
through the residual stream and the MLPs, not through later heads. For a sender in the last
layer this is ordinary head patching.

The receivers' inputs are patched at the outputs of the query, key and value projections
(before any q/k norm or rotary embedding, which then apply as usual: exact for Qwen-3 and
Gemma-3 q/k norms). With grouped-query attention the key and value projections are shared by a
group of query heads: patching ``k`` or ``v`` of one receiver patches its whole key/value
group, so every query head of the group sees the new keys or values; ``q`` is per head.

A sender can only reach a receiver in a later layer. Senders at or after the last receiver
layer score exactly 0 (their sender run leaves every receiver input unchanged) and are not run.
Batched like activation patching: every forward holds the clean prompt (row 0), the corrupted
prompt (row 1) and one row per sender, and both runs use the same rows, so the endpoints are
exact and clean == corrupted gives exactly 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ..models.kvcache import cache_kwargs
from ..models.tokens import Prompt
from ._model import LabModel
from ._taps import taps
from .dla import ResolvedTarget, Target, unembed_direction
from .patching import BatchOut, PatchPair, _prefix_cache, make_pair

Head = tuple[int, int]
INPUTS = "qkv"


@dataclass(frozen=True)
class Receivers:
    """Validated receivers: ``heads`` (sorted ``(layer, head)``; empty for the logits) and the
    patched ``inputs`` (a subset of ``"qkv"``, in that order)."""

    heads: tuple[Head, ...]
    inputs: str

    @property
    def logits(self) -> bool:
        return not self.heads

    @property
    def last_layer(self) -> int:
        return max(layer for layer, _ in self.heads)

    def label(self) -> str:
        if self.logits:
            return "logits"
        return ",".join(f"L{layer}H{h}" for layer, h in self.heads) + f" ({self.inputs})"


def check_receivers(
    lab: LabModel, receivers: Literal["logits"] | Sequence[Head], inputs: str = INPUTS
) -> Receivers:
    """Validates receivers and inputs with errors that say what to pass instead."""
    letters = inputs.lower()
    bad = sorted(set(letters) - set(INPUTS))
    if bad or not letters:
        raise ValueError(
            f"Receiver inputs {inputs!r}: use one or more of the letters q, k, v (e.g. 'qkv')."
        )
    ordered = "".join(c for c in INPUTS if c in letters)
    if isinstance(receivers, str):
        if receivers != "logits":
            raise ValueError(f"Receivers {receivers!r}: use 'logits' or a list of (layer, head).")
        return Receivers((), ordered)
    heads = sorted({(int(layer), int(h)) for layer, h in receivers})
    if not heads:
        raise ValueError("The receiver set is empty; give at least one (layer, head) or 'logits'.")
    for layer, h in heads:
        if not (0 <= layer < lab.n_layers and 0 <= h < lab.n_heads):
            raise ValueError(
                f"Receiver L{layer}H{h} does not exist: the model has {lab.n_layers} layers of "
                f"{lab.n_heads} heads."
            )
    if max(layer for layer, _ in heads) == 0:
        raise ValueError("Every receiver is in layer 0, so no head comes before them to send.")
    return Receivers(tuple(heads), ordered)


def _units(lab: LabModel, recv: Receivers) -> dict[tuple[int, int], list[int]]:
    """``(layer, projection index) -> d_head-sized slices`` of the projection outputs to patch.

    Separate projections (q, k, v) have one slice per query head for q and per key/value head
    for k and v; a fused one (GPT-2) holds ``[q heads | k heads | v heads]`` side by side.
    """
    n_heads, n_kv = lab.n_heads, lab.spec.n_kv_heads
    group = n_heads // n_kv
    fused = len(lab.adapter.qkv_proj) == 1
    offsets = {"q": 0, "k": n_heads, "v": n_heads + n_kv}
    units: dict[tuple[int, int], set[int]] = {}
    for layer, h in recv.heads:
        for letter in recv.inputs:
            proj = 0 if fused else INPUTS.index(letter)
            unit = h if letter == "q" else h // group
            units.setdefault((layer, proj), set()).add(unit + (offsets[letter] if fused else 0))
    return {k: sorted(v) for k, v in units.items()}


ProjTap = Callable[[int, int, torch.Tensor], torch.Tensor | None]


@contextmanager
def _projection_taps(
    lab: LabModel, where: Sequence[tuple[int, int]], fn: ProjTap
) -> Iterator[None]:
    """Forward hooks on the q/k/v projections ``(layer, index)``; ``fn`` may replace outputs."""
    blocks = lab.blocks()
    handles = []

    def hook(layer: int, proj: int, tap: ProjTap) -> Callable[..., Any]:
        return lambda module, args, out: tap(layer, proj, out)

    try:
        for layer, proj in where:
            attn = blocks[layer].get_submodule(lab.adapter.attn)
            module: nn.Module = attn.get_submodule(lab.adapter.qkv_proj[proj])
            handles.append(module.register_forward_hook(hook(layer, proj, fn)))
        yield
    finally:
        for h in handles:
            h.remove()


def _row_masks(shape: tuple[int, ...], rows: dict[int, list[int]]) -> torch.Tensor:
    """A boolean mask ``shape = [batch, 1, units, 1]`` with ``rows[row]`` units set."""
    mask = torch.zeros(shape, dtype=torch.bool)
    for row, units in rows.items():
        mask[row, 0, units] = True
    return mask


@torch.inference_mode()
def run_path_batch(
    lab: LabModel, pair: PatchPair, senders: Sequence[Head], recv: Receivers
) -> BatchOut:
    """The sender run and (for receiver heads) the receiver run of one batch of senders."""
    start = min(pair.first_diff, pair.pos)
    n_rows, n_heads, device = len(senders) + 2, lab.n_heads, lab.device
    ids = torch.cat([pair.clean[None], pair.corrupted.expand(n_rows - 1, -1)])[:, start:]
    patched = torch.arange(n_rows, device=device).view(-1, 1, 1, 1) >= 2
    sender_of: dict[int, dict[int, list[int]]] = {}
    for row, (layer, h) in enumerate(senders, start=2):
        sender_of.setdefault(layer, {})[row] = [h]
    sender_masks = {
        layer: _row_masks((n_rows, 1, n_heads, 1), rows).to(device)
        for layer, rows in sender_of.items()
    }

    def freeze(layer: int, x: torch.Tensor) -> torch.Tensor:
        shaped = x.reshape(x.shape[0], x.shape[1], n_heads, -1)
        mask = sender_masks.get(layer)
        src = shaped[1:2] if mask is None else torch.where(mask, shaped[:1], shaped[1:2])
        return torch.where(patched, src, shaped).reshape(x.shape)

    units = _units(lab, recv)
    recorded: dict[tuple[int, int], torch.Tensor] = {}

    def record(layer: int, proj: int, out: torch.Tensor) -> None:
        recorded[(layer, proj)] = out

    def forward(z: Callable[..., Any] | None, proj: ProjTap | None) -> torch.Tensor:
        """One forward of the batch (a fresh shared-prefix cache each time); returns the final
        norm's output at the metric's position ``[batch, d]``."""
        finals: list[torch.Tensor] = []

        def final(layer: int, x: torch.Tensor) -> None:
            finals.append(x[:, pair.pos - start])

        cache = _prefix_cache(lab, pair.clean[:start], n_rows) if start > 0 else None
        with (
            taps(lab.model, lab.adapter, z=z, final_out=final),
            _projection_taps(lab, list(units), proj) if proj else nullcontext(),
        ):
            lab.model(
                input_ids=ids,
                use_cache=cache is not None,
                logits_to_keep=1,
                **cache_kwargs(lab.model, cache),
            )
        return finals[0]

    final = forward(freeze, None if recv.logits else record)
    if not recv.logits:
        masks = {
            key: _row_masks(
                (n_rows, 1, recorded[key].shape[-1] // lab.spec.d_head, 1),
                {row: us for row in range(2, n_rows)},
            ).to(device)
            for key, us in units.items()
        }

        def replace(layer: int, proj: int, out: torch.Tensor) -> torch.Tensor:
            mask, new = masks[(layer, proj)], recorded[(layer, proj)]
            shape = (out.shape[0], out.shape[1], mask.shape[2], -1)
            return torch.where(mask, new.reshape(shape), out.reshape(shape)).reshape(out.shape)

        final = forward(None, replace)
    u, c = unembed_direction(lab, pair.target)
    m = (final @ u.to(final.dtype)).double() + c
    return BatchOut.of_metrics(m, pair)


@dataclass
class PathPatchResult:
    """Path patching from every head to ``receivers``.

    ``recovery`` and ``metric`` (the patched logit difference) are ``[layer, head]`` over the
    senders; senders that cannot reach a receiver are 0 (metric: the corrupted one).
    """

    receivers: Receivers
    target: ResolvedTarget
    pos: int
    clean_metric: float
    corrupted_metric: float
    recovery: torch.Tensor
    metric: torch.Tensor


def path_patch(
    lab: LabModel,
    clean: Prompt,
    corrupted: Prompt,
    target: Target | None = None,
    *,
    receivers: Literal["logits"] | Sequence[Head] = "logits",
    inputs: str = INPUTS,
    pos: int = -1,
    batch_size: int = 256,
) -> PathPatchResult:
    """Path patching from every head (one batch row each) to ``receivers``.

    ``receivers`` is ``"logits"`` or ``(layer, head)`` pairs whose ``inputs`` (any of ``"q"``,
    ``"k"``, ``"v"``; ``"qkv"`` by default, ignored for the logits) carry the path. See the
    module docstring for what is frozen and what recomputes.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1.")
    recv = check_receivers(lab, receivers, inputs)
    pair = make_pair(lab, clean, corrupted, target or Target(), pos)
    shape = (lab.n_layers, lab.n_heads)
    recovery = torch.zeros(shape, dtype=torch.float64)
    metric = torch.zeros(shape, dtype=torch.float64)
    ends: BatchOut | None = None
    for out, layer, rec, met in iter_path_patching(lab, pair, recv, batch_size=batch_size):
        ends = out
        recovery[layer], metric[layer] = rec, met
    assert ends is not None
    return PathPatchResult(
        receivers=recv,
        target=pair.target,
        pos=pair.pos,
        clean_metric=ends.clean,
        corrupted_metric=ends.corrupted,
        recovery=recovery,
        metric=metric,
    )


def iter_path_patching(
    lab: LabModel, pair: PatchPair, recv: Receivers, *, batch_size: int = 256
) -> Iterator[tuple[BatchOut, int, torch.Tensor, torch.Tensor]]:
    """Runs the senders (layer-major) in batches; yields ``(endpoints, layer, recovery[head],
    metric[head])`` for each sender layer once all its heads are done, in layer order.

    Layers at or after the last receiver layer are not run: recovery 0, the corrupted metric.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1.")
    n_heads = lab.n_heads
    last = lab.n_layers if recv.logits else recv.last_layer
    senders = [(layer, h) for layer in range(last) for h in range(n_heads)]
    recovery = torch.zeros((lab.n_layers, n_heads), dtype=torch.float64)
    metric = torch.zeros((lab.n_layers, n_heads), dtype=torch.float64)
    ends: BatchOut | None = None
    next_layer = 0
    for i in range(0, len(senders), batch_size):
        chunk = senders[i : i + batch_size]
        out = run_path_batch(lab, pair, chunk, recv)
        ends = ends or out
        for (layer, h), r, m in zip(chunk, out.recovery(), out.rows, strict=True):
            recovery[layer, h], metric[layer, h] = r, m
        # Senders are layer-major: every layer below the next unrun sender's layer is complete.
        done_below = (i + len(chunk)) // n_heads
        for layer in range(next_layer, done_below):
            yield ends, layer, recovery[layer].clone(), metric[layer].clone()
        next_layer = max(next_layer, done_below)
    assert ends is not None
    for layer in range(last, lab.n_layers):
        yield ends, layer, recovery[layer], metric[layer].fill_(ends.corrupted)
