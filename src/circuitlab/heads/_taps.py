"""Hooks the heads lab adds next to ``models.session.hooked``.

``session.hooked`` already records attention patterns, norm scales and the MLP output point
(and can replace the latter). The heads lab also needs three points it does not cover:

* ``z``: the input of each attention output projection, ``[b, pos, n_heads * d_head]`` (the
  heads' outputs side by side; with GQA still one slice per query head);
* ``resid_pre``: each block's input, the residual stream ``[b, pos, d]``;
* ``final_in`` / ``final_out``: the final norm's input and output ``[b, pos, d]``.

Each tap is a callback ``fn(layer, x) -> x | None``; returning a tensor replaces the value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..models.adapters import Adapter, get_module

Tap = Callable[[int, torch.Tensor], torch.Tensor | None]


def _pre_hook(fn: Tap, layer: int) -> Callable[..., Any]:
    """A forward pre-hook (with kwargs) reading/replacing the first input, positional or not."""

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]):
        if args:
            new = fn(layer, args[0])
            return None if new is None else ((new, *args[1:]), kwargs)
        key = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
        new = fn(layer, kwargs[key])
        return None if new is None else (args, {**kwargs, key: new})

    return hook


def _out_hook(fn: Tap, layer: int) -> Callable[..., Any]:
    def hook(module: nn.Module, args: tuple[Any, ...], output: Any):
        x = output[0] if isinstance(output, tuple) else output
        new = fn(layer, x)
        if new is None:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new

    return hook


@contextmanager
def taps(
    model: nn.Module,
    adapter: Adapter,
    *,
    z: Tap | None = None,
    resid_pre: Tap | None = None,
    final_in: Tap | None = None,
    final_out: Tap | None = None,
) -> Iterator[None]:
    """Installs the given taps on ``model`` for the duration of the block."""
    handles = []
    try:
        blocks = get_module(model, adapter.blocks)
        for layer, block in enumerate(blocks):  # type: ignore[arg-type]
            if z is not None:
                proj = get_module(get_module(block, adapter.attn), adapter.out_proj)
                handles.append(
                    proj.register_forward_pre_hook(_pre_hook(z, layer), with_kwargs=True)
                )
            if resid_pre is not None:
                handles.append(
                    block.register_forward_pre_hook(_pre_hook(resid_pre, layer), with_kwargs=True)
                )
        final = get_module(model, adapter.final_norm)
        if final_in is not None:
            handles.append(
                final.register_forward_pre_hook(_pre_hook(final_in, -1), with_kwargs=True)
            )
        if final_out is not None:
            handles.append(final.register_forward_hook(_out_hook(final_out, -1)))
        yield
    finally:
        for h in handles:
            h.remove()
