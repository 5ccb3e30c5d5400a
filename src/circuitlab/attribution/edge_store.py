"""Edge rows while they are being computed: compact, and ready for influence ranking.

A target read at layer ``l`` (a feature) can only receive edges from features at layers
``< l``, which are the first ``feature_start[l]`` columns in circuit-tracer's node order, and
from errors and tokens. So each row is kept as a *prefix* of the feature columns plus the
error/token *tail*; logit rows keep every feature column. Rows are stored as magnitudes
(float) plus packed sign bits: influence ranking needs ``|A|`` many times, the final graph
needs the signed values once, and neither needs a second full-size copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class _Block:
    rows: torch.Tensor  # [k] row indices (order of computation)
    nodes: torch.Tensor  # [k] node ids of these rows
    width: int  # feature columns kept
    mag: torch.Tensor  # [k, width + n_tail]
    sign: np.ndarray  # packed bits of (value < 0), shape [k, ceil((width + n_tail) / 8)]
    row_sum: torch.Tensor  # [k] sum of magnitudes


class EdgeRows:
    """Rows ``[n_rows, n_features + n_tail]`` of direct effects, stored compactly.

    ``feature_start[l]`` is the index of the first feature at layer ``l`` (``feature_start[
    n_layers] = n_features``); a row of a target read at layer ``l`` keeps feature columns
    ``[0, feature_start[l])``; the ``n_tail`` error and token columns are always kept.
    """

    def __init__(self, feature_start: list[int], n_tail: int, dtype: torch.dtype):
        self.feature_start = feature_start
        self.n_features = feature_start[-1]
        self.n_tail = n_tail
        self.dtype = dtype
        self.blocks: list[_Block] = []
        self.n_rows = 0

    def add(self, values: torch.Tensor, layers: torch.Tensor, nodes: torch.Tensor) -> None:
        """Appends rows ``values [k, n_features + n_tail]`` of targets read at ``layers [k]``
        (``n_layers`` for logits) with node ids ``nodes [k]``."""
        values, layers, nodes = values.cpu(), layers.cpu(), nodes.cpu()
        for layer in torch.unique(layers).tolist():
            sel = (layers == layer).nonzero(as_tuple=True)[0]
            width = self.feature_start[min(layer, len(self.feature_start) - 1)]
            part = torch.cat([values[sel, :width], values[sel, self.n_features :]], dim=1)
            mag = part.abs().to(self.dtype)
            sign = np.packbits((part < 0).numpy(), axis=1)
            self.blocks.append(_Block(sel + self.n_rows, nodes[sel], width, mag, sign, mag.sum(1)))
        self.n_rows += values.shape[0]

    def influence(self, weights: torch.Tensor, max_iter: int = 1000) -> torch.Tensor:
        """Influence ``[n_features + n_tail + n_logits]`` of every node on the weighted targets,
        from the rows so far (as ``graph.influence.compute_influence`` on row-normalised |A|)."""
        n_main = self.n_features + self.n_tail
        prod = weights.to(self.dtype)
        total = torch.zeros_like(prod)
        scaled = [1.0 / b.row_sum.clamp(min=1e-10) for b in self.blocks]
        for _ in range(max_iter + 1):
            nxt = torch.zeros_like(prod)
            for b, inv in zip(self.blocks, scaled, strict=True):
                p = prod[b.nodes] * inv
                if not p.any():
                    continue
                contrib = p @ b.mag
                nxt[: b.width] += contrib[: b.width]
                nxt[self.n_features : n_main] += contrib[b.width :]
            if not nxt.any():
                return total
            total += nxt
            prod = nxt
        raise RuntimeError("influence did not converge: the edge rows contain a cycle")

    def dense(self, feature_cols: torch.Tensor, n_logit_cols: int) -> torch.Tensor:
        """Signed rows in computation order, columns ``[feature_cols | tail | n_logit_cols zeros]``."""
        k = feature_cols.shape[0]
        out = torch.zeros(self.n_rows, k + self.n_tail + n_logit_cols, dtype=self.dtype)
        for b in self.blocks:
            n = b.mag.shape[1]
            neg = torch.from_numpy(np.unpackbits(b.sign, axis=1, count=n).astype(bool))
            signed = torch.where(neg, -b.mag, b.mag)
            keep = feature_cols < b.width
            block = torch.zeros(len(b.rows), k, dtype=self.dtype)
            block[:, keep] = signed[:, feature_cols[keep]]
            out[b.rows, :k] = block
            out[b.rows, k : k + self.n_tail] = signed[:, b.width :]
        return out
