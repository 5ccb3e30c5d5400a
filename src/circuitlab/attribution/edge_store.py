"""Edge rows while they are being computed: already in the graph's block layout.

The engine's node space is ``[active features | errors, layer-major | tokens | logits]``. A
target read at layer ``l`` and position ``q`` can only receive from features and errors of
layers ``< l`` at positions ``<= q`` and from tokens at positions ``<= q`` (see
``graph.edges``). Features are ordered by (layer, pos, idx), so for each source layer the
allowed features are a prefix of that layer's features. ``EdgeRows.add`` groups each batch's
rows by (read layer, position chunk) and keeps only those sources, in the edge dtype; the
running ``row_sums`` (``Σ|A|`` per target) make influence ranking one pass over the blocks.
``graph_blocks`` then merges the blocks of each group and renumbers the nodes for the graph.
"""

from __future__ import annotations

import torch

from ..graph.edges import POSITION_CHUNKS, EdgeBlock, EdgeBlocks, chunk_end, position_chunk
from .offload import SpillFile, release_free_memory


class EdgeRows:
    """Rows of direct effects into features and logits, stored as ``EdgeBlocks``.

    ``features[n_active, 2]``: (layer, pos) of every active feature, in lexicographic order;
    errors and tokens follow them, then ``n_logits`` logits (rows only). With ``spill`` every
    block's values go to that file as they are computed (``offload="disk"``).
    """

    def __init__(
        self,
        features: torch.Tensor,
        n_layers: int,
        n_pos: int,
        n_logits: int,
        dtype: torch.dtype,
        spill: SpillFile | None = None,
    ):
        self.spill = spill
        self.features = features.cpu()
        self.n_active = len(features)
        self.n_layers, self.n_pos = n_layers, n_pos
        self.n_cols = self.n_active + (n_layers + 1) * n_pos  # sources
        self.store = EdgeBlocks([], self.n_cols + n_logits, dtype)
        self.row_sums = torch.zeros(self.store.n_nodes, dtype=torch.float32)
        self._keys: list[tuple[int, int]] = []
        self._sources: dict[tuple[int, int], torch.Tensor] = {}
        counts = torch.bincount(self.features[:, 0], minlength=n_layers)
        self._layer_start = [0, *torch.cumsum(counts, 0).tolist()]

    @property
    def dtype(self) -> torch.dtype:
        return self.store.dtype

    def sources(self, layer: int, chunk: int) -> torch.Tensor:
        """Node indices a target read at ``layer`` in position chunk ``chunk`` can receive from."""
        key = (layer, chunk)
        if key not in self._sources:
            q, n_pos, parts = chunk_end(chunk, self.n_pos), self.n_pos, []
            for a in range(min(layer, self.n_layers)):
                start, stop = self._layer_start[a], self._layer_start[a + 1]
                pos = self.features[start:stop, 1]
                parts.append(torch.arange(start, start + int((pos <= q).sum())))
            errors = self.n_active + torch.arange(min(layer, self.n_layers))[:, None] * n_pos
            parts.append((errors + torch.arange(q + 1)).flatten())
            parts.append(self.n_active + self.n_layers * n_pos + torch.arange(q + 1))
            self._sources[key] = torch.cat(parts)
        return self._sources[key]

    def add(
        self,
        values: torch.Tensor,
        layers: torch.Tensor,
        positions: torch.Tensor,
        nodes: torch.Tensor,
    ) -> None:
        """Adds rows ``values[k, n_cols]`` of targets read at ``(layers[k], positions[k])``
        (layer ``n_layers`` for logits), node ids ``nodes[k]``."""
        values, layers, nodes = values.cpu(), layers.cpu(), nodes.cpu()
        chunks = position_chunk(positions.cpu(), self.n_pos)
        keys = layers * POSITION_CHUNKS + chunks
        for key in torch.unique(keys).tolist():
            layer, chunk = divmod(int(key), POSITION_CHUNKS)
            sel = (keys == key).nonzero(as_tuple=True)[0]
            sources = self.sources(layer, chunk)
            block = values[sel[:, None], sources[None, :]].to(self.dtype)
            self.row_sums[nodes[sel]] = block.abs().float().sum(1)
            if self.spill is not None:
                block = self.spill.put(block)
            self.store.blocks.append(EdgeBlock(nodes[sel], sources, block, layer))
            self._keys.append((layer, chunk))
        if self.spill is not None:
            # Spilled blocks leave the sweep's temporaries in glibc's heap; hand them back so
            # the process keeps ~40 MB instead of ~285 MB (96-token tiny Llama). In memory the
            # next batch would only fault the same pages back in (measured ~25% more CPU).
            release_free_memory()

    def influence(self, weights: torch.Tensor) -> torch.Tensor:
        """Influence ``[n_cols + n_logits]`` of every node on the weighted targets, from the rows
        so far (as ``graph.influence.compute_influence`` on row-normalised |A|), in float32."""
        return self.store.influence(weights.float(), self.row_sums)

    def graph_blocks(self, selected: torch.Tensor, n_logits: int) -> EdgeBlocks:
        """The blocks in the graph's node space ``[selected features | errors | tokens |
        logits]``, ordered by (layer, position chunk); empties this store as it goes, so the
        rows are never held twice (with every feature selected they are not even copied)."""
        n_sel = len(selected)
        new_id = torch.full((self.n_active,), -1, dtype=torch.long)
        new_id[selected] = torch.arange(n_sel)

        def renumber(nodes: torch.Tensor) -> torch.Tensor:
            feature = nodes < self.n_active
            shifted = nodes - self.n_active + n_sel
            return torch.where(feature, new_id[nodes.clamp(max=max(self.n_active - 1, 0))], shifted)

        order = sorted(range(len(self._keys)), key=lambda i: self._keys[i])  # stable
        blocks, keys = self.store.blocks, self._keys
        self.store.blocks, self._keys = [], []
        sources: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor | None]] = {}
        out = []
        for i in order:
            b, key = blocks[i], keys[i]
            if key not in sources:
                renumbered = renumber(b.sources)
                keep = renumbered >= 0
                sources[key] = (renumbered[keep], None if bool(keep.all()) else keep)
            cols, keep = sources[key]
            values = b.values if keep is None else b.values[:, keep]
            if keep is not None and self.spill is not None:
                values = self.spill.put(values)
            out.append(EdgeBlock(renumber(b.targets), cols, values, key[0]))
            blocks[i] = None  # type: ignore[call-overload]  # freed as we go
        n_nodes = n_sel + (self.n_layers + 1) * self.n_pos + n_logits
        return EdgeBlocks(out, n_nodes, self.dtype)
