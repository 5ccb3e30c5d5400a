"""Data-parallel training: several processes (``torchrun``) train one set of transcoders.

``world()`` joins the process group that ``torchrun`` describes in the environment
(``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``/``MASTER_PORT``), over gloo (CPU tensors); one
process alone (no ``WORLD_SIZE``, or 1) gets ``World()`` and every collective below is a
no-op, so the single-process trainer runs the same code. A group created here is destroyed
when the ``with`` block ends; one the caller created is left alone.

The scheme (``trainer.py``): every rank holds the same parameters and Adam state; the model is
wrapped in ``DistributedDataParallel``, which averages the gradients. Each optimiser step's
*global* batch of ``batch_size`` tokens is the one a single process would take, and rank
``r`` computes on its ``r``-th slice of ``batch_size / world_size`` tokens, read from the
activation cache's memory maps (``CachedBuffer``: each rank reads only its own rows). Every
term of the loss is made to decompose over the slices, so the averaged gradient is the single
process's gradient:

* the MSE and sparsity terms are means over tokens, and the slices are equal;
* AuxK's normaliser ``||e − ē||²`` is a global statistic: ``all_sum`` of the slices' sums;
* BatchTopK keeps the ``n·k`` largest pre-activations of the *global* batch:
  ``kth_largest`` finds that value across ranks, and each rank keeps its entries at or above;
* the metrics (squared errors, output sums, L0, which features fired) are summed across ranks
  before they are recorded, so each rank's record (and AuxK's dead-feature mask) is the same.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

# Rank 0 alone evaluates held-out text and writes checkpoints while the others wait in the next
# collective: generous, so that a long evaluation is not mistaken for a dead peer.
TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class World:
    """This process's ``rank`` among ``size`` training processes."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Whether this process writes files and logs (rank 0)."""
        return self.rank == 0

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over ranks, in place (returned for chaining)."""
        if self.size > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def all_max(self, t: torch.Tensor) -> torch.Tensor:
        if self.size > 1:
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t

    def all_min(self, t: torch.Tensor) -> torch.Tensor:
        if self.size > 1:
            dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return t

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` in ``DistributedDataParallel`` (gradients averaged over ranks); itself
        for one process. Buffers are not broadcast: the trainer keeps them equal itself."""
        if self.size == 1:
            return module
        return DistributedDataParallel(module, broadcast_buffers=False)

    def kth_largest(self, values: torch.Tensor, count: int) -> torch.Tensor:
        """The ``count``-th largest entry (a 0-d tensor) of the union over ranks of each
        rank's ``values [m]`` (``count <= Σ m``)."""
        local = values.topk(min(count, values.numel())).values
        if self.size == 1:
            return local[-1]
        padded = local.new_full((count,), float("-inf"))
        padded[: local.numel()] = local
        gathered = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(gathered, padded)
        return torch.cat(gathered).topk(count).values[-1]


@contextmanager
def world() -> Iterator[World]:
    """The training processes this one belongs to (module docstring)."""
    if dist.is_available() and dist.is_initialized():
        yield World(dist.get_rank(), dist.get_world_size())
        return
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        yield World()
        return
    if not dist.is_available():
        raise RuntimeError(
            f"WORLD_SIZE={size} asks for distributed training, but this torch build has no "
            "torch.distributed: run one process, or install a torch with distributed support."
        )
    dist.init_process_group("gloo", timeout=TIMEOUT)
    try:
        yield World(dist.get_rank(), dist.get_world_size())
    finally:
        dist.destroy_process_group()
