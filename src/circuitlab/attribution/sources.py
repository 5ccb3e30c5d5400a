"""Source nodes of an attribution graph and how they read a gradient.

Columns of the edge matrix are ``[active features | errors (layer-major) | tokens]``.
A source's edge into a target is ``<gradient of the target at the source's write point,
source value vector>``: for a feature the activation-scaled decoder row (one per output layer
for cross-layer transcoders), for an error node the MLP-output residual the transcoder missed,
for a token its embedding.

Feature decoder rows of one output layer are packed position by position into padded blocks
``vecs [positions, slots, d_model]`` so that a few batched matmuls read them all. Positions are
bucketed by how many features write there (slots rounded up to a power of two), so padding
costs at most 2x: one block padded to the busiest position wasted 7x memory and time on a
512-token SmolLM2 prompt, where the first tokens carry ~8x the average feature count.
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


@dataclass
class PackedBucket:
    """Decoder vectors of the positions ``positions`` (ascending) of one output layer.

    ``vecs [k, slots, d]`` (activation-scaled; padding rows are zero) and ``cols [k, slots]``
    the source column of each slot (padding points at a spare column ``n_cols``).
    """

    positions: list[int]
    index: torch.Tensor  # [k] the same positions, for gathering gradients
    vecs: torch.Tensor
    cols: torch.Tensor


@dataclass
class PackedDecoders:
    """Decoder vectors writing into one output layer, in buckets of similar feature counts."""

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
        packed decoder rows, the error terms ``writes - reconstruction`` and the embeddings."""
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
        """
        p = grad.shape[1]
        packed = self.decoders[layer]
        for bucket in packed.buckets if packed is not None else []:
            k = bisect.bisect_left(bucket.positions, p)  # positions < p
            if k == 0:
                continue
            g = grad.index_select(1, bucket.index[:k]).transpose(0, 1)  # [k, batch, d]
            vals = torch.bmm(g, bucket.vecs[:k].transpose(1, 2))  # [k, batch, slots]
            out.index_add_(
                1, bucket.cols[:k].reshape(-1), vals.transpose(0, 1).reshape(grad.shape[0], -1)
            )
        start = self.error_col(layer)
        out[:, start : start + p] += torch.einsum("bpd,pd->bp", grad, self.errors[layer, :p])

    def read_tokens(self, out: torch.Tensor, grad: torch.Tensor) -> None:
        """Adds token edges for ``grad [batch, pos', d]`` at the embedding output."""
        p = grad.shape[1]
        out[:, self.token_col : self.token_col + p] += torch.einsum(
            "bpd,pd->bp", grad, self.tokens[:p]
        )


def pack_decoders(
    transcoders: Transcoders,
    features: SparseActivations,
    n_pos: int,
    n_cols: int,
    dtype: torch.dtype,
) -> list[PackedDecoders | None]:
    """Activation-scaled decoder rows grouped by output layer and position (see ``PackedDecoders``)."""
    n_layers = transcoders.n_layers
    per_layer: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = [
        [] for _ in range(n_layers)
    ]
    idx = features.indices
    for layer in range(n_layers):
        sel = (idx[:, 0] == layer).nonzero(as_tuple=True)[0]
        if sel.numel() == 0:
            continue
        dec = transcoders.decoder_rows(layer, idx[sel, 2]).to(dtype)  # [n, n_out, d]
        dec = dec * features.values[sel].to(dtype)[:, None, None]
        for j in range(dec.shape[1]):
            per_layer[layer + j].append((idx[sel, 1], sel, dec[:, j]))
    packed: list[PackedDecoders | None] = []
    for parts in per_layer:
        if not parts:
            packed.append(None)
            continue
        pos = torch.cat([p for p, _, _ in parts])
        col = torch.cat([c for _, c, _ in parts])
        vec = torch.cat([v for _, _, v in parts])
        order = torch.argsort(pos, stable=True)
        pos, col, vec = pos[order], col[order], vec[order]
        packed.append(PackedDecoders(_buckets(pos, col, vec, n_pos, n_cols)))
    return packed


def _buckets(
    pos: torch.Tensor, col: torch.Tensor, vec: torch.Tensor, n_pos: int, n_cols: int
) -> list[PackedBucket]:
    """Buckets for vectors ``vec [n, d]`` sorted by position ``pos [n]``, with columns ``col``."""
    counts = torch.bincount(pos, minlength=n_pos)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(pos), device=pos.device) - starts[pos]
    # bucket of a position: ceil(log2(count)); positions without features have none
    level = torch.where(counts > 0, torch.ceil(torch.log2(counts.double())).long(), -1)
    buckets = []
    for lv in torch.unique(level[level >= 0]).tolist():
        where = (level == lv).nonzero(as_tuple=True)[0]  # ascending positions
        slots = int(counts[where].max())
        row = torch.full((n_pos,), -1, dtype=torch.long, device=pos.device)
        row[where] = torch.arange(len(where), device=pos.device)
        mine = row[pos] >= 0
        vecs = torch.zeros(len(where), slots, vec.shape[1], dtype=vec.dtype, device=vec.device)
        cols = torch.full((len(where), slots), n_cols, dtype=torch.long, device=vec.device)
        vecs[row[pos[mine]], slot[mine]] = vec[mine]
        cols[row[pos[mine]], slot[mine]] = col[mine]
        buckets.append(PackedBucket(where.tolist(), where, vecs, cols))
    return buckets


def reconstructions(
    transcoders: Transcoders, decoders: list[PackedDecoders | None], reads: torch.Tensor
) -> torch.Tensor:
    """Transcoder outputs ``[n_layers, n_pos, d]`` from the packed decoders (no second read of
    the decoder rows): scaled decoder rows summed per position, plus ``b_dec`` and the skip."""
    out = torch.zeros(reads.shape, dtype=reads.dtype, device=reads.device)
    for layer, packed in enumerate(decoders):
        for bucket in packed.buckets if packed is not None else []:
            out[layer].index_add_(0, bucket.index, bucket.vecs.sum(1).to(reads.dtype))
        out[layer] += transcoders.decoder_bias(layer).to(reads.dtype)
        sk = transcoders.skip(layer, reads[layer])
        if sk is not None:
            out[layer] += sk
    return out
