"""Source nodes of an attribution graph and how they read a gradient.

Columns of the edge matrix are ``[active features | errors (layer-major) | tokens]``.
A source's edge into a target is ``<gradient of the target at the source's write point,
source value vector>``: for a feature the activation-scaled decoder row (one per output layer
for cross-layer transcoders), for an error node the MLP-output residual the transcoder missed,
for a token its embedding.

Features writing into one output layer are packed position by position into padded slots
``[positions, slots]`` so that a few batched matmuls read them all. Positions are bucketed by
how many features write there (slots rounded up to a power of two), so padding costs at most
2x: one block padded to the busiest position wasted 7x memory and time on a 512-token SmolLM2
prompt, where the first tokens carry ~8x the average feature count.

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

#: Elements of the gathered gradient ``[positions, batch, d]`` that ``Sources.read`` projects at
#: once (64 MiB in float32): bounds its temporaries whatever the prompt length and batch size.
READ_CHUNK_ELEMENTS = 2**24


@dataclass
class PackedBucket:
    """Features writing at the positions ``positions`` (ascending) of one output layer.

    ``rows [k, slots]`` index the layer's ``DecoderTable``, ``values [k, slots]`` the
    activations and ``cols [k, slots]`` the source columns (padding: value 0, column
    ``n_cols``, a spare column).
    """

    positions: list[int]
    index: torch.Tensor  # [k] the same positions, for gathering gradients
    rows: torch.Tensor
    values: torch.Tensor
    cols: torch.Tensor

    def vectors(self, table: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """Activation-scaled decoder vectors ``[hi - lo, slots, d]`` of positions ``lo:hi`` of
        this bucket (``table [n_rows, d]``: the layer's distinct decoder rows)."""
        return table[self.rows[lo:hi]] * self.values[lo:hi, :, None]


@dataclass
class PackedDecoders:
    """Features writing into one output layer: their distinct decoder rows ``table [n, d]``
    and buckets of positions with similar feature counts."""

    table: torch.Tensor
    buckets: list[PackedBucket]


@dataclass
class Sources:
    """Everything the backward sweep contracts gradients with."""

    features: SparseActivations
    decoders: list[PackedDecoders | None]  # per output layer
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
        """Adds the edges of sources writing at ``layer`` into ``out [batch, n_cols + 1]``.

        ``grad [batch, pos', d]`` is the gradient at that layer's write point (``pos' <= n_pos``).
        Positions are projected a chunk at a time (``READ_CHUNK_ELEMENTS``).
        """
        batch, p, d = grad.shape
        width = READ_CHUNK_ELEMENTS // (batch * d)
        packed = self.decoders[layer]
        if packed is not None:
            for bucket in packed.buckets:
                k = bisect.bisect_left(bucket.positions, p)  # positions < p
                for lo, hi in spans(k, width):
                    g = grad.index_select(1, bucket.index[lo:hi]).transpose(0, 1)  # [k', b, d]
                    vals = torch.bmm(g, bucket.vectors(packed.table, lo, hi).transpose(1, 2))
                    cols = bucket.cols[lo:hi].reshape(-1)  # vals: [k', batch, slots]
                    out.index_add_(1, cols, vals.transpose(0, 1).reshape(batch, -1))
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
) -> list[PackedDecoders | None]:
    """Features grouped by output layer and position, with each output layer's distinct decoder
    rows (see ``PackedDecoders``)."""
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
    packed: list[PackedDecoders | None] = []
    for out in range(n_layers):
        if not parts[out]:
            packed.append(None)
            continue
        pos, col, row, val = (torch.cat(t) for t in zip(*parts[out], strict=True))
        order = torch.argsort(pos, stable=True)
        buckets = _buckets(pos[order], col[order], row[order], val[order], n_pos, n_cols)
        packed.append(PackedDecoders(torch.cat(tables[out]), buckets))
    return packed


def _buckets(
    pos: torch.Tensor,
    col: torch.Tensor,
    row: torch.Tensor,
    val: torch.Tensor,
    n_pos: int,
    n_cols: int,
) -> list[PackedBucket]:
    """Buckets for features sorted by position ``pos [n]``, with columns ``col``, table rows
    ``row`` and activations ``val``."""
    counts = torch.bincount(pos, minlength=n_pos)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(pos), device=pos.device) - starts[pos]
    # bucket of a position: ceil(log2(count)); positions without features have none
    level = torch.where(counts > 0, torch.ceil(torch.log2(counts.double())).long(), -1)
    buckets = []
    for lv in torch.unique(level[level >= 0]).tolist():
        where = (level == lv).nonzero(as_tuple=True)[0]  # ascending positions
        shape = (len(where), int(counts[where].max()))
        at = torch.full((n_pos,), -1, dtype=torch.long, device=pos.device)
        at[where] = torch.arange(len(where), device=pos.device)
        mine = at[pos] >= 0
        slots = (at[pos[mine]], slot[mine])
        rows = torch.zeros(shape, dtype=torch.long, device=pos.device)
        values = torch.zeros(shape, dtype=val.dtype, device=val.device)
        cols = torch.full(shape, n_cols, dtype=torch.long, device=pos.device)
        rows[slots], values[slots], cols[slots] = row[mine], val[mine], col[mine]
        buckets.append(PackedBucket(where.tolist(), where, rows, values, cols))
    return buckets


def reconstructions(
    transcoders: Transcoders, decoders: list[PackedDecoders | None], reads: torch.Tensor
) -> torch.Tensor:
    """Transcoder outputs ``[n_layers, n_pos, d]`` from the packed decoders (no second read of
    the decoder rows): scaled decoder rows summed per position, plus ``b_dec`` and the skip."""
    out = torch.zeros(reads.shape, dtype=reads.dtype, device=reads.device)
    for layer, packed in enumerate(decoders):
        if packed is not None:
            _add_reconstruction(out[layer], packed)
        out[layer] += transcoders.decoder_bias(layer).to(reads.dtype)
        sk = transcoders.skip(layer, reads[layer])
        if sk is not None:
            out[layer] += sk
    return out


def _add_reconstruction(out: torch.Tensor, packed: PackedDecoders) -> None:
    """Adds each position's activation-scaled decoder vectors into ``out [n_pos, d]``."""
    for bucket in packed.buckets:
        width = READ_CHUNK_ELEMENTS // (bucket.rows.shape[1] * out.shape[-1])
        for lo, hi in spans(len(bucket.positions), width):
            vecs = bucket.vectors(packed.table, lo, hi)
            out.index_add_(0, bucket.index[lo:hi], vecs.sum(1).to(out.dtype))
