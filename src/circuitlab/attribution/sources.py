"""Source nodes of an attribution graph and how they read a gradient.

Columns of the edge matrix are ``[active features | errors (layer-major) | tokens]``.
A source's edge into a target is ``<gradient of the target at the source's write point,
source value vector>``: for a feature the activation-scaled decoder row (one per output layer
for cross-layer transcoders), for an error node the MLP-output residual the transcoder missed,
for a token its embedding.

Feature decoder rows of one output layer are packed position by position into a padded block
``vecs [pos, slots, d_model]`` so that one batched matmul reads them all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..transcoders.base import SparseActivations, Transcoders


@dataclass
class PackedDecoders:
    """Decoder vectors writing into one output layer, padded per position.

    ``vecs [n_pos, slots, d]`` (activation-scaled; padding rows are zero) and ``cols [n_pos,
    slots]`` the source column of each slot (padding points at a spare column ``n_cols``).
    """

    vecs: torch.Tensor
    cols: torch.Tensor


@dataclass
class Sources:
    """Everything the backward sweep contracts gradients with."""

    features: SparseActivations
    decoders: list[PackedDecoders | None]  # per output layer
    errors: torch.Tensor  # [n_layers, n_pos, d]
    tokens: torch.Tensor  # [n_pos, d]
    n_layers: int
    n_pos: int

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
        if packed is not None:
            vecs, cols = packed.vecs[:p], packed.cols[:p]
            vals = torch.bmm(grad.transpose(0, 1), vecs.transpose(1, 2))  # [pos', batch, slots]
            out.index_add_(1, cols.reshape(-1), vals.transpose(0, 1).reshape(grad.shape[0], -1))
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
        counts = torch.bincount(pos, minlength=n_pos)
        slots = int(counts.max())
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(pos), device=pos.device) - starts[pos]
        vecs = torch.zeros(n_pos, slots, vec.shape[1], dtype=dtype, device=vec.device)
        cols = torch.full((n_pos, slots), n_cols, dtype=torch.long, device=vec.device)
        vecs[pos, slot] = vec
        cols[pos, slot] = col
        packed.append(PackedDecoders(vecs, cols))
    return packed
