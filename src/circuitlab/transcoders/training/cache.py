"""Activations cached to disk once, so epochs and hyper-parameter runs do not rerun the model.

``ActivationCache`` keeps, under ``ROOT/<key>/``, the transcoders' training data in corpus
order (BOS positions dropped): shards ``x_{i:05d}.npy`` / ``y_{i:05d}.npy``, each
``[n_layers, tokens, d_model]`` float32, read back as memory maps, and ``meta.json`` (tokens and
windows stored, shard sizes, whether the corpus ran out). The key is the SHA-256 of the
*content* that determines the activations: every tensor of the model's ``state_dict`` (names,
dtypes, shapes, bytes), the tokenizer (class, vocabulary, BOS/EOS ids), every text, the window
length and the two hook names; so the same model and corpus find the same cache whatever the
paths, and a changed model or corpus gets a new one.

``ensure(tokens)`` runs the model only for what is missing: an interrupted build resumes from
the last whole shard (each shard and then ``meta.json`` is written to a temp file and renamed),
and a later run that needs more tokens appends shards. Writers take a file lock.

``CachedBuffer`` serves training buffers from the first ``ring`` cached tokens: fill ``i``
holds tokens ``[i·B, (i+1)·B)`` modulo ``ring`` (``B = buffer_tokens``; past the end it wraps
around: epochs), shuffled with the same seeded generator as the streaming
``ActivationBuffer``. A buffer depends only on its index, so resuming needs only
``fills_done``.

Data-parallel training (``distributed.py``): with ``world_size`` processes, minibatch ``j`` of
a fill is still buffer positions ``[j·b, (j+1)·b)`` (``b = batch_size``, the global batch),
and rank ``r`` trains on its ``r``-th slice of ``b / world_size`` of them. Its ``fill()``
returns only those rows, in that order (``ActivationCache.take``: a gather from the memory
maps, so each rank reads its own part of the activations); a trailing partial minibatch is
left out, as the single process leaves it unused.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ...atomic import atomic_path, write_json_atomic
from ...cache import locked
from ...features.corpus import token_windows
from ...models.adapters import Adapter
from .activations import mlp_io

CACHE_VERSION = 1
META_NAME = "meta.json"


def activation_key(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    context: int,
    input_hook: str,
    output_hook: str,
) -> str:
    """SHA-256 of everything that determines the cached activations (module docstring)."""
    h = hashlib.sha256()
    head = {
        "version": CACHE_VERSION,
        "context": context,
        "input_hook": input_hook,
        "output_hook": output_hook,
        "tokenizer": type(tokenizer).__name__,
        "bos": getattr(tokenizer, "bos_token_id", None),
        "eos": getattr(tokenizer, "eos_token_id", None),
    }
    h.update(json.dumps(head, sort_keys=True).encode())
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    vocab = sorted(tokenizer.get_vocab().items())
    h.update(json.dumps(vocab).encode())
    for text in texts:
        data = text.encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _atomic_npy(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


class ActivationCache:
    """One cache entry, ``root/<key>`` (module docstring)."""

    def __init__(self, root: str | Path, key: str, *, n_layers: int, d_model: int):
        self.dir = Path(root).expanduser() / key
        self.key, self.n_layers, self.d_model = key, n_layers, d_model
        self._maps: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def meta(self) -> dict[str, Any]:
        path = self.dir / META_NAME
        if path.is_file():
            return json.loads(path.read_text())
        return {
            "version": CACHE_VERSION,
            "key": self.key,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "tokens": 0,
            "windows": 0,
            "exhausted": False,
            "shards": [],
        }

    @property
    def tokens(self) -> int:
        return int(self.meta["tokens"])

    def ensure(
        self,
        tokens: int,
        model: torch.nn.Module,
        adapter: Adapter,
        tokenizer: Any,
        texts: Sequence[str],
        *,
        context: int,
        input_hook: str,
        output_hook: str,
        model_batch: int = 8,
        shard_tokens: int = 16384,
        verbose: bool = True,
    ) -> int:
        """Caches at least ``tokens`` tokens (fewer if the corpus has fewer); returns how many
        model forwards it ran (0 when the cache already held them)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        forwards = 0
        with locked(self.dir / ".lock"):
            meta = self.meta
            if meta["tokens"] >= tokens or meta["exhausted"]:
                return 0
            windows = token_windows(texts, tokenizer, context)
            windows = itertools.islice(windows, meta["windows"], None)
            bar = tqdm(
                total=tokens,
                initial=meta["tokens"],
                desc="caching activations",
                disable=not verbose,
            )
            xs: list[torch.Tensor] = []
            ys: list[torch.Tensor] = []
            pending_windows = 0
            while meta["tokens"] + sum(x.shape[1] for x in xs) < tokens:
                chunk = list(itertools.islice(windows, model_batch))
                if not chunk:
                    meta["exhausted"] = True
                    break
                x, y = mlp_io(model, adapter, torch.stack(chunk), input_hook, output_hook)
                forwards += 1
                xs.append(x[:, :, 1:].flatten(1, 2).float())
                ys.append(y[:, :, 1:].flatten(1, 2).float())
                pending_windows += len(chunk)
                bar.update(xs[-1].shape[1])
                if sum(x.shape[1] for x in xs) >= shard_tokens:
                    self._write_shard(meta, xs, ys, pending_windows)
                    xs, ys, pending_windows = [], [], 0
            if xs or meta["exhausted"]:
                self._write_shard(meta, xs, ys, pending_windows)
            bar.close()
        return forwards

    def _write_shard(
        self,
        meta: dict[str, Any],
        xs: list[torch.Tensor],
        ys: list[torch.Tensor],
        n_windows: int,
    ) -> None:
        if xs:
            i = len(meta["shards"])
            x, y = torch.cat(xs, 1), torch.cat(ys, 1)
            _atomic_npy(x.numpy(), self.dir / f"x_{i:05d}.npy")
            _atomic_npy(y.numpy(), self.dir / f"y_{i:05d}.npy")
            meta["shards"].append(int(x.shape[1]))
            meta["tokens"] += int(x.shape[1])
            meta["windows"] += n_windows
        write_json_atomic(
            self.dir / META_NAME, meta, indent=2
        )  # after the shard: a crash loses only it

    def read(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens ``[start, stop)`` in corpus order: ``x, y [n_layers, stop - start, d]``."""
        xs, ys, offset = [], [], 0
        for i, n in enumerate(self.meta["shards"]):
            lo, hi = max(start - offset, 0), min(stop - offset, n)
            if lo < hi:
                x_map, y_map = self._map(i)
                xs.append(torch.from_numpy(np.array(x_map[:, lo:hi])))
                ys.append(torch.from_numpy(np.array(y_map[:, lo:hi])))
            offset += n
            if offset >= stop:
                break
        return torch.cat(xs, 1), torch.cat(ys, 1)

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The tokens at corpus positions ``idx [m]`` (any order, < ``tokens``), in that
        order: ``x, y [n_layers, m, d]``, read from the memory maps row by row."""
        order = idx.argsort()
        wanted = idx[order].numpy()
        xs, ys, offset = [], [], 0
        for i, n in enumerate(self.meta["shards"]):
            lo, hi = np.searchsorted(wanted, [offset, offset + n])
            if lo < hi:
                x_map, y_map = self._map(i)
                rows = wanted[lo:hi] - offset
                xs.append(torch.from_numpy(x_map[:, rows]))
                ys.append(torch.from_numpy(y_map[:, rows]))
            offset += n
        x, y = torch.cat(xs, 1), torch.cat(ys, 1)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order))
        return x[:, inverse], y[:, inverse]

    def _map(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i not in self._maps:
            self._maps[i] = (
                np.load(self.dir / f"x_{i:05d}.npy", mmap_mode="r"),
                np.load(self.dir / f"y_{i:05d}.npy", mmap_mode="r"),
            )
        return self._maps[i]


class CachedBuffer:
    """Shuffled training buffers from an ``ActivationCache`` (module docstring); the same
    ``fill()`` interface as ``ActivationBuffer``."""

    windows_done = 0  # the position is fills_done alone

    def __init__(
        self,
        cache: ActivationCache,
        *,
        ring: int,
        buffer_tokens: int,
        seed: int = 0,
        fills_done: int = 0,
        batch_size: int = 1,
        rank: int = 0,
        world_size: int = 1,
    ):
        if ring < 1:
            raise ValueError("The activation cache holds no tokens: the corpus is empty.")
        if batch_size % world_size:
            raise ValueError(
                f"A batch of {batch_size} tokens does not split evenly over {world_size} "
                f"processes: make --batch-size a multiple of {world_size}."
            )
        self.cache, self.ring = cache, ring
        self.buffer_tokens = min(buffer_tokens, ring)
        self.seed, self.fills_done = seed, fills_done
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def fill(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Buffer ``fills_done``: ``(x, y)``, each ``[n_layers, buffer_tokens, d]`` (with
        several processes, this rank's rows only: module docstring)."""
        b, ring = self.buffer_tokens, self.ring
        start = (self.fills_done * b) % ring
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.fills_done)
        perm = torch.randperm(b, generator=g)
        self.fills_done += 1
        if self.world_size > 1:
            return self.cache.take((start + perm[self._rank_positions()]) % ring)
        parts = [(start, min(start + b, ring))]
        if start + b > ring:  # wraps around: the next epoch begins
            parts.append((0, start + b - ring))
        pieces = [self.cache.read(lo, hi) for lo, hi in parts]
        x = torch.cat([p[0] for p in pieces], 1)
        y = torch.cat([p[1] for p in pieces], 1)
        return x[:, perm], y[:, perm]

    def _rank_positions(self) -> torch.Tensor:
        """The buffer positions this rank trains on, in order: its slice of each minibatch."""
        n_batches = self.buffer_tokens // self.batch_size
        share = self.batch_size // self.world_size
        grid = torch.arange(n_batches * self.batch_size).view(n_batches, self.world_size, share)
        return grid[:, self.rank].flatten()
