"""Moving modules out of the way while the backward sweep runs.

After the forward pass and the source vectors are built, the sweep never touches the MLPs or
the transcoders again (decoder rows are already packed, encoder rows gathered, skip matrices
copied). ``offloaded(modules, "cpu")`` moves them to the CPU (useful when the model lives on
an accelerator); ``"disk"`` writes their tensors to a temporary safetensors file and frees
them (parameters become meta tensors). Both restore the modules when the block ends, also on
error or interruption.

``SpillFile`` is the edge side of ``offload="disk"``: each block of edge rows is written to an
unlinked temporary file as soon as it is computed and read back as a copy-on-write memory map,
so the rows live in the page cache (which the kernel can evict and re-read) rather than in the
process's own memory; influence, pruning and export then stream over the mapped blocks.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

OFFLOAD_MODES = (None, "cpu", "disk")


@contextmanager
def offloaded(modules: Sequence[nn.Module], mode: str | None) -> Iterator[None]:
    """Offloads ``modules`` for the duration of the block (see the module docstring)."""
    if mode not in OFFLOAD_MODES:
        raise ValueError(f"offload must be None, 'cpu' or 'disk'; got {mode!r}.")
    if mode is None or not modules:
        yield
        return
    if mode == "cpu":
        devices = [_device(m) for m in modules]
        for m in modules:
            m.to("cpu")
        try:
            yield
        finally:
            for m, d in zip(modules, devices, strict=True):
                m.to(d)
        return
    fd, path = tempfile.mkstemp(prefix="circuitlab-offload-", suffix=".safetensors")
    os.close(fd)
    devices = [_device(m) for m in modules]
    try:
        state = {
            f"{i}.{k}": v.detach().cpu().contiguous()
            for i, m in enumerate(modules)
            for k, v in m.state_dict(keep_vars=True).items()
        }
        save_file(state, path)
        del state
        for m in modules:
            m.to("meta")
        try:
            yield
        finally:
            saved = load_file(path)
            for i, (m, d) in enumerate(zip(modules, devices, strict=True)):
                prefix = f"{i}."
                own = {k[len(prefix) :]: v.to(d) for k, v in saved.items() if k.startswith(prefix)}
                m.load_state_dict(own, assign=True)
                for p in m.parameters():
                    p.requires_grad_(False)
    finally:
        os.unlink(path)


def _device(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    return torch.device("cpu")


class SpillFile:
    """Tensors parked in one unlinked temporary file, each read back as a memory map."""

    def __init__(self, directory: str | None = None):
        fd, path = tempfile.mkstemp(prefix="circuitlab-edges-", suffix=".bin", dir=directory)
        self._file = os.fdopen(fd, "wb+")
        os.unlink(path)  # the maps keep the data alive; nothing is left behind on exit
        weakref.finalize(self, self._file.close)  # each map holds its own descriptor
        self.nbytes = 0

    def put(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` (CPU) written to the file; returns a copy-on-write map of it (same dtype and
        shape; changes stay in memory)."""
        if t.numel() == 0:
            return t
        t = t.detach().cpu().contiguous()
        half = t.dtype == torch.bfloat16  # numpy has no bfloat16: go through int16
        arr = (t.view(torch.int16) if half else t).numpy()
        offset = self._file.seek(0, os.SEEK_END)
        self._file.write(arr.data)
        self._file.flush()
        self.nbytes += arr.nbytes
        mapped = torch.from_numpy(
            np.memmap(self._file, dtype=arr.dtype, mode="c", offset=offset, shape=arr.shape)
        )
        return mapped.view(torch.bfloat16) if half else mapped


def _libc_trim() -> Callable[[int], object] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _libc_trim()


def release_free_memory() -> None:
    """Hands memory the allocator has freed back to the system (glibc's ``malloc_trim``; a
    no-op elsewhere). Edge blocks come and go in sizes that glibc otherwise keeps in its heap,
    so without this the resident size keeps the high-water mark of the sweep's temporaries."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
