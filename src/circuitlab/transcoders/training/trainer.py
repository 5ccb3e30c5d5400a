"""The training loop: stream activations, fit all layers jointly, log, checkpoint, save.

All layers train **jointly**: one model forward feeds every layer's transcoder, and the loss
is the sum over layers of

    ||ŷ_l - y_l||² / d   (mean over tokens, normalised activations)
    + λ_t · sparsity_l    (``TrainableTranscoders.sparsity``: decoder-norm weighted)

For per-layer transcoders the layers share no parameters, so this equals training each layer
alone on the same tokens; for a CLT, layer ``l'``'s reconstruction sums the decoders of every
layer ``<= l'``. Adam (``new_optimizer``: torch's fused kernel); the learning rate warms up linearly over the first 5% of steps and
decays linearly to zero over the last 20%; λ ramps up linearly over the first 10%.

Metrics per layer, averaged over the steps since the last log: FVU (fraction of variance
unexplained, ``Σ||ŷ-y||² / Σ||y-ȳ||²`` over each batch), L0 (active features per token) and
dead features (no activation in the last ``TrainConfig.dead_tokens`` training tokens, or
never, if fewer have been seen). They go to the progress bar and to ``OUT/metrics.json``.

Held-out evaluation (``eval_every > 0``): before training, ``evaluation.held_out_split`` takes
``eval_tokens`` tokens of windows from the corpus's *last* documents and removes those documents
from training; every ``eval_every`` steps and at the end, the current transcoders are measured
on them (``evaluation.ReconstructionStats``: FVU, normalised MSE, L0, dead = never active on
the held-out tokens, and its fraction), written to the log and to ``metrics.json``
(``held_out``, ``final_held_out``). These are the figures ``circuitlab eval-transcoders``
reports without losses, on the same documents by default.

Checkpoints (``OUT/checkpoint.pt``, written to a temp file and renamed) are taken every
``checkpoint_every`` steps and when the process gets SIGTERM or SIGINT (the step under way
finishes, the checkpoint is written, ``TrainingInterrupted`` is raised; a second signal stops at
once). They hold the weights, Adam's state, the counters, the metric accumulators, the corpus
position where the current buffer began and how many minibatches of it were used: a resumed
run refills that buffer (the same windows, the same shuffle), skips the used minibatches and
continues exactly as the uninterrupted run would have, ``metrics.json`` included. The final
state stays in ``checkpoint.pt`` so that ``extend=True`` can train a finished run to a larger
``n_tokens`` (the schedule becomes that of the new total from the step reached), and
``export_checkpoint`` writes any checkpoint as circuit-tracer's layout.

Data-parallel (``torchrun --nproc_per_node N -m circuitlab train ... --cache-activations DIR``;
``distributed.py``): every rank runs this loop on the same schedule with its slice of each
global batch (read from the activation cache), gradients averaged by
``DistributedDataParallel``; the weights are those of one process on the same data.
``--batch-size`` stays the global batch. The ranks agree after every step whether any got a
stop signal, so all stop at the same step; rank 0 alone evaluates, logs and writes
``metrics.json``, checkpoints and the transcoders, and the others wait for it before they
return or raise. ``dtype="float64"`` trains in double precision (checks of exactness; the
saved transcoders are float32 either way).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ...models.loading import load_model, model_spec
from ..base import Transcoders
from ..evaluation import ReconstructionStats, held_out_split
from .activations import ActivationBuffer, mlp_io
from .cache import ActivationCache, CachedBuffer, activation_key
from .distributed import World, world
from .model import TOPK_KINDS, TrainableTranscoders

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.json"
TRANSCODERS_DIR = "transcoders"

DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEFAULT_SPARSITY = {"relu": 3e-4, "jump_relu": 3e-3, "topk": 0.0, "batchtopk": 0.0}
# settings that change neither the data nor the math (to float tolerance): a checkpoint
# resumes under other values
_NOT_FINGERPRINTED = ("log_every", "checkpoint_every", "eval_every", "eval_tokens", "n_tokens")
_NOT_FINGERPRINTED += ("sparse_kernels", "cache_dir")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes a training run (a resumed run must match it)."""

    kind: str = "plt"
    activation: str = "jump_relu"
    d_transcoder: int = 1024
    k: int = 32
    skip: bool = False
    n_tokens: int = 200_000
    batch_size: int = 512
    lr: float = 3e-3
    sparsity: float | None = None  # None: DEFAULT_SPARSITY[activation]
    bandwidth: float = 0.1
    init_threshold: float = 0.5
    tanh_scale: float = 1.0
    context: int = 64
    model_batch: int = 8
    buffer_tokens: int = 8192
    input_hook: str | None = None  # None: mlp.hook_in (plt) / hook_resid_mid (clt)
    output_hook: str = "hook_mlp_out"
    dead_window: int = 0  # tokens without firing = dead; 0: auto (``dead_tokens``)
    log_every: int = 20
    checkpoint_every: int = 200
    eval_every: int = 0  # steps between held-out evaluations; 0: none (no held-out split)
    eval_tokens: int = 2048  # held-out tokens (BOS excluded), with eval_every > 0
    seed: int = 0
    corpus: str = "corpus"
    auxk_alpha: float = 1.0  # AuxK weight (topk, batchtopk); 0: no AuxK
    k_aux: int = 0  # dead features per token in AuxK's reconstruction; 0: k
    sparse_kernels: bool = True  # topk/batchtopk: sparse encoder backward and decoder
    cache_dir: str | None = None  # activation cache (training/cache.py); None: stream
    cache_tokens: int = 0  # tokens to cache (then epochs over them); 0: n_tokens
    dtype: str = "float32"  # of the parameters and Adam's state: float32 or float64

    @property
    def sparsity_coefficient(self) -> float:
        return DEFAULT_SPARSITY[self.activation] if self.sparsity is None else self.sparsity

    @property
    def torch_dtype(self) -> torch.dtype:
        if self.dtype not in DTYPES:
            raise ValueError(f"Unknown training dtype {self.dtype!r}; use float32 or float64.")
        return DTYPES[self.dtype]

    @property
    def dead_tokens(self) -> int:
        """The dead window in tokens: ``dead_window``, or by default a twentieth of the run
        (at least one batch, at most 10M tokens: sparsify's fixed threshold), so that AuxK
        starts after 5% of the steps whatever the run's length."""
        if self.dead_window > 0:
            return self.dead_window
        return max(self.batch_size, min(self.n_tokens // 20, 10_000_000))

    @property
    def aux_k(self) -> int:
        """Dead features per token in AuxK's reconstruction: ``k_aux``, or by default ``k``."""
        return self.k_aux or self.k

    @property
    def in_hook(self) -> str:
        return self.input_hook or ("mlp.hook_in" if self.kind == "plt" else "hook_resid_mid")

    @property
    def total_steps(self) -> int:
        return max(self.n_tokens // self.batch_size, 1)

    def fingerprint(self) -> str:
        """The settings a checkpoint must share with the run resuming it (``n_tokens`` aside:
        a different one is an extension, ``train_transcoders(extend=True)``)."""
        d = asdict(self)
        for key in _NOT_FINGERPRINTED:
            d.pop(key)
        if self.cache_dir is None:  # a stream's buffers differ from the cache's
            d.pop("cache_tokens")
        else:
            d["cached"] = True
        if self.eval_every > 0:  # the held-out documents are not trained on
            d["held_out_tokens"] = self.eval_tokens
        return json.dumps(d, sort_keys=True)


_DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}


class TrainingInterrupted(Exception):
    """A run stopped by SIGTERM/SIGINT after writing its checkpoint; rerun to resume."""

    def __init__(self, signum: int, step: int, total: int, checkpoint: Path):
        self.signum, self.step, self.total, self.checkpoint = signum, step, total, checkpoint
        name = signal.Signals(signum).name
        super().__init__(
            f"{name}: stopped at step {step} of {total}; checkpoint saved in {checkpoint}. "
            "Rerun the same command to resume."
        )


@dataclass
class Progress:
    """Counters of a run; ``windows``/``fills`` are the corpus position and buffer count where
    the current buffer began, ``offset`` the minibatches already taken from it."""

    step: int = 0
    tokens: int = 0
    windows: int = 0
    fills: int = 0
    offset: int = 0
    seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)


def schedule(step: int, total: int) -> tuple[float, float]:
    """``(lr factor, sparsity factor)`` at ``step`` (module docstring)."""
    warm = max(1, int(0.05 * total))
    decay = max(1, int(0.2 * total))
    lr = min(1.0, (step + 1) / warm) * min(1.0, (total - step) / decay)
    return max(lr, 0.0), min(1.0, (step + 1) / max(1, int(0.1 * total)))


class _Metrics:
    """Per-layer FVU and L0 since the last log, and when each feature last fired."""

    def __init__(self, n_layers: int, d_transcoder: int):
        self.last_fire = torch.full((n_layers, d_transcoder), -1, dtype=torch.long)
        self.reset(n_layers)

    def aux_dead(self, tokens: int, window: int) -> torch.Tensor:
        """Features ``[L, F]`` silent for the last ``window`` tokens, counting from the start
        of training (so none before ``window`` tokens: AuxK's mask)."""
        return self.last_fire.clamp(min=0) <= tokens - window

    def reset(self, n_layers: int) -> None:
        self.err = torch.zeros(n_layers, dtype=torch.float64)
        self.var = torch.zeros(n_layers, dtype=torch.float64)
        self.l0 = torch.zeros(n_layers, dtype=torch.float64)
        self.n = 0

    @torch.no_grad()
    def add(self, recon: torch.Tensor, y: torch.Tensor, acts: torch.Tensor, tokens: int) -> None:
        on = acts > 0
        self.add_counts(recon, y, on.sum(-1).double().mean(-1), on.any(1), tokens)

    @torch.no_grad()
    def add_counts(
        self,
        recon: torch.Tensor,
        y: torch.Tensor,
        l0: torch.Tensor,
        fired: torch.Tensor,
        tokens: int,
        world: World | None = None,
    ) -> None:
        """One step: reconstructions and targets ``[L, n, d]``, L0 ``[L]``, fired ``[L, F]``
        (with several processes: this rank's slice, summed over ranks into the global step)."""
        world = world or World()
        L, n, _ = y.shape
        err, sq = torch.zeros(L, dtype=torch.float64), torch.zeros(L, dtype=torch.float64)
        for layer in range(L):  # float64, one layer at a time
            t = y[layer].double()
            err[layer] = (recon[layer].double() - t).pow(2).sum()
            sq[layer] = t.pow(2).sum()
        packed = torch.cat(
            [
                err,
                sq,
                y.sum(1).double().flatten(),  # [L * d]
                l0.double() / world.size,
                fired.flatten().double(),
                torch.tensor([float(n)], dtype=torch.float64),
            ]
        )
        world.all_sum(packed)
        err, sq, rest = packed[:L], packed[L : 2 * L], packed[2 * L :]
        sums, rest = rest[: y.shape[-1] * L].view(L, -1), rest[y.shape[-1] * L :]
        l0_all, fired_all, n_all = rest[:L], rest[L:-1].view(fired.shape) > 0, rest[-1]
        self.err += err
        self.var += sq - sums.pow(2).sum(-1) / n_all  # Σ||y − ȳ||² over the global batch
        self.l0 += l0_all
        self.n += 1
        self.last_fire[fired_all] = tokens

    def dead(self, tokens: int, window: int) -> torch.Tensor:
        """Dead features per layer ``[L]``: none fired in the last ``window`` tokens."""
        return (self.last_fire < max(tokens - window, 0)).sum(1)

    def state(self) -> dict[str, Any]:
        return {"err": self.err, "var": self.var, "l0": self.l0, "n": self.n}

    def load_state(self, state: dict[str, Any]) -> None:
        self.err, self.var, self.l0, self.n = state["err"], state["var"], state["l0"], state["n"]

    def summary(self, tokens: int, window: int) -> dict[str, list[float]]:
        n = max(self.n, 1)
        return {
            "fvu": (self.err / self.var.clamp(min=1e-30)).tolist(),
            "l0": (self.l0 / n).tolist(),
            "dead": self.dead(tokens, window).tolist(),
        }


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_json_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


@torch.no_grad()
def _init_from_buffer(
    tc: TrainableTranscoders, x: torch.Tensor, y: torch.Tensor, w: World | None = None
) -> None:
    """Sets the normalisation scales and ``b_dec`` (the mean normalised output) from the first
    buffer ``x, y [L, n, d]`` (with several processes: of all ranks' rows together)."""
    w = w or World()
    L, n, d = x.shape
    sums = torch.zeros(L, d + 2, dtype=torch.float64)  # per layer: Σy [d], Σ||x||², Σ||y||²
    for layer in range(L):  # float64 sums, one layer at a time (the buffer is large)
        xl, yl = x[layer].double(), y[layer].double()
        sums[layer, :d] = yl.sum(0)
        sums[layer, d] = xl.pow(2).sum()
        sums[layer, d + 1] = yl.pow(2).sum()
    count = w.all_sum(torch.tensor([float(n)], dtype=torch.float64))
    w.all_sum(sums)
    tc.in_scale.copy_((sums[:, d] / (count * d)).sqrt().clamp(min=1e-8))
    tc.out_scale.copy_((sums[:, d + 1] / (count * d)).sqrt().clamp(min=1e-8))
    tc.b_dec.copy_(sums[:, :d] / count / tc.out_scale[:, None])


def train_transcoders(
    model_ref: str | torch.nn.Module,
    texts: Iterable[str],
    out_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    tokenizer: Any = None,
    model_name: str | None = None,
    restart: bool = False,
    extend: bool = False,
    verbose: bool = True,
) -> Transcoders:
    """Trains transcoders for ``model_ref`` on ``texts``; writes ``out_dir`` (module docstring).

    ``out_dir/transcoders`` gets circuit-tracer's layout, ``out_dir/metrics.json`` the metrics.
    An existing ``out_dir/checkpoint.pt`` of the same configuration is resumed unless
    ``restart``; one with another ``n_tokens`` only with ``extend`` (train a finished or
    interrupted run to the new total). SIGTERM/SIGINT write a checkpoint and raise
    ``TrainingInterrupted``. Launched by ``torchrun`` (``WORLD_SIZE > 1``), each process trains
    its slice of every batch (module docstring; needs ``cache_dir``).
    """
    cfg = config or TrainConfig()
    with world() as w:
        _check_world(cfg, w)
        return _train(
            model_ref, texts, Path(out_dir), cfg, w, tokenizer, model_name, restart, extend, verbose
        )


def _check_world(cfg: TrainConfig, w: World) -> None:
    cfg.torch_dtype  # noqa: B018 (validates the name)
    if w.size == 1:
        return
    if cfg.cache_dir is None:
        raise ValueError(
            f"Training with {w.size} processes reads each one's share of the activations from "
            "the activation cache: pass --cache-activations DIR (cache_dir=), a folder every "
            "process can read."
        )
    if cfg.batch_size % w.size:
        raise ValueError(
            f"--batch-size {cfg.batch_size} (the global batch) does not split evenly over "
            f"{w.size} processes: make it a multiple of {w.size}."
        )


def _train(
    model_ref: str | torch.nn.Module,
    texts: Iterable[str],
    out: Path,
    cfg: TrainConfig,
    w: World,
    tokenizer: Any,
    model_name: str | None,
    restart: bool,
    extend: bool,
    verbose: bool,
) -> Transcoders:
    """``train_transcoders`` in process ``w.rank`` of ``w.size``."""
    out.mkdir(parents=True, exist_ok=True)
    verbose = verbose and w.main
    hf, tok, adapter = load_model(model_ref, tokenizer=tokenizer)
    if tok is None:
        raise ValueError("Training on text needs the model's tokenizer; pass tokenizer=.")
    spec = model_spec(hf)
    held_out = None
    if cfg.eval_every > 0:
        texts, held_out = held_out_split(texts, tok, cfg.context, cfg.eval_tokens)
        if not texts:
            raise ValueError(
                f"The corpus is too small to hold out {cfg.eval_tokens} tokens and train on the "
                "rest: lower --eval-tokens or use a larger corpus."
            )
    tc = new_trainable(cfg, spec.n_layers, spec.d_model).to(cfg.torch_dtype)
    opt = new_optimizer(tc, cfg)
    prog = Progress()
    metrics = _Metrics(spec.n_layers, cfg.d_transcoder)
    ckpt = out / CHECKPOINT_NAME
    if ckpt.is_file() and not restart:
        _resume(ckpt, cfg, tc, opt, prog, metrics, extend=extend)
    module = w.wrap(tc)
    buf: ActivationBuffer | CachedBuffer
    if cfg.cache_dir is not None:
        buf = _cached_buffer(cfg, hf, adapter, tok, texts, prog, verbose, w)
    else:
        buf = ActivationBuffer(
            hf,
            adapter,
            tok,
            texts,
            input_hook=cfg.in_hook,
            output_hook=cfg.output_hook,
            context=cfg.context,
            model_batch=cfg.model_batch,
            buffer_tokens=cfg.buffer_tokens,
            seed=cfg.seed,
            windows_done=prog.windows,
            fills_done=prog.fills,
        )
    total = cfg.total_steps
    batch = cfg.batch_size // w.size  # this rank's slice of each global batch
    bar = tqdm(total=total, initial=prog.step, desc="training transcoders", disable=not verbose)
    start = time.perf_counter() - prog.seconds
    exhausted = False

    def checkpoint() -> None:
        prog.seconds = time.perf_counter() - start
        if w.main:
            _checkpoint(ckpt, cfg, tc, opt, prog, metrics, model_name)

    def evaluate() -> None:
        if w.main and held_out is not None:
            _evaluate(tc, hf, adapter, held_out, cfg, prog, bar if verbose else None, out)

    with _stop_signals() as stop:
        while prog.step < total and not exhausted:
            data = buf.fill()  # the buffer that began at (prog.windows, prog.fills)
            if data is None:
                exhausted = True
                break
            x, y = (t.to(cfg.torch_dtype) for t in data)
            if prog.step == 0 and prog.fills == 0:
                _init_from_buffer(tc, x, y, w)
            x.div_(tc.in_scale[:, None, None])  # in place: the buffer is the big allocation
            y.div_(tc.out_scale[:, None, None])
            n_batches = x.shape[1] // batch
            while prog.offset < n_batches and prog.step < total and not stop:
                s = prog.offset * batch
                xb, yb = x[:, s : s + batch], y[:, s : s + batch]
                _step(tc, opt, cfg, prog, metrics, xb, yb, total, world=w, module=module)
                _agree_on_stop(stop, w)
                prog.offset += 1
                bar.update(1)
                if prog.step % cfg.log_every == 0 or prog.step == total:
                    _log(prog, metrics, cfg, bar, time.perf_counter() - start, out, w)
                if cfg.eval_every > 0 and prog.step % cfg.eval_every == 0:
                    evaluate()
                if prog.step % cfg.checkpoint_every == 0 and prog.step < total:
                    checkpoint()
            if prog.offset >= n_batches:  # drained: the next buffer begins here
                prog.windows, prog.fills, prog.offset = buf.windows_done, buf.fills_done, 0
            if stop:
                checkpoint()
                bar.close()
                if w.main:
                    _write_metrics(out, cfg, prog, False, partial=True)
                w.barrier()  # the others leave only once rank 0's checkpoint is written
                raise TrainingInterrupted(stop[0], prog.step, total, ckpt)
    bar.close()
    prog.seconds = time.perf_counter() - start
    if metrics.n:
        _log(prog, metrics, cfg, bar, prog.seconds, out, w)
    if prog.step > 0 and (not prog.evals or prog.evals[-1]["step"] != prog.step):
        evaluate()
    result = tc.to_transcoders(
        input_hook=cfg.in_hook,
        output_hook=cfg.output_hook,
        model_name=model_name,
        name=transcoders_name(cfg),
    ).to(torch.float32)
    if w.main:
        result.save(str(out / TRANSCODERS_DIR), overwrite=True)
        _write_metrics(out, cfg, prog, exhausted)
        _checkpoint(ckpt, cfg, tc, opt, prog, metrics, model_name)  # kept: extend, export
    w.barrier()  # every process returns once the files are written
    return result


def _cached_buffer(
    cfg: TrainConfig,
    model: torch.nn.Module,
    adapter: Any,
    tokenizer: Any,
    texts: Iterable[str],
    prog: Progress,
    verbose: bool,
    w: World,
) -> CachedBuffer:
    """The run's buffers from the activation cache under ``cfg.cache_dir``, after caching
    the first ``cache_tokens`` (default ``n_tokens``) tokens if they are not there yet."""
    assert cfg.cache_dir is not None
    texts = list(texts)
    key = activation_key(
        model,
        tokenizer,
        texts,
        context=cfg.context,
        input_hook=cfg.in_hook,
        output_hook=cfg.output_hook,
    )
    spec = model_spec(model)
    cache = ActivationCache(cfg.cache_dir, key, n_layers=spec.n_layers, d_model=spec.d_model)
    want = cfg.cache_tokens or cfg.n_tokens
    cache.ensure(
        want,
        model,
        adapter,
        tokenizer,
        texts,
        context=cfg.context,
        input_hook=cfg.in_hook,
        output_hook=cfg.output_hook,
        model_batch=cfg.model_batch,
        verbose=verbose,
    )
    ring = min(want, cache.tokens)
    if ring < cfg.batch_size:
        raise ValueError(
            f"The corpus gives {ring} tokens, fewer than one batch ({cfg.batch_size}): use a "
            "larger corpus or a smaller --batch-size."
        )
    return CachedBuffer(
        cache,
        ring=ring,
        buffer_tokens=cfg.buffer_tokens,
        seed=cfg.seed,
        fills_done=prog.fills,
        batch_size=cfg.batch_size,
        rank=w.rank,
        world_size=w.size,
    )


def new_trainable(cfg: TrainConfig, n_layers: int, d_model: int) -> TrainableTranscoders:
    """The freshly initialised trainable transcoders of ``cfg``."""
    return TrainableTranscoders(
        n_layers,
        d_model,
        cfg.d_transcoder,
        kind=cfg.kind,
        activation=cfg.activation,
        k=cfg.k,
        skip=cfg.skip,
        bandwidth=cfg.bandwidth,
        init_threshold=cfg.init_threshold,
        tanh_scale=cfg.tanh_scale,
        seed=cfg.seed,
    )


def new_optimizer(tc: nn.Module, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam (β 0.9, 0.999) over ``tc``'s parameters, torch's fused kernel: the update of the
    per-tensor loop to rounding, in one pass over each tensor (on one CPU thread, 3 layers ×
    4,096 × 576: 8 ms a step instead of 64 ms)."""
    return torch.optim.Adam(tc.parameters(), lr=cfg.lr, betas=(0.9, 0.999), fused=True)


def transcoders_name(cfg: TrainConfig) -> str:
    return f"circuitlab-{cfg.kind}-{cfg.activation}-{cfg.d_transcoder}"


@contextmanager
def _stop_signals() -> Iterator[list[int]]:
    """Yields a list that gets the number of the first SIGTERM/SIGINT received (a second one
    raises ``KeyboardInterrupt`` at once). Outside the main thread nothing is installed."""
    stop: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        if stop:
            raise KeyboardInterrupt
        stop.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _step(
    tc: TrainableTranscoders,
    opt: torch.optim.Optimizer,
    cfg: TrainConfig,
    prog: Progress,
    metrics: _Metrics,
    x: torch.Tensor,
    y: torch.Tensor,
    total: int,
    *,
    world: World | None = None,
    module: nn.Module | None = None,
) -> None:
    """One optimiser step on the normalised batch ``x, y [L, n, d]`` (this rank's slice of
    it with several processes; ``module`` is then ``tc`` in ``DistributedDataParallel``)."""
    world = world or World()
    lr_f, sp_f = schedule(prog.step, total)
    for group in opt.param_groups:
        group["lr"] = cfg.lr * lr_f
    auxk = tc.activation in TOPK_KINDS and cfg.auxk_alpha > 0
    dead = metrics.aux_dead(prog.tokens, cfg.dead_tokens) if auxk else None
    out = (module or tc)(x, y, sparse=cfg.sparse_kernels, dead=dead, k_aux=cfg.aux_k, world=world)
    mse = ((out.recon - y) ** 2).sum(-1).mean(-1) / x.shape[-1]  # [L]
    loss = mse + cfg.sparsity_coefficient * sp_f * out.sparsity
    if auxk:
        loss = loss + cfg.auxk_alpha * out.aux
    opt.zero_grad(set_to_none=True)
    loss.sum().backward()
    tc.project_decoder_grads_()
    opt.step()
    tc.clamp_()
    prog.step += 1
    prog.tokens += x.shape[1] * world.size
    metrics.add_counts(out.recon.detach(), y, out.l0, out.fired, prog.tokens, world)


def _agree_on_stop(stop: list[int], w: World) -> None:
    """With several processes, a stop signal any of them got (the largest number) becomes
    every process's, so that all stop after the same step."""
    if w.size == 1:
        return
    flag = w.all_max(torch.tensor([stop[0] if stop else 0], dtype=torch.long))
    if flag.item() and not stop:
        stop.append(int(flag.item()))


@torch.no_grad()
def held_out_metrics(
    tc: TrainableTranscoders,
    model: torch.nn.Module,
    adapter: Any,
    windows: torch.Tensor,
    cfg: TrainConfig,
) -> dict[str, list[float]]:
    """FVU, NMSE, L0, dead and dead fraction per layer of ``tc`` on ``windows [n, context]``.

    Computed on normalised activations: every figure is invariant to the per-layer scales.
    """
    stats = ReconstructionStats(tc.n_layers, tc.d_transcoder)
    for chunk in windows.split(cfg.model_batch):
        x, y = mlp_io(model, adapter, chunk, cfg.in_hook, cfg.output_hook)
        x = x[:, :, 1:].flatten(1, 2).float() / tc.in_scale[:, None, None]  # drop BOS
        y = y[:, :, 1:].flatten(1, 2).float() / tc.out_scale[:, None, None]
        acts = tc.encode(x)
        recon = tc.decode(acts, x)
        for layer in range(tc.n_layers):
            stats.add(layer, y[layer], recon[layer], acts[layer])
    return stats.summary()


def _evaluate(
    tc: TrainableTranscoders,
    model: torch.nn.Module,
    adapter: Any,
    windows: torch.Tensor,
    cfg: TrainConfig,
    prog: Progress,
    bar: Any,
    out: Path,
) -> None:
    s = held_out_metrics(tc, model, adapter, windows, cfg)
    prog.evals.append({"step": prog.step, "tokens": prog.tokens, **s})
    if bar is not None:
        n = len(s["fvu"])
        bar.write(
            f"step {prog.step}: held-out fvu mean {sum(s['fvu']) / n:.4f} max "
            f"{max(s['fvu']):.4f}, l0 {sum(s['l0']) / n:.1f}, dead {sum(s['dead'])} "
            f"({100 * sum(s['dead_fraction']) / n:.1f}%)"
        )
    _write_metrics(out, cfg, prog, False, partial=True)


def _log(
    prog: Progress,
    metrics: _Metrics,
    cfg: TrainConfig,
    bar: Any,
    seconds: float,
    out: Path,
    w: World | None = None,
) -> None:
    if metrics.n == 0:
        return
    s = metrics.summary(prog.tokens, cfg.dead_tokens)
    entry = {"step": prog.step, "tokens": prog.tokens, "seconds": round(seconds, 2), **s}
    prog.history.append(entry)
    metrics.reset(len(s["fvu"]))
    n = len(s["fvu"])
    bar.set_postfix(
        fvu=f"{sum(s['fvu']) / n:.3f}", l0=f"{sum(s['l0']) / n:.1f}", dead=sum(s["dead"])
    )
    if w is None or w.main:
        _write_metrics(out, cfg, prog, False, partial=True)


def _write_metrics(
    out: Path, cfg: TrainConfig, prog: Progress, exhausted: bool, *, partial: bool = False
) -> None:
    final = prog.history[-1] if prog.history else {}
    _write_json_atomic(
        {
            "config": asdict(cfg),
            "done": not partial,
            "corpus_exhausted": exhausted,
            "steps": prog.step,
            "tokens": prog.tokens,
            "seconds": round(prog.seconds, 2),
            "final": final,
            "history": prog.history,
            "final_held_out": prog.evals[-1] if prog.evals else None,
            "held_out": prog.evals,
        },
        out / METRICS_NAME,
    )


def _checkpoint(
    path: Path,
    cfg: TrainConfig,
    tc: TrainableTranscoders,
    opt: torch.optim.Optimizer,
    prog: Progress,
    metrics: _Metrics,
    model_name: str | None = None,
) -> None:
    _save_atomic(
        {
            "config": cfg.fingerprint(),
            "train_config": json.dumps(asdict(cfg)),
            "model_name": model_name or "",
            "model": tc.state_dict(),
            "optimizer": opt.state_dict(),
            "progress": json.dumps(asdict(prog)),
            "last_fire": metrics.last_fire,
            "metrics": metrics.state(),
        },
        path,
    )


def _resume(
    path: Path,
    cfg: TrainConfig,
    tc: TrainableTranscoders,
    opt: torch.optim.Optimizer,
    prog: Progress,
    metrics: _Metrics,
    *,
    extend: bool = False,
) -> None:
    state = torch.load(path, weights_only=True)
    stored = json.loads(state["config"])
    for key in _NOT_FINGERPRINTED:  # in the fingerprint of older checkpoints
        stored.pop(key, None)
    for key, value in json.loads(cfg.fingerprint()).items():  # settings added since: defaults
        if key not in stored and key in _DEFAULTS:
            stored[key] = value if value == _DEFAULTS[key] else None
    if json.dumps(stored, sort_keys=True) != cfg.fingerprint():
        raise ValueError(
            f"{path} is the checkpoint of a run with other settings; rerun with the same "
            "settings, or pass --restart to discard it."
        )
    saved = _saved_config(state)
    if saved.n_tokens != cfg.n_tokens and not extend:
        raise ValueError(
            f"{path} is the checkpoint of a run of {saved.n_tokens} tokens, not {cfg.n_tokens}: "
            f"pass --extend to train it on to {cfg.n_tokens} tokens, --tokens {saved.n_tokens} "
            "to resume it, or --restart to discard it."
        )
    done = json.loads(state["progress"])
    if done["step"] > cfg.total_steps:
        raise ValueError(
            f"{path} has already trained {done['step']} steps ({done['tokens']} tokens); "
            f"--tokens {cfg.n_tokens} is fewer: pass a larger --tokens or --restart."
        )
    tc.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    for key, value in done.items():
        setattr(prog, key, value)
    metrics.last_fire = state["last_fire"]
    if "metrics" in state:  # absent from checkpoints written before the accumulators were
        metrics.load_state(state["metrics"])


def _saved_config(state: dict[str, Any]) -> TrainConfig:
    """The ``TrainConfig`` a checkpoint was written with (older ones: from the fingerprint,
    the settings outside it at their defaults)."""
    raw = json.loads(state.get("train_config") or state["config"])
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in raw.items() if k in names})


def export_checkpoint(
    checkpoint: str | Path, out_dir: str | Path, *, model_name: str | None = None
) -> Transcoders:
    """Writes the transcoders of a training checkpoint (finished or not) to ``out_dir`` in
    circuit-tracer's layout; ``model_name`` defaults to the one the run was given."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such checkpoint; pass a training run's folder or its checkpoint.pt"
        )
    state = torch.load(path, weights_only=True)
    cfg = _saved_config(state)
    n_layers, _, d_model = state["model"]["W_enc"].shape  # [L, F, d]
    tc = new_trainable(cfg, n_layers, d_model)
    tc.load_state_dict(state["model"])
    name = model_name or state.get("model_name") or None
    if model_name is None and name is not None and name.startswith("."):
        # relative to the run's transcoders folder (cmd_train): make it relative to out_dir
        target = (path.parent / TRANSCODERS_DIR / name).resolve()
        try:
            rel = os.path.relpath(target, Path(out_dir).expanduser().resolve())
            name = rel if rel.startswith(".") else f"./{rel}"
        except ValueError:  # another drive
            name = str(target)
    result = tc.to_transcoders(
        input_hook=cfg.in_hook,
        output_hook=cfg.output_hook,
        model_name=name,
        name=transcoders_name(cfg),
    )
    result.save(str(out_dir), overwrite=True)
    return result
