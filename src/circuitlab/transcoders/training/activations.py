"""Streaming a model's transcoder training data: MLP inputs and outputs, shuffled in a buffer.

``mlp_io`` runs one batch of windows and returns, per layer, the values at the transcoders'
input and output points (TransformerLens hook names, as in ``models.session``), stopping the
forward after the last layer's output. ``ActivationBuffer`` fills itself with
``buffer_tokens`` tokens (BOS positions dropped), shuffles them with a generator seeded by
``(seed, fill index)`` and hands out minibatches; when drained it refills from the corpus.
Only one buffer of activations is ever in memory:
``2 * n_layers * buffer_tokens * d_model * 4`` bytes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ...features.corpus import token_windows
from ...models.adapters import Adapter, get_module
from ...models.session import READ_POINTS, WRITE_POINTS, check_hook_names


class _Done(Exception):
    pass


@torch.no_grad()
def mlp_io(
    model: nn.Module, adapter: Adapter, ids: torch.Tensor, input_hook: str, output_hook: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and outputs ``[n_layers, batch, pos, d]`` at the transcoder hook points."""
    check_hook_names(input_hook, output_hook)
    after_norm = READ_POINTS[input_hook] == "mlp_in"
    blocks = get_module(model, adapter.blocks)
    n_layers = len(blocks)  # type: ignore[arg-type]
    reads: list[torch.Tensor] = []
    writes: list[torch.Tensor] = []

    def read(module: nn.Module, args: tuple[Any, ...], output: Any = None) -> None:
        reads.append((output if after_norm else args[0]).detach())

    def write(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        writes.append(output.detach())
        if len(writes) == n_layers:
            raise _Done

    handles = []
    for block in blocks:  # type: ignore[union-attr]
        ln2 = get_module(block, adapter.ln2)
        if after_norm:
            handles.append(ln2.register_forward_hook(read))
        else:
            handles.append(ln2.register_forward_pre_hook(read))
        post = WRITE_POINTS[output_hook] == "block_mlp_out" and adapter.post_mlp_norm is not None
        target = get_module(block, adapter.post_mlp_norm if post else adapter.mlp)  # type: ignore[arg-type]
        handles.append(target.register_forward_hook(write))
    device = next(model.parameters()).device
    try:
        model(input_ids=ids.to(device), use_cache=False)
    except _Done:
        pass
    finally:
        for h in handles:
            h.remove()
    return torch.stack(reads), torch.stack(writes)


class ActivationBuffer:
    """Shuffled minibatches of (input, output) pairs ``[n_layers, batch, d]`` from a corpus."""

    def __init__(
        self,
        model: nn.Module,
        adapter: Adapter,
        tokenizer: PreTrainedTokenizerBase,
        texts: Iterable[str],
        *,
        input_hook: str,
        output_hook: str,
        context: int = 64,
        model_batch: int = 8,
        buffer_tokens: int = 8192,
        seed: int = 0,
        windows_done: int = 0,
        fills_done: int = 0,
    ):
        self.model, self.adapter = model, adapter
        self.input_hook, self.output_hook = input_hook, output_hook
        self.model_batch, self.buffer_tokens, self.seed = model_batch, buffer_tokens, seed
        self.windows_done, self.fills_done = windows_done, fills_done
        windows = token_windows(texts, tokenizer, context)
        self._windows = itertools.islice(windows, windows_done, None)  # resume: skip the done

    def fill(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The next shuffled buffer ``(x, y)``, each ``[n_layers, n, d]``; None at corpus end."""
        xs, ys, have = [], [], 0
        while have < self.buffer_tokens:
            chunk = list(itertools.islice(self._windows, self.model_batch))
            if not chunk:
                break
            batch = torch.stack(chunk)
            x, y = mlp_io(self.model, self.adapter, batch, self.input_hook, self.output_hook)
            xs.append(x[:, :, 1:].flatten(1, 2).float())  # drop BOS
            ys.append(y[:, :, 1:].flatten(1, 2).float())
            have += xs[-1].shape[1]
            self.windows_done += batch.shape[0]
        if not xs:
            return None
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.fills_done)
        perm = torch.randperm(have, generator=g)
        self.fills_done += 1
        # one buffer-sized copy at a time: concatenate, free the pieces, then permute
        x = torch.cat(xs, 1)
        del xs
        x = x[:, perm]
        y = torch.cat(ys, 1)
        del ys
        return x, y[:, perm]

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Minibatches from one fill (a remainder smaller than ``batch_size`` is dropped)."""
        data = self.fill()
        if data is None:
            return
        x, y = data
        for start in range(0, x.shape[1] - batch_size + 1, batch_size):
            yield x[:, start : start + batch_size], y[:, start : start + batch_size]
