"""What every transcoder family offers the engine.

A ``Transcoders`` object covers all layers of a model. It reads the MLP input of each layer
(``input_hook``) and writes a reconstruction of the MLP output (``output_hook``); both names
are TransformerLens hook names relative to a block (see ``models.hooks``).

Per-layer transcoders (``TranscoderSet``) decode each feature into its own layer only; cross-layer
transcoders (``CrossLayerTranscoder``) decode a feature at layer ``l`` into every layer ``>= l``.
Both expose decoder rows as ``[n, n_out, d_model]`` with output layers ``l .. l + n_out - 1``,
so the engine treats them alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class SparseActivations:
    """Active features of one prompt.

    ``indices[n, 3]`` holds (layer, pos, feature) in lexicographic order and ``values[n]`` the
    activations (after the activation function).
    """

    indices: torch.Tensor
    values: torch.Tensor

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def to_dense(self, n_layers: int, n_pos: int, d_transcoder: int) -> torch.Tensor:
        """Dense activations ``[n_layers, n_pos, d_transcoder]``."""
        dense = torch.zeros(
            n_layers, n_pos, d_transcoder, dtype=self.values.dtype, device=self.values.device
        )
        i = self.indices.to(self.values.device)
        dense[i[:, 0], i[:, 1], i[:, 2]] = self.values
        return dense


class Transcoders(nn.Module, ABC):
    """Transcoders for every layer of one model (abstract)."""

    n_layers: int
    d_model: int
    d_transcoder: int
    input_hook: str
    output_hook: str
    name: str | None
    is_cross_layer: bool

    # ---- per-layer primitives every family implements -------------------------------------
    @abstractmethod
    def pre_activations(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations ``x @ W_enc[layer].T + b_enc[layer]``: ``[..., d_model] -> [..., d_t]``."""

    @abstractmethod
    def activate(self, layer: int, pre: torch.Tensor) -> torch.Tensor:
        """The activation function of ``layer`` on pre-activations ``[..., d_t]``."""

    @abstractmethod
    def encoder_rows(self, layer: int, features: torch.Tensor) -> torch.Tensor:
        """Encoder rows ``[n, d_model]`` of ``features`` (LongTensor ``[n]``) at ``layer``."""

    @abstractmethod
    def encoder_bias(self, layer: int) -> torch.Tensor:
        """``b_enc[layer]``: ``[d_t]``."""

    @abstractmethod
    def decoder_rows(self, layer: int, features: torch.Tensor) -> torch.Tensor:
        """Decoder rows ``[n, n_out, d_model]`` of features at ``layer``.

        Output ``j`` writes to layer ``layer + j``; ``n_out`` is 1 for per-layer transcoders and
        ``n_layers - layer`` for cross-layer ones.
        """

    @abstractmethod
    def decoder_bias(self, layer: int) -> torch.Tensor:
        """``b_dec`` added to the reconstruction at output layer ``layer``: ``[d_model]``."""

    @abstractmethod
    def skip(self, layer: int, x: torch.Tensor) -> torch.Tensor | None:
        """The linear skip term ``[..., d_model]`` of output layer ``layer``, or None."""

    @property
    @abstractmethod
    def has_skip(self) -> bool: ...

    def save(self, directory: str, *, overwrite: bool = False) -> None:
        """Writes circuit-tracer's on-disk layout (``config.yaml`` + safetensors).

        Refuses a non-empty ``directory`` unless ``overwrite``; an interrupted save leaves the
        old contents in place. The writer is the one registered for this class (see
        ``register_writer``; ``circuitlab.transcoders`` registers circuit-tracer's).
        """
        for kind in type(self).__mro__:
            if kind in _writers:
                return _writers[kind](self, directory, overwrite=overwrite)
        raise NotImplementedError(
            f"No on-disk writer for {type(self).__name__}: register one with "
            "circuitlab.transcoders.base.register_writer(cls, write)."
        )

    # ---- shared logic ---------------------------------------------------------------------
    def encode(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """Activations ``[..., d_t]`` of ``layer`` for inputs ``[..., d_model]``."""
        return self.activate(layer, self.pre_activations(layer, x))

    def encode_sparse(
        self, inputs: torch.Tensor, zero_positions: slice = slice(0, 1)
    ) -> SparseActivations:
        """Active features for MLP inputs ``[n_layers, n_pos, d_model]``.

        Features at ``zero_positions`` (the BOS) are dropped, as in the math contract.
        """
        idx, vals = [], []
        for layer in range(self.n_layers):
            acts = self.encode(layer, inputs[layer])
            acts[zero_positions] = 0
            pos, feat = acts.nonzero(as_tuple=True)
            idx.append(torch.stack([torch.full_like(pos, layer), pos, feat], dim=1))
            vals.append(acts[pos, feat])
        return SparseActivations(torch.cat(idx), torch.cat(vals))

    def decode_sparse(self, acts: SparseActivations, inputs: torch.Tensor) -> torch.Tensor:
        """Reconstructions ``[n_layers, n_pos, d_model]``: decoded features + ``b_dec`` + skip."""
        n_layers, n_pos, d = inputs.shape
        out = torch.zeros(n_layers, n_pos, d, dtype=inputs.dtype, device=inputs.device)
        for layer in range(n_layers):
            sel = acts.indices[:, 0] == layer
            if sel.any():
                pos, feat = acts.indices[sel, 1], acts.indices[sel, 2]
                dec = self.decoder_rows(layer, feat).to(inputs.dtype)  # [n, n_out, d]
                contrib = dec * acts.values[sel].to(inputs.dtype)[:, None, None]
                for j in range(dec.shape[1]):
                    out[layer + j].index_add_(0, pos.to(out.device), contrib[:, j])
            out[layer] += self.decoder_bias(layer).to(inputs.dtype)
            sk = self.skip(layer, inputs[layer])
            if sk is not None:
                out[layer] += sk
        return out

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Dense round trip: MLP inputs ``[n_layers, n_pos, d]`` -> reconstructions."""
        return self.decode_sparse(self.encode_sparse(inputs, slice(0, 0)), inputs)


Writer = Callable[..., None]
"""``write(transcoders, directory, *, overwrite)``: writes one family to disk."""

_writers: dict[type, Writer] = {}


def register_writer(kind: type[Transcoders], write: Writer) -> None:
    """Make ``kind.save`` (and its subclasses') call ``write(self, directory, overwrite=...)``.

    The on-disk formats (``transcoders/formats/``) build these classes when reading, so they sit
    above them; the classes reach their writer through this table instead of importing it.
    """
    _writers[kind] = write
