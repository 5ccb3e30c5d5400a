"""The axes the benchmarks' plots share: prompt length against a quantity, both logarithmic."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def length_axes(axes: Sequence[Any], lengths: Iterable[int], ylabels: Sequence[str]) -> None:
    """Log-log axes with the measured prompt lengths as the x ticks, one y label per axis."""
    ticks = sorted(set(lengths))
    for ax, ylabel in zip(axes, ylabels, strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(ticks, [f"{n:,}" for n in ticks])
        ax.minorticks_off()
        ax.set_xlabel("prompt length (tokens)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
