"""The edges of an attribution graph, in blocks that skip the entries that must be zero.

A target read at layer ``l`` and position ``q`` can only receive from features and errors at
layers ``< l`` and positions ``<= q`` and from tokens at positions ``<= q``: the MLP outputs of
layer ``l`` and later are written after the read, and attention is causal. (A CLT feature of
layer ``a`` writes to the MLP outputs of layers ``>= a``, so the same rule holds for it.) Logits
read everything. Error and token nodes receive nothing.

``EdgeBlocks`` keeps ``A[target, source]`` as a list of ``EdgeBlock``s: each block is a dense
``values[k, w]`` over its own ``targets[k]`` and ``sources[w]`` (node indices), and every entry
outside the blocks is zero. The attribution engine groups targets by (read layer, position
chunk), so a block's sources are exactly what those targets can read (up to the chunk's last
position); ``from_dense`` groups the same way and keeps a group's non-zero columns.

The signed values are stored once, in ``dtype`` (float32, or bfloat16/float16 to halve memory;
float64 for hand-built graphs). Influence, row sums and edge scores are computed block by block
in float32 (float64 for float64 edges), so no ``[n_rows, N]`` or ``[N, N]`` matrix is built
unless ``dense`` is asked for.

Influence (``w Â + w Â² + ...``, see ``graph.influence``) is one pass over the blocks in
decreasing read layer when every block reads only from targets of lower layers (always the case
for graphs the engine builds); otherwise it falls back to the power series.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

EDGE_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
POSITION_CHUNKS = 16  # position chunks per read layer: at most ~1/32 of a block is causal padding


@dataclass
class EdgeBlock:
    """``A[targets[i], sources[j]] = values[i, j]``.

    * ``targets[k]`` (long): node index of each row, every one read at ``layer``
      (``n_layers`` for logits).
    * ``sources[w]`` (long): ascending node index of each column; blocks of one (layer,
      position chunk) may share this tensor.
    * ``values[k, w]``: signed direct effects, in the store's dtype.
    """

    targets: torch.Tensor
    sources: torch.Tensor
    values: torch.Tensor
    layer: int


class EdgeBlocks:
    """All edges of a graph over ``n_nodes`` nodes, as blocks (see the module docs)."""

    def __init__(self, blocks: list[EdgeBlock], n_nodes: int, dtype: torch.dtype):
        if dtype not in EDGE_DTYPES:
            raise ValueError(f"edge dtype must be one of {EDGE_DTYPES}, got {dtype}")
        self.blocks = blocks
        self.n_nodes = n_nodes
        self.dtype = dtype

    # ---- sizes and types ----------------------------------------------------------------------
    @property
    def compute_dtype(self) -> torch.dtype:
        """float64 for float64 edges, else float32: what influence and scores are computed in."""
        return torch.float64 if self.dtype == torch.float64 else torch.float32

    @property
    def device(self) -> torch.device:
        return self.blocks[0].values.device if self.blocks else torch.device("cpu")

    @property
    def targets(self) -> torch.Tensor:
        """``[n_targets]`` (long): every target node, block after block."""
        if not self.blocks:
            return torch.zeros(0, dtype=torch.long, device=self.device)
        return torch.cat([b.targets for b in self.blocks])

    @property
    def nbytes(self) -> int:
        """Bytes held by values, targets and sources (sources shared by blocks count once)."""
        tensors = {id(t): t for b in self.blocks for t in (b.values, b.targets, b.sources)}
        return sum(t.numel() * t.element_size() for t in tensors.values())

    @property
    def n_stored(self) -> int:
        """Number of stored entries (zeros included)."""
        return sum(b.values.numel() for b in self.blocks)

    def equal(self, other: EdgeBlocks) -> bool:
        """Whether both hold the same blocks, exactly (dtype, order and values)."""
        return (
            self.n_nodes == other.n_nodes
            and self.dtype == other.dtype
            and len(self.blocks) == len(other.blocks)
            and all(
                a.layer == b.layer
                and torch.equal(a.targets, b.targets)
                and torch.equal(a.sources, b.sources)
                and torch.equal(a.values, b.values)
                for a, b in zip(self.blocks, other.blocks, strict=True)
            )
        )

    def to(self, device: torch.device | str) -> EdgeBlocks:
        """A copy with every block on ``device``."""
        moved = [
            EdgeBlock(b.targets.to(device), b.sources.to(device), b.values.to(device), b.layer)
            for b in self.blocks
        ]
        return EdgeBlocks(moved, self.n_nodes, self.dtype)

    def check(self, n_targets_max: int | None = None) -> None:
        """Raise ``ValueError`` if blocks overlap or reach outside ``[0, n_nodes)``."""
        for b in self.blocks:
            k, w = b.targets.numel(), b.sources.numel()
            if tuple(b.values.shape) != (k, w) or b.values.dtype != self.dtype:
                raise ValueError(
                    f"edge block values are {b.values.dtype} {tuple(b.values.shape)}, expected "
                    f"{self.dtype} ({k}, {w})"
                )
            if b.values.is_meta:  # value checks need data
                continue
            if w and (int(b.sources.min()) < 0 or int(b.sources.max()) >= self.n_nodes):
                raise ValueError(f"edge block sources must lie in [0, {self.n_nodes})")
            if w > 1 and not bool((b.sources[1:] > b.sources[:-1]).all()):
                raise ValueError("edge block sources must be strictly ascending")
        targets = self.targets
        if targets.is_meta:
            return
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= self.n_nodes):
            raise ValueError(f"edge block targets must lie in [0, {self.n_nodes})")
        if targets.unique().numel() != targets.numel():
            raise ValueError("a target node appears in more than one edge block row")

    # ---- building ---------------------------------------------------------------------------
    @classmethod
    def from_dense(
        cls,
        rows: torch.Tensor,
        row_nodes: torch.Tensor,
        row_layers: torch.Tensor,
        row_positions: torch.Tensor,
        n_pos: int,
        n_nodes: int,
    ) -> EdgeBlocks:
        """Blocks of ``rows[n_rows, n_nodes]`` (``row_nodes``, ``row_layers``, ``row_positions``
        ``[n_rows]``), grouped by (layer, position chunk); each block keeps the columns where
        any of its rows is non-zero, so the blocks hold every non-zero entry exactly."""
        keys = row_layers.cpu() * POSITION_CHUNKS + position_chunk(row_positions.cpu(), n_pos)
        blocks = []
        for key in torch.unique(keys).tolist():
            sel = (keys == key).nonzero(as_tuple=True)[0].to(rows.device)
            part = rows[sel]
            sources = part.ne(0).any(0).nonzero(as_tuple=True)[0]
            layer = int(key) // POSITION_CHUNKS
            blocks.append(EdgeBlock(row_nodes[sel], sources, part[:, sources], layer))
        return cls(blocks, n_nodes, rows.dtype)

    # ---- reading ----------------------------------------------------------------------------
    def dense(self, row_nodes: torch.Tensor) -> torch.Tensor:
        """``[len(row_nodes), n_nodes]``: the rows of ``row_nodes`` (zeros for nodes without
        inputs), built on request: this is the full matrix the blocks avoid."""
        row_of = self._row_lookup(row_nodes)
        out = torch.zeros(len(row_nodes), self.n_nodes, dtype=self.dtype, device=self.device)
        if out.is_meta:
            return out
        for b in self.blocks:
            rows = row_of[b.targets]
            ok = rows >= 0
            out[rows[ok][:, None], b.sources[None, :]] = b.values[ok]
        return out

    def values_at(self, targets: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        """``A[targets[i], sources[i]]`` for each pair (``[n]``, the store's dtype; 0 where no
        block holds the entry)."""
        out = torch.zeros(targets.numel(), dtype=self.dtype, device=self.device)
        block_of, row_in = self._target_lookup()
        which = block_of[targets]
        for i in torch.unique(which[which >= 0]).tolist():
            b = self.blocks[i]
            if not b.sources.numel():
                continue
            q = (which == i).nonzero(as_tuple=True)[0]
            col = torch.searchsorted(b.sources, sources[q]).clamp(max=len(b.sources) - 1)
            hit = b.sources[col] == sources[q]
            out[q[hit]] = b.values[row_in[targets[q[hit]]], col[hit]]
        return out

    def abs_sums(
        self, source_mask: torch.Tensor | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """``Σ_s |A[t, s]| · source_mask[s]`` for every node ``t`` (``[n_nodes]``; 0 for nodes
        without inputs), in ``dtype`` (default ``compute_dtype``)."""
        dtype = dtype or self.compute_dtype
        out = torch.zeros(self.n_nodes, dtype=dtype, device=self.device)
        for b in self.blocks:
            a = b.values.abs().to(dtype)
            if source_mask is not None:
                a = a @ source_mask[b.sources].to(dtype)
            else:
                a = a.sum(1)
            out[b.targets] = a
        return out

    def normalized_blocks(
        self,
        row_factor: torch.Tensor,
        source_mask: torch.Tensor | None = None,
        dtype: torch.dtype | None = None,
    ) -> Iterator[tuple[EdgeBlock, torch.Tensor]]:
        """Each block with ``|values| · row_factor[targets] · source_mask[sources]`` (a new
        ``[k, w]`` tensor in ``dtype``, one block at a time)."""
        dtype = dtype or self.compute_dtype
        for b in self.blocks:
            a = b.values.abs().to(dtype) * row_factor[b.targets].to(dtype)[:, None]
            if source_mask is not None:
                a *= source_mask[b.sources].to(dtype)[None, :]
            yield b, a

    def influence(
        self,
        weights: torch.Tensor,
        row_sums: torch.Tensor,
        *,
        source_mask: torch.Tensor | None = None,
        target_mask: torch.Tensor | None = None,
        max_iter: int = 1000,
    ) -> torch.Tensor:
        """Influence ``w Â + w Â² + ...`` (``[n_nodes]``, seed excluded), where
        ``Â[t, s] = |A[t, s]| · source_mask[s] · target_mask[t] / max(row_sums[t], 1e-10)``.

        Computed in ``weights``' dtype. Raises ``RuntimeError`` if the edges hold a cycle.
        """
        dtype = weights.dtype
        scale = 1.0 / row_sums.to(dtype).clamp(min=1e-10)
        if target_mask is not None:
            scale = scale * target_mask.to(dtype)
        smask = None if source_mask is None else source_mask.to(dtype)
        order = self._layer_order()
        if order is not None:
            return self._influence_by_layers(order, weights, scale, smask)
        return self._influence_by_series(weights, scale, smask, max_iter)

    # ---- influence ----------------------------------------------------------------------------
    def _step(self, b: EdgeBlock, prod: torch.Tensor, smask: torch.Tensor | None) -> torch.Tensor:
        """``prod[targets] @ |values|`` (· ``smask[sources]``): ``[w]`` in ``prod``'s dtype."""
        out = prod @ b.values.abs().to(prod.dtype)
        return out * smask[b.sources] if smask is not None else out

    def _influence_by_layers(
        self,
        order: list[EdgeBlock],
        weights: torch.Tensor,
        scale: torch.Tensor,
        smask: torch.Tensor | None,
    ) -> torch.Tensor:
        # total = w + total Â, solved target by target from the last read layer down.
        total = weights.clone()
        for b in order:
            prod = total[b.targets] * scale[b.targets]
            if prod.any():
                total.index_add_(0, b.sources, self._step(b, prod, smask))
        return total - weights

    def _influence_by_series(
        self,
        weights: torch.Tensor,
        scale: torch.Tensor,
        smask: torch.Tensor | None,
        max_iter: int,
    ) -> torch.Tensor:
        prod, influence = weights, torch.zeros_like(weights)
        for _ in range(max_iter + 1):
            nxt = torch.zeros_like(weights)
            for b in self.blocks:
                p = prod[b.targets] * scale[b.targets]
                if p.any():
                    nxt.index_add_(0, b.sources, self._step(b, p, smask))
            if not nxt.any():
                return influence
            influence += nxt
            prod = nxt
        raise RuntimeError(
            f"influence did not converge after {max_iter} steps: the edges contain a cycle "
            "(an attribution graph must be acyclic); check the edges"
        )

    def _layer_order(self) -> list[EdgeBlock] | None:
        """Blocks by decreasing layer, if every block reads only from targets of lower layers."""
        node_layer = torch.full((self.n_nodes,), -1, dtype=torch.long, device=self.device)
        for b in self.blocks:
            node_layer[b.targets] = b.layer
        for b in self.blocks:
            if b.sources.numel() and int(node_layer[b.sources].max()) >= b.layer:
                return None
        return sorted(self.blocks, key=lambda b: -b.layer)

    # ---- lookups ------------------------------------------------------------------------------
    def _row_lookup(self, row_nodes: torch.Tensor) -> torch.Tensor:
        row_of = torch.full((self.n_nodes,), -1, dtype=torch.long, device=self.device)
        row_of[row_nodes.to(self.device)] = torch.arange(len(row_nodes), device=self.device)
        return row_of

    def _target_lookup(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(block index, row within the block) of every node (-1 where none)."""
        block_of = torch.full((self.n_nodes,), -1, dtype=torch.long, device=self.device)
        row_in = torch.full((self.n_nodes,), -1, dtype=torch.long, device=self.device)
        for i, b in enumerate(self.blocks):
            block_of[b.targets] = i
            row_in[b.targets] = torch.arange(len(b.targets), device=self.device)
        return block_of, row_in


def position_chunk(positions: torch.Tensor, n_pos: int) -> torch.Tensor:
    """The position chunk ``[0, POSITION_CHUNKS)`` of each position of a prompt of ``n_pos``."""
    return positions * POSITION_CHUNKS // max(n_pos, 1)


def chunk_end(chunk: int, n_pos: int) -> int:
    """The last position of position chunk ``chunk`` (as ``position_chunk`` assigns them)."""
    # position_chunk(p) <= chunk  <=>  p * C < (chunk + 1) * n_pos
    return min(-(-(chunk + 1) * n_pos // POSITION_CHUNKS) - 1, n_pos - 1)
