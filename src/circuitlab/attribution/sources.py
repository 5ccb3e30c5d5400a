"""Source nodes of an attribution graph and how they read a gradient.

Columns of the edge matrix are ``[active features | errors (layer-major) | tokens]``.
A source's edge into a target is ``<gradient of the target at the source's write point,
source value vector>``: for a feature the activation-scaled decoder row (one per output layer
for cross-layer transcoders), for an error node the MLP-output residual the transcoder missed,
for a token its embedding.

Features writing into one output layer are packed position by position into padded slots
``[positions, slots + 1]``, the last slot of a position being its error node, so that a few
batched matmuls read every feature and error of the layer. A bucket is a run of consecutive
positions (so it reads the gradient as a strided view, without gathering it) padded to its
busiest position, cut where the padding would exceed 2x: one block padded to the busiest
position wasted 7x memory and time on a 512-token SmolLM2 prompt, where the first tokens carry
~8x the average feature count.

Runs are many on long prompts (~46 a layer at 256 SmolLM2 tokens), and each bucket read has a
fixed cost (~0.1 ms on one CPU thread) that a large batch of gradient rows amortises and a
lone row does not. So the features are packed a second time for reads of a few rows
(``FEW_ROWS``): positions grouped by feature count, slots rounded up to a power of two (also
at most 2x padding, ~8 buckets a layer), read by gathering the gradient at the bucket's
positions, a copy that is cheap for a few rows and costly for many, and the errors in a
separate elementwise pass.

The activation-scaled decoder vectors themselves are not kept: a long prompt activates far
more (feature, position) pairs than a transcoder has features (1.2M pairs on 2,048 SmolLM2
tokens against 30 x 4,096 features, 2.7 GB of vectors), so each output layer keeps only the
*distinct* decoder rows its features use (``DecoderTable``) and ``Sources.read`` rebuilds the
scaled vectors of a few positions at a time (``PackedBucket.vectors``: the same product, so
the same numbers) while it projects the gradient onto them. Its work memory is bounded by
``READ_CHUNK_ELEMENTS`` whatever the prompt length.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..transcoders.base import SparseActivations, Transcoders

if TYPE_CHECKING:
    from ..models.session import Capture
    from ..replacement import ReplacementModel

#: Elements of ``Sources.read``'s temporaries per step (scaled vectors ``[positions, slots + 1,
#: d]`` and products ``[positions, batch, slots + 1]`` twice; 64 MiB in float32): bounds its
#: work memory whatever the prompt length and batch size.
READ_CHUNK_ELEMENTS = 2**24

#: ``Sources.read`` of at most this many gradient rows reads ``PackedDecoders.gathered``
#: (a few buckets, the gradient gathered), more rows ``PackedDecoders.buckets`` (runs of
#: positions, the gradient read in place). ``read`` over every layer of SmolLM2 with a random
#: gradient, one thread, gathered vs runs: 256 tokens 173 vs 294 ms for 1 row, 364 vs 418 ms
#: for 16, 513 vs 488 ms for 32, 1,590 vs 770 ms for 64; 512 tokens 668 vs 814 ms for 16,
#: 1,048 vs 1,012 ms for 32; 32 tokens 54 vs 54 ms for 16.
FEW_ROWS = 16


@dataclass
class PackedBucket:
    """Features writing at the consecutive positions ``start .. start + k - 1`` of one output
    layer.

    ``rows [k, slots]`` index the layer's ``DecoderTable`` and ``values [k, slots]`` hold the
    activations (padding: row 0, value 0); ``cols [k, slots + 1]`` are the source columns, the
    last one the position's error node (padding: column ``n_cols``, a spare column).
    """

    start: int
    rows: torch.Tensor
    values: torch.Tensor
    cols: torch.Tensor

    @property
    def stop(self) -> int:
        """One past the last position."""
        return self.start + self.rows.shape[0]

    def vectors(self, table: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """Activation-scaled decoder vectors ``[hi - lo, slots, d]`` of this bucket's positions
        ``lo:hi`` (counted from ``start``; ``table [n_rows, d]``: the layer's distinct decoder
        rows)."""
        return table[self.rows[lo:hi]] * self.values[lo:hi, :, None]


@dataclass
class GatheredBucket:
    """Features writing at the positions ``positions`` (ascending, not necessarily
    consecutive) of one output layer, read by gathering the gradient there (``index [k]``: the
    same positions). ``rows``, ``values`` and ``cols`` ``[k, slots]`` as in ``PackedBucket``,
    without the error slot."""

    positions: list[int]
    index: torch.Tensor
    rows: torch.Tensor
    values: torch.Tensor
    cols: torch.Tensor


@dataclass
class PackedDecoders:
    """Features writing into one output layer: their distinct decoder rows ``table [n, d]``
    packed twice.

    ``buckets``: runs of consecutive positions covering every position in order, read as
    strided views of the gradient, for many gradient rows (tens of buckets a layer on long
    prompts). ``gathered``: positions grouped by their feature count (slots rounded up to a
    power of two, so at most ~log2 of the busiest position's count buckets, also padded at
    most 2x), read by gathering the gradient, for a few rows (``FEW_ROWS``), where each
    bucket's fixed cost outweighs the gather. The second packing holds the same entries padded
    differently (20 bytes a padded slot: int64 row and column, float32 value): on 256 SmolLM2
    tokens 2.6 MB beside the runs' 3.8 MB for 98,415 features, ~27 bytes a feature, so ~32 MB
    for the 1.2M features of 2,048 tokens.
    """

    table: torch.Tensor
    buckets: list[PackedBucket]
    gathered: list[GatheredBucket]


@dataclass
class Sources:
    """Everything the backward sweep contracts gradients with."""

    features: SparseActivations
    decoders: list[PackedDecoders]  # per output layer
    errors: torch.Tensor  # [n_layers, n_pos, d]
    tokens: torch.Tensor  # [n_pos, d]
    n_layers: int
    n_pos: int

    @classmethod
    def from_capture(cls, model: ReplacementModel, cap: Capture, dtype: torch.dtype) -> Sources:
        """The sources of one captured prompt: active features (BOS positions zeroed), their
        packed decoders, the error terms ``writes - reconstruction`` and the embeddings."""
        tc, n_layers = model.transcoders, model.n_layers
        reads, writes = cap.stacked_reads(), cap.stacked_writes()
        n_pos = int(reads.shape[1])
        features = tc.encode_sparse(reads, model.zero_positions)
        n_cols = len(features) + (n_layers + 1) * n_pos
        decoders = pack_decoders(tc, features, n_pos, n_cols, dtype)
        errors = writes - reconstructions(tc, decoders, reads)
        errors[:, model.zero_positions] = 0
        assert cap.embed is not None
        return cls(
            features=features,
            decoders=decoders,
            errors=errors.to(dtype),
            tokens=cap.embed[0].to(dtype),
            n_layers=n_layers,
            n_pos=n_pos,
        )

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def n_cols(self) -> int:
        """Feature, error and token columns."""
        return self.n_features + (self.n_layers + 1) * self.n_pos

    def error_col(self, layer: int) -> int:
        return self.n_features + layer * self.n_pos

    @property
    def token_col(self) -> int:
        return self.n_features + self.n_layers * self.n_pos

    def read(self, out: torch.Tensor, layer: int, grad: torch.Tensor) -> None:
        """Adds the edges of sources writing at ``layer`` (features and errors) into ``out
        [batch, n_cols + 1]``.

        ``grad [batch, pos', d]`` is the gradient at that layer's write point (``pos' <= n_pos``).
        Up to ``FEW_ROWS`` rows: ``_read_few``. Otherwise each run bucket's positions are read a
        chunk at a time (``READ_CHUNK_ELEMENTS``): the feature vectors and the error vector of
        each position are stacked into ``[k, slots + 1, d]`` and one batched product projects
        the gradient's view ``[k, batch, d]`` onto them.
        """
        batch, p, d = grad.shape
        if batch <= FEW_ROWS:
            self._read_few(out, layer, grad)
            return
        packed, errors = self.decoders[layer], self.errors[layer]
        for bucket in packed.buckets:
            if bucket.start >= p:
                break
            slots = bucket.rows.shape[1]
            width = READ_CHUNK_ELEMENTS // ((slots + 1) * (d + 2 * batch))
            for lo, hi in spans(min(bucket.stop, p) - bucket.start, width):
                a, z = bucket.start + lo, bucket.start + hi
                vecs = torch.empty(hi - lo, slots + 1, d, dtype=grad.dtype, device=grad.device)
                torch.mul(
                    packed.table[bucket.rows[lo:hi]],
                    bucket.values[lo:hi, :, None],
                    out=vecs[:, :slots],
                )
                vecs[:, slots] = errors[a:z]
                vals = torch.bmm(grad[:, a:z].transpose(0, 1), vecs.transpose(1, 2))
                cols = bucket.cols[lo:hi].reshape(-1)  # vals: [k, batch, slots + 1]
                out.index_add_(1, cols, vals.transpose(0, 1).reshape(batch, -1))

    def _read_few(self, out: torch.Tensor, layer: int, grad: torch.Tensor) -> None:
        """``read`` for a few rows ``grad [batch, pos', d]``: each gathered bucket's positions
        a chunk at a time, the gradient there ``[k, batch, d]`` projected onto the scaled
        vectors ``[k, slots, d]`` by one batched product; then the errors, one per position."""
        batch, p, d = grad.shape
        packed = self.decoders[layer]
        for bucket in packed.gathered:
            k = bisect.bisect_left(bucket.positions, p)  # positions < p
            slots = bucket.rows.shape[1]
            width = READ_CHUNK_ELEMENTS // (slots * (d + 2 * batch) + batch * d)
            for lo, hi in spans(k, width):
                g = grad.index_select(1, bucket.index[lo:hi]).transpose(0, 1)  # [k', b, d]
                vecs = packed.table[bucket.rows[lo:hi]] * bucket.values[lo:hi, :, None]
                vals = torch.bmm(g, vecs.transpose(1, 2))  # [k', batch, slots]
                cols = bucket.cols[lo:hi].reshape(-1)
                out.index_add_(1, cols, vals.transpose(0, 1).reshape(batch, -1))
        width = READ_CHUNK_ELEMENTS // (batch * d)
        _read_vectors(out, self.error_col(layer), grad, self.errors[layer], width)

    def read_tokens(self, out: torch.Tensor, grad: torch.Tensor) -> None:
        """Adds token edges for ``grad [batch, pos', d]`` at the embedding output."""
        width = READ_CHUNK_ELEMENTS // (grad.shape[0] * grad.shape[2])
        _read_vectors(out, self.token_col, grad, self.tokens, width)


def _read_vectors(
    out: torch.Tensor, start: int, grad: torch.Tensor, vecs: torch.Tensor, width: int
) -> None:
    """``out[:, start + q] += <grad[:, q], vecs[q]>`` for the positions ``q`` of ``grad [batch,
    pos', d]`` (``vecs [n_pos, d]``: one source per position), ``width`` positions at a time."""
    for lo, hi in spans(grad.shape[1], width):
        # (an elementwise product and a sum: 5x less time than einsum's batched products)
        out[:, start + lo : start + hi] += (grad[:, lo:hi] * vecs[lo:hi]).sum(-1)


def spans(n: int, width: int) -> list[tuple[int, int]]:
    """``(lo, hi)`` ranges covering ``0..n``, ``width`` (at least 1) at a time."""
    width = max(1, width)
    return [(lo, min(lo + width, n)) for lo in range(0, n, width)]


def pack_decoders(
    transcoders: Transcoders,
    features: SparseActivations,
    n_pos: int,
    n_cols: int,
    dtype: torch.dtype,
) -> list[PackedDecoders]:
    """Features grouped by output layer and position, with each output layer's distinct decoder
    rows (see ``PackedDecoders``); ``n_cols`` source columns, the errors of layer ``l`` at
    ``n_cols - (n_layers + 1 - l) * n_pos`` onwards. Layers no feature writes to get empty
    slots (their buckets still read the errors)."""
    n_layers = transcoders.n_layers
    # per output layer: (positions, columns, table rows, activations) and table parts
    parts: list[list[tuple[torch.Tensor, ...]]] = [[] for _ in range(n_layers)]
    tables: list[list[torch.Tensor]] = [[] for _ in range(n_layers)]
    size = [0] * n_layers
    idx = features.indices
    for layer in range(n_layers):
        sel = (idx[:, 0] == layer).nonzero(as_tuple=True)[0]
        if sel.numel() == 0:
            continue
        distinct, which = torch.unique(idx[sel, 2], return_inverse=True)
        dec = transcoders.decoder_rows(layer, distinct).to(dtype)  # [n_distinct, n_out, d]
        values = features.values[sel].to(dtype)
        for j in range(dec.shape[1]):
            out = layer + j
            parts[out].append((idx[sel, 1], sel, which + size[out], values))
            tables[out].append(dec[:, j])
            size[out] += len(distinct)
    packed: list[PackedDecoders] = []
    device = features.indices.device
    for out in range(n_layers):
        error_cols = n_cols - (n_layers + 1 - out) * n_pos + torch.arange(n_pos, device=device)
        if parts[out]:
            pos, col, row, val = (torch.cat(t) for t in zip(*parts[out], strict=True))
            order = torch.argsort(pos, stable=True)
            pos, col, row, val = pos[order], col[order], row[order], val[order]
            table = torch.cat(tables[out])
        else:
            pos = col = row = torch.zeros(0, dtype=torch.long, device=device)
            table = torch.zeros(0, transcoders.d_model, dtype=dtype, device=device)
            val = table[:, 0]
        slots = _PositionSlots.of(pos, n_pos)
        buckets = _buckets(slots, pos, col, row, val, n_cols, error_cols)
        gathered = _gathered_buckets(slots, pos, col, row, val, n_pos, n_cols)
        packed.append(PackedDecoders(table, buckets, gathered))
    return packed


@dataclass(frozen=True)
class _PositionSlots:
    """For features sorted by position ``pos [n]``: ``counts [n_pos]`` features per position,
    ``starts [n_pos]`` the first feature of each position, ``slot [n]`` each feature's index
    within its position (shared by both packings)."""

    counts: torch.Tensor
    starts: torch.Tensor
    slot: torch.Tensor

    @classmethod
    def of(cls, pos: torch.Tensor, n_pos: int) -> _PositionSlots:
        counts = torch.bincount(pos, minlength=n_pos)
        starts = torch.cumsum(counts, 0) - counts
        return cls(counts, starts, torch.arange(len(pos), device=pos.device) - starts[pos])


def _buckets(
    slots: _PositionSlots,
    pos: torch.Tensor,
    col: torch.Tensor,
    row: torch.Tensor,
    val: torch.Tensor,
    n_cols: int,
    error_cols: torch.Tensor,
) -> list[PackedBucket]:
    """Buckets covering every position for features sorted by position ``pos [n]``, with
    columns ``col``, table rows ``row`` and activations ``val``; ``error_cols [n_pos]``: the
    error column of each position."""
    counts, starts, slot = slots.counts, slots.starts, slots.slot
    buckets = []
    for a, z, width in position_runs(counts.tolist()):
        i, j = int(starts[a]), int(starts[z - 1] + counts[z - 1])  # the features of a..z-1
        at = (pos[i:j] - a, slot[i:j])
        rows = torch.zeros(z - a, width, dtype=torch.long, device=pos.device)
        values = torch.zeros(z - a, width, dtype=val.dtype, device=val.device)
        cols = torch.full((z - a, width + 1), n_cols, dtype=torch.long, device=pos.device)
        rows[at], values[at], cols[at] = row[i:j], val[i:j], col[i:j]
        cols[:, width] = error_cols[a:z]
        buckets.append(PackedBucket(a, rows, values, cols))
    return buckets


def _gathered_buckets(
    slots: _PositionSlots,
    pos: torch.Tensor,
    col: torch.Tensor,
    row: torch.Tensor,
    val: torch.Tensor,
    n_pos: int,
    n_cols: int,
) -> list[GatheredBucket]:
    """Positions with features grouped by ``ceil(log2(count))`` (see ``PackedDecoders``), for
    features sorted by position ``pos [n]`` with columns ``col``, table rows ``row`` and
    activations ``val``; positions without features are in none."""
    counts, slot = slots.counts, slots.slot
    level = torch.where(counts > 0, torch.ceil(torch.log2(counts.double())).long(), -1)
    buckets = []
    for lv in torch.unique(level[level >= 0]).tolist():
        where = (level == lv).nonzero(as_tuple=True)[0]  # ascending positions
        shape = (len(where), int(counts[where].max()))
        at = torch.full((n_pos,), -1, dtype=torch.long, device=pos.device)
        at[where] = torch.arange(len(where), device=pos.device)
        mine = at[pos] >= 0
        place = (at[pos[mine]], slot[mine])
        rows = torch.zeros(shape, dtype=torch.long, device=pos.device)
        values = torch.zeros(shape, dtype=val.dtype, device=val.device)
        cols = torch.full(shape, n_cols, dtype=torch.long, device=pos.device)
        rows[place], values[place], cols[place] = row[mine], val[mine], col[mine]
        buckets.append(GatheredBucket(where.tolist(), where, rows, values, cols))
    return buckets


def position_runs(counts: list[int]) -> list[tuple[int, int, int]]:
    """Cuts positions ``0..len(counts) - 1`` into runs ``(start, stop, slots)`` of consecutive
    positions, ``slots`` the largest of ``counts[start:stop]`` (features per position): a run
    grows while its padded size ``(slots + 1) * length`` (one more slot for the error node)
    stays within twice its ``sum(counts) + length`` entries."""
    runs, start, n = [], 0, len(counts)
    while start < n:
        stop, slots, used = start + 1, counts[start], counts[start] + 1
        while stop < n:
            wider = max(slots, counts[stop])
            if (wider + 1) * (stop + 1 - start) > 2 * (used + counts[stop] + 1):
                break
            slots, used, stop = wider, used + counts[stop] + 1, stop + 1
        runs.append((start, stop, slots))
        start = stop
    return runs


def reconstructions(
    transcoders: Transcoders, decoders: list[PackedDecoders], reads: torch.Tensor
) -> torch.Tensor:
    """Transcoder outputs ``[n_layers, n_pos, d]`` from the packed decoders (no second read of
    the decoder rows): scaled decoder rows summed per position, plus ``b_dec`` and the skip."""
    out = torch.zeros(reads.shape, dtype=reads.dtype, device=reads.device)
    for layer, packed in enumerate(decoders):
        _add_reconstruction(out[layer], packed)
        out[layer] += transcoders.decoder_bias(layer).to(reads.dtype)
        sk = transcoders.skip(layer, reads[layer])
        if sk is not None:
            out[layer] += sk
    return out


def _add_reconstruction(out: torch.Tensor, packed: PackedDecoders) -> None:
    """Adds each position's activation-scaled decoder vectors into ``out [n_pos, d]``."""
    for bucket in packed.buckets:
        width = READ_CHUNK_ELEMENTS // (max(bucket.rows.shape[1], 1) * out.shape[-1])
        for lo, hi in spans(bucket.stop - bucket.start, width):
            vecs = bucket.vectors(packed.table, lo, hi)
            out[bucket.start + lo : bucket.start + hi] += vecs.sum(1).to(out.dtype)
