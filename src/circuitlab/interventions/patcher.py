"""The write hook that carries interventions into a forward pass.

At each layer's transcoder output point the ``Patcher`` reads the transcoder activations of the
current input, works out each intervention's change (``new - current``) and adds the decoded
change to the MLP output of every layer the feature writes to (one layer for per-layer
transcoders, ``layer ..`` for cross-layer ones). Error-node interventions add ``new - current``
error. In constrained mode the output of each constrained layer is first reset to its clean
value (the live skip path kept), the current values are the clean ones, and changes land only
in constrained layers.

A forward covers absolute positions ``[start, start + n)`` (a whole prompt, the prompt plus
generated tokens, or one cached generation step); the clean run covers ``[0, n_clean)``.
Positions past the clean run (generated tokens) are always patched iteratively.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch

from ..models.session import Capture
from ..transcoders.base import SparseActivations, Transcoders
from .spec import Resolved


@dataclass
class Clean:
    """The clean prompt run: ``reads``/``writes [layer, pos, d]``, ``shown [layer, pos, d_t]``
    (activations or pre-activations, the units interventions use), lazily ``errors``."""

    capture: Capture
    reads: torch.Tensor
    writes: torch.Tensor
    shown: torch.Tensor
    _errors: torch.Tensor | None = field(default=None, repr=False)

    @classmethod
    def from_capture(cls, tc: Transcoders, capture: Capture, apply_fn: bool) -> Clean:
        reads, writes = capture.stacked_reads(), capture.stacked_writes()
        pre = [tc.pre_activations(i, reads[i]) for i in range(tc.n_layers)]
        shown = torch.stack([tc.activate(i, p) if apply_fn else p for i, p in enumerate(pre)])
        return cls(capture, reads, writes, shown)

    def errors(self, tc: Transcoders) -> torch.Tensor:
        """``[layer, pos, d]``: MLP output minus the reconstruction from every feature."""
        if self._errors is None:
            feats = tc.encode_sparse(self.reads, slice(0, 0))
            self._errors = self.writes - tc.decode_sparse(feats, self.reads)
        return self._errors


class Patcher:
    """``Plan.mlp_out`` hook applying resolved interventions (see the module docstring)."""

    def __init__(
        self,
        tc: Transcoders,
        items: list[Resolved],
        *,
        clean: Clean | None,
        constrained: frozenset[int] | None,
        apply_fn: bool,
        record: bool,
        zero_positions: slice,
    ):
        self.tc, self.clean, self.constrained = tc, clean, constrained
        self.apply_fn, self.record, self.zero_positions = apply_fn, record, zero_positions
        self.by_layer: dict[int, list[Resolved]] = defaultdict(list)
        for item in items:
            self.by_layer[item.layer].append(item)
        error_layers = [i.layer for i in items if i.features is None]
        # Layers whose activations must be computed to reconstruct an error node's MLP output.
        last = max(error_layers, default=-1)
        self.need_acts = {
            layer
            for layer in range(tc.n_layers)
            if layer in error_layers or (tc.is_cross_layer and layer <= last)
        }
        self.chunks: list[dict[int, torch.Tensor]] = []
        self.begin(0, 0)

    def begin(self, start: int, n: int) -> None:
        """Prepares for a forward over absolute positions ``[start, start + n)``."""
        self.start, self.n = start, n
        self.pending: dict[int, torch.Tensor] = {}
        self.acts: dict[int, torch.Tensor] = {}
        self.shown: dict[int, torch.Tensor] = {}
        if self.record and n:
            self.chunks.append(self.shown)

    @property
    def n_frozen(self) -> int:
        """Rows of this forward that constrained mode ties to the clean run."""
        if self.constrained is None or self.clean is None:
            return 0
        return max(0, min(self.n, self.clean.reads.shape[1] - self.start))

    # ---- the hook ---------------------------------------------------------------------------
    def __call__(self, layer: int, read: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        x, base = read[0], out[0]
        items = self.by_layer.get(layer, [])
        if self.record or items or layer in self.need_acts:
            pre = self.tc.pre_activations(layer, x)
            self.acts[layer] = self.tc.activate(layer, pre)
            self.shown[layer] = self.acts[layer].clone() if self.apply_fn else pre
        f = self.n_frozen
        if f and layer in self.constrained:  # type: ignore[operator]
            base = self._frozen_output(layer, x, base, f)
        for item in items:
            rows, value = item.select(self.start, self.start + self.n)
            if rows.numel() == 0:
                continue
            if item.features is None:
                self._error(item, layer, rows, value.to(base), x, base, f)
            else:
                self._feature(item, layer, rows, value.to(base), f)
        delta = self.pending.pop(layer, None)
        if delta is not None:
            if f and layer not in self.constrained:  # type: ignore[operator]
                delta[:f] = 0  # constrained mode: changes land in constrained layers only
            base = base + delta
        if self.record:
            self._zero_bos(self.shown[layer])
        return base[None].to(out.dtype)

    # ---- pieces -----------------------------------------------------------------------------
    def _frozen_output(
        self, layer: int, x: torch.Tensor, base: torch.Tensor, f: int
    ) -> torch.Tensor:
        assert self.clean is not None
        sl = slice(self.start, self.start + f)
        frozen = self.clean.writes[layer, sl].to(base)
        if self.tc.has_skip:  # the linear skip path stays live
            live = self.tc.skip(layer, x[:f])
            old = self.tc.skip(layer, self.clean.reads[layer, sl])
            assert live is not None and old is not None
            frozen = frozen + live - old
        return torch.cat([frozen, base[f:]])

    def _feature(
        self, item: Resolved, layer: int, rows: torch.Tensor, value: torch.Tensor, f: int
    ) -> None:
        feats = item.features
        assert feats is not None
        shown = self.shown[layer]
        rows = rows.to(shown.device)
        current = shown[rows][:, feats.to(shown.device)]
        if f:
            assert self.clean is not None
            frozen = rows < f
            clean = self.clean.shown[layer, self.start + rows[frozen]][:, feats].to(current)
            current[frozen] = clean
        new = value if item.op == "set" else current * value
        shown[rows[:, None], feats[None].to(shown.device)] = new
        decoders = self.tc.decoder_rows(layer, feats).to(shown)  # [m, n_out, d]
        change = torch.einsum("rm,mjd->jrd", new - current, decoders)
        for j in range(decoders.shape[1]):
            self._add(layer + j, rows, change[j])

    def _error(
        self,
        item: Resolved,
        layer: int,
        rows: torch.Tensor,
        value: torch.Tensor,
        x: torch.Tensor,
        base: torch.Tensor,
        f: int,
    ) -> None:
        current = base[rows] - self._reconstruction(layer, rows, x)
        if f and layer in self.constrained:  # type: ignore[operator]
            assert self.clean is not None
            frozen = rows < f
            errors = self.clean.errors(self.tc)
            current[frozen] = errors[layer, self.start + rows[frozen]].to(current)
        new = value.expand_as(current) if item.op == "set" else current * value
        self._add(layer, rows, new - current)

    def _reconstruction(self, layer: int, rows: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Transcoder output at ``layer`` for ``rows`` of this forward: ``[r, d]``."""
        tc = self.tc
        out = tc.decoder_bias(layer).to(x).expand(len(rows), -1).clone()
        sk = tc.skip(layer, x[rows])
        if sk is not None:
            out = out + sk
        sources = range(layer + 1) if tc.is_cross_layer else (layer,)
        for src in sources:
            a = self.acts[src][rows]
            feats = (a != 0).any(0).nonzero(as_tuple=True)[0]
            if feats.numel():
                dec = tc.decoder_rows(src, feats.cpu())[:, layer - src].to(x)
                out = out + a[:, feats] @ dec
        return out

    def _add(self, layer: int, rows: torch.Tensor, change: torch.Tensor) -> None:
        if layer not in self.pending:
            self.pending[layer] = torch.zeros(self.n, change.shape[-1], dtype=change.dtype)
        self.pending[layer] = self.pending[layer].to(change.device)
        self.pending[layer].index_add_(0, rows.to(change.device), change)

    def _zero_bos(self, shown: torch.Tensor) -> None:
        zp = self.zero_positions
        lo = max(0, (zp.start or 0) - self.start)
        hi = max(0, (zp.stop if zp.stop is not None else 1 << 30) - self.start)
        shown[lo:hi] = 0

    # ---- results ----------------------------------------------------------------------------
    def activations(self, sparse: bool) -> torch.Tensor | SparseActivations:
        """Recorded activations ``[layer, pos, feature]`` over every forward so far."""
        dense = torch.cat(
            [torch.stack([c[i] for i in range(self.tc.n_layers)]) for c in self.chunks], dim=1
        )
        if not sparse:
            return dense
        idx = dense.nonzero()
        return SparseActivations(idx, dense[idx[:, 0], idx[:, 1], idx[:, 2]])
