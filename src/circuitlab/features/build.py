"""Feature dashboards: stream a corpus through a model and its transcoders, write a store.

``build_dashboards(model, texts, out_dir, settings)`` runs in two phases:

1. **Stream** ``settings.n_tokens`` tokens as windows (``corpus.token_windows``: BOS +
   ``context - 1`` tokens) in batches through the model; every layer's activations update that
   layer's ``LayerStats`` (counts, min/max, histogram, top windows and banded samples with
   their per-token activations). The token ids of windows some example slot still refers to
   are kept; the others are dropped. Every ``checkpoint_every`` batches the whole state goes
   atomically to ``out_dir/.features-build/state.pt``; a rerun with the same settings
   continues from it.
2. **Write** one record per feature (see ``layer_records``) into a temporary directory next to
   ``out_dir/features`` and rename it into place; then the checkpoint is deleted. ``build.json``
   records the transcoder set (``transcoder_set``: name, model, fingerprint), so the lab serves
   these dashboards only to graphs of that set.

BOS positions are never counted (their activations are zeroed, as in attribution).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..models.adapters import get_module
from ..models.session import READ_POINTS, check_hook_names
from ..replacement import ReplacementModel
from ..transcoders.identity import transcoder_set_record
from .corpus import batched_windows, token_windows
from .logits import top_bottom_logits
from .stats import LayerStats, StatsConfig
from .store import STORE_DIR, LayerWriter, write_index

CHECKPOINT_DIR = ".features-build"
CHECKPOINT_NAME = "state.pt"


@dataclass(frozen=True)
class BuildSettings:
    """What a build streams and keeps. A resumed build must use the same settings."""

    corpus: str = "corpus"
    n_tokens: int = 100_000
    context: int = 64
    batch_size: int = 8
    checkpoint_every: int = 25
    n_logits: int = 10
    histogram_bins: int = 40
    stats: StatsConfig = field(default_factory=StatsConfig)

    @property
    def n_windows(self) -> int:
        return math.ceil(self.n_tokens / (self.context - 1))

    def fingerprint(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("checkpoint_every")
        return d


@dataclass
class _State:
    layers: list[LayerStats]
    windows_done: int = 0
    tokens_done: int = 0
    bank: dict[int, torch.Tensor] = field(default_factory=dict)
    stream_seconds: float = 0.0


# ---- activations ------------------------------------------------------------------------------
class _Done(Exception):
    """Raised by the last layer's input hook: nothing after it is needed."""


@torch.no_grad()
def transcoder_inputs(model: ReplacementModel, ids: torch.Tensor) -> list[torch.Tensor]:
    """The transcoders' inputs ``[layer][batch, pos, d_model]`` for windows ``[batch, pos]``.

    A lean forward: one hook per layer at the input point (the pre-MLP norm's output for
    ``mlp.hook_in`` / ``ln2.hook_normalized``, its input for ``hook_resid_mid``), and the
    forward stops after the last layer's input, so the last MLP and the unembedding never run.
    """
    ad, tc = model.adapter, model.transcoders
    check_hook_names(tc.input_hook, tc.output_hook)
    after_norm = READ_POINTS[tc.input_hook] == "mlp_in"
    reads: list[torch.Tensor] = []

    def keep(module: nn.Module, args: tuple[Any, ...], output: Any = None) -> None:
        reads.append((output if after_norm else args[0]).detach())
        if len(reads) == model.n_layers:
            raise _Done

    handles = []
    for layer in range(model.n_layers):
        ln2 = get_module(model.block(layer), ad.ln2)
        if after_norm:
            handles.append(ln2.register_forward_hook(keep))
        else:
            handles.append(ln2.register_forward_pre_hook(keep))
    try:
        model.model(input_ids=ids.to(model.device), use_cache=False)
    except _Done:
        pass
    finally:
        for h in handles:
            h.remove()
    return reads


@torch.no_grad()
def layer_activations(model: ReplacementModel, ids: torch.Tensor) -> list[torch.Tensor]:
    """Feature activations ``[layer][batch, pos, d_t]`` for windows ``[batch, pos]``, BOS zeroed."""
    out = []
    for layer, x in enumerate(transcoder_inputs(model, ids)):
        acts = model.transcoders.encode(layer, x)
        acts[:, model.zero_positions] = 0
        out.append(acts.float().cpu())
    return out


# ---- checkpoints -------------------------------------------------------------------------------
def _identity(model: ReplacementModel, settings: BuildSettings) -> dict[str, Any]:
    tc = model.transcoders
    return {
        "model": model.name,
        "transcoders": tc.name,
        "n_layers": tc.n_layers,
        "d_transcoder": tc.d_transcoder,
        "settings": settings.fingerprint(),
    }


def _save_checkpoint(path: Path, identity: dict[str, Any], state: _State) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = sorted(state.bank)
    payload = {
        "identity": json.dumps(identity, sort_keys=True),
        "windows_done": state.windows_done,
        "tokens_done": state.tokens_done,
        "stream_seconds": state.stream_seconds,
        "layers": [s.state_dict() for s in state.layers],
        "bank_ids": torch.tensor(ids, dtype=torch.long),
        "bank_tokens": torch.stack([state.bank[i] for i in ids]) if ids else torch.zeros(0),
    }
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, identity: dict[str, Any], state: _State) -> None:
    payload = torch.load(path, weights_only=True)
    if payload["identity"] != json.dumps(identity, sort_keys=True):
        raise ValueError(
            f"{path} is the checkpoint of a different build (model, transcoders or settings "
            "differ); rerun with the same settings, or pass --restart to discard it."
        )
    for stats, sd in zip(state.layers, payload["layers"], strict=True):
        stats.load_state_dict(sd)
    state.windows_done = int(payload["windows_done"])
    state.tokens_done = int(payload["tokens_done"])
    state.stream_seconds = float(payload["stream_seconds"])
    state.bank = {
        int(i): t for i, t in zip(payload["bank_ids"].tolist(), payload["bank_tokens"], strict=True)
    }


def _prune_bank(state: _State) -> None:
    keep = torch.unique(torch.cat([s.referenced_windows() for s in state.layers])).tolist()
    state.bank = {i: state.bank[i] for i in keep}


# ---- phase 1: stream ----------------------------------------------------------------------------
def _stream(
    model: ReplacementModel,
    texts: Iterable[str],
    settings: BuildSettings,
    state: _State,
    save: Any,
    verbose: bool,
) -> None:
    if model.tokenizer is None:
        raise ValueError("Building dashboards from text needs the model's tokenizer.")
    windows = token_windows(texts, model.tokenizer, settings.context)
    for _ in range(state.windows_done):  # skip what the checkpoint already holds
        if next(windows, None) is None:
            break
    todo = settings.n_windows - state.windows_done
    bar = tqdm(
        total=settings.n_windows,
        initial=state.windows_done,
        desc="features: streaming windows",
        disable=not verbose,
    )
    start = time.perf_counter() - state.stream_seconds
    limited = itertools.islice(windows, max(todo, 0))
    for n_batch, ids in enumerate(batched_windows(limited, settings.batch_size), 1):
        win_ids = torch.arange(state.windows_done, state.windows_done + ids.shape[0])
        for stats, acts in zip(state.layers, layer_activations(model, ids), strict=True):
            stats.update(acts, win_ids)
        state.bank.update(zip(win_ids.tolist(), ids, strict=True))
        state.windows_done += ids.shape[0]
        state.tokens_done += ids.shape[0] * (ids.shape[1] - 1)
        state.stream_seconds = time.perf_counter() - start
        bar.update(ids.shape[0])
        if n_batch % settings.checkpoint_every == 0:
            _prune_bank(state)
            save()
    bar.close()
    _prune_bank(state)


# ---- records ----------------------------------------------------------------------------
class _Tokens:
    """Token strings, decoded once per id."""

    def __init__(self, tokenizer: Any):
        self.tokenizer, self.cache = tokenizer, {}

    def __call__(self, ids: list[int]) -> list[str]:
        out = []
        for i in ids:
            s = self.cache.get(i)
            if s is None:
                s = self.cache[i] = self.tokenizer.decode([i])
            out.append(s)
        return out


def _rounded(t: torch.Tensor, digits: int = 5) -> list:
    """Values rounded to ``digits`` decimals (as short JSON numbers; no -0.0)."""
    scale = 10.0**digits
    return ((t.double() * scale).round() / scale + 0.0).tolist()


def layer_records(
    stats: LayerStats,
    example_acts: torch.Tensor,
    window_tokens: dict[int, list[str]],
    extra: dict[str, Any],
) -> list[dict[str, Any]]:
    """The per-feature JSON of one layer (circuit-tracer's fields, without logits, histogram
    and quantiles); ``example_acts [d_t, slots, context]``.

    Examples show the window without its BOS: ``tokens`` (strings), ``tokens_acts_list`` (this
    feature's activation per token) and ``train_token_ind`` (the token with the largest one).
    ``is_repeated_datapoint`` marks a window that an earlier bucket already shows.
    """
    slots = stats.example_slots().tolist()
    acts = _rounded(example_acts[:, :, 1:].float())
    fired = (stats.fire_count > 0).tolist()
    act_min, act_max = stats.act_min.tolist(), stats.act_max.tolist()
    records = []
    for f, buckets in enumerate(stats.all_buckets()):
        seen: set[int] = set()
        quantiles = []
        for name, slot_ids, _scores in buckets:
            examples = []
            for s in slot_ids:
                win, a = slots[f][s], acts[f][s]
                examples.append(
                    {
                        "tokens": window_tokens[win],
                        "tokens_acts_list": a,
                        "train_token_ind": max(range(len(a)), key=a.__getitem__),
                        "is_repeated_datapoint": win in seen,
                    }
                )
                seen.add(win)
            quantiles.append({"quantile_name": name, "examples": examples})
        records.append(
            {
                **extra,
                "index": f,
                "examples_quantiles": quantiles,
                "act_min": act_min[f] if fired[f] else 0.0,
                "act_max": act_max[f],
            }
        )
    return records


def _write_layer(
    writer: LayerWriter,
    model: ReplacementModel,
    layer: int,
    state: _State,
    example_acts: torch.Tensor,
    settings: BuildSettings,
    window_tokens: dict[int, list[str]],
    tokens: _Tokens,
    transcoder_id: str,
) -> None:
    stats = state.layers[layer]
    top, bottom = top_bottom_logits(model, layer, settings.n_logits)
    hist = _rounded(stats.histogram(settings.histogram_bins), 3)
    quant = _rounded(stats.quantile_values())
    fired = (stats.fire_count > 0).tolist()
    freq = (stats.fire_count.double() / max(state.tokens_done, 1)).tolist()
    extra = {"transcoder_id": transcoder_id, "layer": layer}
    records = layer_records(stats, example_acts, window_tokens, extra)
    for f, (rec, t, b) in enumerate(zip(records, top.tolist(), bottom.tolist(), strict=True)):
        rec["top_logits"] = tokens(t)
        rec["bottom_logits"] = tokens(b)
        rec["quantile_values"] = quant[f] if fired[f] else []
        rec["histogram"] = hist[f]
        rec["activation_frequency"] = freq[f]
        writer.add(rec)


def _install(tmp: Path, final: Path, overwrite: bool) -> None:
    if final.exists():
        if not overwrite:
            raise FileExistsError(f"{final} already exists; pass --overwrite to replace it.")
        old = final.with_name(f".{final.name}-old-{uuid.uuid4().hex}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)


# ---- the whole build -----------------------------------------------------------------------------
def build_dashboards(
    model: ReplacementModel,
    texts: Iterable[str],
    out_dir: str | Path,
    settings: BuildSettings | None = None,
    *,
    transcoder_id: str | None = None,
    overwrite: bool = False,
    restart: bool = False,
    verbose: bool = True,
) -> Path:
    """Builds ``out_dir/features`` (module docstring); returns that directory.

    An existing store is refused unless ``overwrite``; a checkpoint of an interrupted build
    with the same settings is resumed unless ``restart``.
    """
    settings = settings or BuildSettings()
    out_dir = Path(out_dir)
    final = out_dir / STORE_DIR
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists; pass --overwrite to rebuild it.")
    t0 = time.perf_counter()
    d_t = model.transcoders.d_transcoder
    state = _State([LayerStats(d_t, settings.stats) for _ in range(model.n_layers)])
    identity = _identity(model, settings)
    ckpt = out_dir / CHECKPOINT_DIR / CHECKPOINT_NAME
    resumed_from = 0
    if ckpt.is_file() and not restart:
        _load_checkpoint(ckpt, identity, state)
        resumed_from = state.windows_done

    def save() -> None:
        _save_checkpoint(ckpt, identity, state)

    _stream(model, texts, settings, state, save, verbose)
    save()  # an interruption from here on skips the streaming
    t2 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".features-tmp-", dir=out_dir))
    tokens = _Tokens(model.tokenizer)
    window_tokens = {i: tokens(t[1:].tolist()) for i, t in state.bank.items()}
    tid = transcoder_id or model.transcoders.name or "transcoders"
    entries = []
    for layer in tqdm(range(model.n_layers), desc="features: writing", disable=not verbose):
        writer = LayerWriter(tmp, layer)
        try:
            _write_layer(
                writer,
                model,
                layer,
                state,
                state.layers[layer].example_acts(),
                settings,
                window_tokens,
                tokens,
                tid,
            )
        finally:
            entries.append(writer.close())
    write_index(tmp, entries)
    t3 = time.perf_counter()
    meta = {
        "model": model.name,
        "transcoders": tid,
        "transcoder_set": transcoder_set_record(model.transcoders, model.name),
        "n_layers": model.n_layers,
        "d_transcoder": d_t,
        "settings": asdict(settings),
        "windows": state.windows_done,
        "tokens": state.tokens_done,
        "resumed_from_window": resumed_from,
        "seconds": {
            "stream": round(state.stream_seconds, 2),
            "write": round(t3 - t2, 2),
            "this_run": round(t3 - t0, 2),
        },
        "torch_threads": torch.get_num_threads(),
    }
    (tmp / "build.json").write_text(json.dumps(meta, indent=2))
    _install(tmp, final, overwrite)
    shutil.rmtree(out_dir / CHECKPOINT_DIR, ignore_errors=True)
    return final
