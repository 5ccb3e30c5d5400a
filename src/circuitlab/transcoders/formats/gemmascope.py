"""GemmaScope ``params.npz`` transcoder files.

One file per layer with ``W_enc [d_model, d_t]`` (transposed relative to circuitlab),
``W_dec [d_t, d_model]``, ``b_enc [d_t]``, ``b_dec [d_model]`` and ``threshold [d_t]`` (JumpReLU).
An ``.npz`` is a zip archive; members stored uncompressed (as GemmaScope's are) are memory-mapped
in place, so taking rows reads only those rows' pages. Compressed members are read whole.
"""

from __future__ import annotations

import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..rows import Rows, TensorRows

_LOCAL_HEADER_SIZE = 30  # fixed part of a zip local file header


class MemmapRows:
    """Rows of a (memory-mapped) numpy matrix, optionally read transposed.

    ``transpose=True`` serves rows of ``array.T``: GemmaScope's ``W_enc [d_model, d_t]`` becomes
    circuitlab's ``[d_t, d_model]`` without copying the file.
    """

    def __init__(
        self,
        array: np.ndarray,
        *,
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
        transpose: bool = False,
    ):
        if transpose and array.ndim != 2:
            raise ValueError(f"Only a 2-D array can be read transposed; got shape {array.shape}.")
        self.array = array
        self.dtype = dtype
        self.device = torch.device(device)
        self.transpose = transpose

    @property
    def shape(self) -> tuple[int, ...]:
        shape = tuple(int(s) for s in self.array.shape)
        return (shape[1], shape[0]) if self.transpose else shape

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        i = idx.to("cpu", torch.long).numpy()
        picked = self.array[:, i].T if self.transpose else self.array[i]
        return _to_torch(picked, self.dtype, self.device)

    def full(self) -> torch.Tensor:
        return _to_torch(self.array.T if self.transpose else self.array, self.dtype, self.device)


@dataclass(frozen=True)
class GemmaScopeLayer:
    """One layer in circuitlab's orientation (``W_enc``/``W_dec`` ``[d_t, d_model]``)."""

    W_enc: Rows
    b_enc: torch.Tensor
    W_dec: Rows
    b_dec: torch.Tensor
    threshold: torch.Tensor | None


def read_gemmascope_npz(
    path: str | Path,
    *,
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    lazy_encoder: bool = False,
    lazy_decoder: bool = True,
) -> GemmaScopeLayer:
    """Reads one GemmaScope ``params.npz``.

    Lazy matrices stay memory-mapped ``MemmapRows``; eager ones are copied into tensors.
    """
    arrays = open_npz(path)
    missing = [k for k in ("W_enc", "W_dec", "b_enc", "b_dec") if k not in arrays]
    if missing:
        raise ValueError(
            f"{path} is not a GemmaScope params.npz: it lacks {', '.join(missing)} "
            f"(found {', '.join(sorted(arrays)) or 'nothing'})."
        )

    def matrix(key: str, lazy: bool, transpose: bool) -> Rows:
        rows = MemmapRows(arrays[key], dtype=dtype, device=device, transpose=transpose)
        return rows if lazy else TensorRows(rows.full())

    def vector(key: str) -> torch.Tensor:
        return _to_torch(arrays[key], dtype, device)

    return GemmaScopeLayer(
        W_enc=matrix("W_enc", lazy_encoder, transpose=True),
        b_enc=vector("b_enc"),
        W_dec=matrix("W_dec", lazy_decoder, transpose=False),
        b_dec=vector("b_dec"),
        threshold=vector("threshold") if "threshold" in arrays else None,
    )


def open_npz(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz``: memory-mapped where stored uncompressed, else read whole."""
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            key = info.filename.removesuffix(".npy")
            mapped = (
                _memmap_member(path, info) if info.compress_type == zipfile.ZIP_STORED else None
            )
            if mapped is None:
                with zf.open(info) as fh:
                    mapped = np.lib.format.read_array(fh, allow_pickle=False)
            out[key] = mapped
    return out


def _memmap_member(path: str | Path, info: zipfile.ZipInfo) -> np.ndarray | None:
    """Memory-maps one uncompressed ``.npy`` member, or None for scalars and empty arrays."""
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        header = fh.read(_LOCAL_HEADER_SIZE)
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        fh.seek(info.header_offset + _LOCAL_HEADER_SIZE + name_len + extra_len)
        major, _minor = np.lib.format.read_magic(fh)
        if major == 1:
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        offset = fh.tell()
    if dtype.hasobject:
        raise ValueError(
            f"{path}: member {info.filename} holds Python objects; refusing to load it."
        )
    if shape == () or 0 in shape:
        return None
    order = "F" if fortran else "C"
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, order=order, offset=offset)


def _to_torch(array: np.ndarray, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """Copies a numpy array (possibly a read-only memmap view) into a tensor."""
    return torch.from_numpy(np.array(array, copy=True, order="C")).to(device, dtype)
