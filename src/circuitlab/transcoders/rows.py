"""Row sources: a weight matrix whose rows are read on demand.

Transcoder decoders (and optionally encoders) are large and only the rows of active
features matter for a prompt. A ``Rows`` object hands out ``rows(idx)`` either from a tensor
in memory (``TensorRows``) or straight from a safetensors file (``SafetensorsRows``), which
reads only the requested slices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from safetensors import safe_open


class Rows(Protocol):
    """A ``[n_rows, *row_shape]`` matrix read by rows."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Rows ``idx`` (LongTensor ``[n]``) as a tensor ``[n, *row_shape]``."""
        ...

    def full(self) -> torch.Tensor:
        """The whole matrix (reads everything for a lazy source)."""
        ...


class TensorRows:
    """Rows of an in-memory tensor."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        return self.tensor[idx.to(self.tensor.device)]

    def full(self) -> torch.Tensor:
        return self.tensor


class ParameterRows:
    """Rows of a parameter registered on a module, looked up on every access.

    Holding the module and name (not the tensor) keeps the view valid when the parameter is
    replaced, e.g. by ``load_state_dict(assign=True)`` after an offload.
    """

    def __init__(self, module: torch.nn.Module, name: str):
        self.module = module
        self.name = name

    @property
    def tensor(self) -> torch.Tensor:
        return getattr(self.module, self.name)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        t = self.tensor
        return t[idx.to(t.device)]

    def full(self) -> torch.Tensor:
        return self.tensor


class SafetensorsRows:
    """Rows of one tensor in a safetensors file, read lazily with slices.

    Reading sorted, de-duplicated indices as contiguous runs keeps I/O small; the result is
    returned in the caller's order and cast to ``dtype`` on ``device``.
    """

    def __init__(
        self,
        path: str | Path,
        key: str,
        *,
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
        transpose: bool = False,
    ):
        self.path = str(path)
        self.key = key
        self.dtype = dtype
        self.device = torch.device(device)
        self.transpose = transpose
        with safe_open(self.path, framework="pt") as f:
            shape = tuple(f.get_slice(key).get_shape())
        if transpose:
            if len(shape) != 2:
                raise ValueError(f"{key} in {path} must be 2-D to be read transposed.")
            shape = (shape[1], shape[0])
        self._shape = shape

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        idx = idx.to("cpu", torch.long)
        if idx.numel() == 0:
            return torch.zeros((0, *self._shape[1:]), dtype=self.dtype, device=self.device)
        uniq, inverse = torch.unique(idx, return_inverse=True)
        parts = []
        with safe_open(self.path, framework="pt") as f:
            sl = f.get_slice(self.key)
            for start, stop in _runs(uniq.tolist()):
                parts.append(sl[:, start:stop].T if self.transpose else sl[start:stop])
        block = torch.cat(parts).to(self.device, self.dtype)
        return block[inverse.to(self.device)]

    def full(self) -> torch.Tensor:
        with safe_open(self.path, framework="pt") as f:
            t = f.get_tensor(self.key)
        t = t.T if self.transpose else t
        return t.to(self.device, self.dtype).contiguous()


def _runs(sorted_idx: list[int]) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` runs of a sorted list of distinct ints."""
    runs: list[tuple[int, int]] = []
    for i in sorted_idx:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs
