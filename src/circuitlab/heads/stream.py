"""Results as JSON-able dicts, layer by layer, for a websocket (or a JSON-lines file).

``stream_analysis`` yields ``{"event": "start", ...}``, one ``{"event": "layer", ...}`` per layer
(patterns, metrics, scores, classes, DLA, the logit-lens row, token flow) and ``{"event":
"done", ...}``. ``stream_patching`` yields ``start``, one ``patch`` event per (kind, layer) as the
batched sweep completes it, and ``done``. ``stream_path_patching`` yields ``start``, one ``path``
event per sender layer (``values``: recovery per head) and ``done``. Floats are rounded to
``digits`` decimals; NaN becomes None.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch

from ..models.tokens import Prompt
from ._model import LabModel
from .classes import Thresholds, classify, head_scores
from .dla import Target, direct_logit_attribution
from .lens import logit_lens
from .metrics import head_metrics, token_flow
from .patching import KINDS, Kind, PatchPair, iter_patching, make_pair, sweep_sites
from .path_patching import INPUTS, Head, check_receivers, iter_path_patching
from .trace import run_trace


def _num(x: float, digits: int) -> float | None:
    return None if math.isnan(x) else round(x, digits)


def _nums(t: torch.Tensor, digits: int) -> Any:
    """A tensor as nested lists of rounded floats (NaN -> None)."""
    t = t.detach().double().cpu()
    if t.ndim == 0:
        return _num(float(t), digits)
    return (
        [_nums(row, digits) for row in t] if t.ndim > 1 else [_num(v, digits) for v in t.tolist()]
    )


def stream_analysis(
    lab: LabModel,
    prompt: Prompt,
    target: Target | None = None,
    *,
    pos: int = -1,
    top_k: int = 5,
    thresholds: Thresholds | None = None,
    digits: int = 4,
) -> Iterator[dict[str, Any]]:
    """Analyses ``prompt`` and yields its results layer by layer (see the module docstring)."""
    thresholds = thresholds or Thresholds()
    trace = run_trace(lab, prompt)
    dla = direct_logit_attribution(trace, target, pos)
    metrics = head_metrics(trace)
    scores = head_scores(trace.patterns, trace.tokens)
    classes = classify(scores, thresholds)
    lens = logit_lens(trace, dla.pos, k=top_k, target=dla.target.answer)
    flow = token_flow(trace.patterns)
    yield {
        "event": "start",
        "tokens": trace.token_strs(),
        "token_ids": trace.tokens.tolist(),
        "n_layers": lab.n_layers,
        "n_heads": lab.n_heads,
        "n_kv_heads": lab.spec.n_kv_heads,
        "pos": dla.pos,
        "target": {
            "answer": lab.token_str(dla.target.answer),
            "answer_id": dla.target.answer,
            "wrong": None if dla.target.wrong is None else lab.token_str(dla.target.wrong),
            "wrong_id": dla.target.wrong,
            "label": dla.target.label(lab),
        },
        "thresholds": vars(thresholds),
    }
    for layer in range(lab.n_layers):
        heads = []
        for h in range(lab.n_heads):
            heads.append(
                {
                    "head": h,
                    "class": classes[layer][h],
                    "pattern": _nums(trace.patterns[layer, h], digits),
                    "entropy": _num(float(metrics.entropy[layer, h]), digits),
                    "concentration": _num(float(metrics.concentration[layer, h]), digits),
                    "value_norm": _num(float(metrics.value_norm[layer, h]), digits),
                    "scores": {
                        name: _num(float(scores.get(name)[layer, h]), digits)
                        for name in ("previous_token", "duplicate_token", "induction", "sink")
                    },
                    "dla": _num(float(dla.heads[layer, h]), digits),
                }
            )
        yield {
            "event": "layer",
            "layer": layer,
            "heads": heads,
            "mlp_dla": _num(float(dla.mlps[layer]), digits),
            "attn_bias_dla": _num(float(dla.attn_bias[layer]), digits),
            "lens": _lens_row(lab, lens[layer + 1], digits),
            "flow": _nums(flow[layer], digits),
        }
    order = dla.heads.flatten().abs().argsort(descending=True)[:10].tolist()
    yield {
        "event": "done",
        "logit": _num(dla.total, digits),
        "dla_embed": _num(dla.embed, digits),
        "dla_const": _num(dla.const, digits),
        "lens_embed": _lens_row(lab, lens[0], digits),
        "top_heads": [
            {
                "layer": i // lab.n_heads,
                "head": i % lab.n_heads,
                "dla": _num(float(dla.heads.flatten()[i]), digits),
            }
            for i in order
        ],
    }


def _lens_row(lab: LabModel, row: Any, digits: int) -> dict[str, Any]:
    return {
        "layer": row.layer,
        "top": [
            {"token": lab.token_str(i), "id": i, "prob": _num(p, digits)}
            for i, p in zip(row.top_ids, row.top_probs, strict=True)
        ],
        "target_prob": None if row.target_prob is None else _num(row.target_prob, digits),
        "target_rank": row.target_rank,
    }


def stream_patching(
    lab: LabModel,
    clean: Prompt,
    corrupted: Prompt,
    target: Target | None = None,
    *,
    kinds: Sequence[Kind] = KINDS,
    pos: int = -1,
    batch_size: int = 256,
    digits: int = 4,
) -> Iterator[dict[str, Any]]:
    """Patching sweeps (heads over all positions; resid and mlp per position), layer by layer.

    ``patch`` events carry ``values``: ``[head]`` recoveries for heads, ``[pos]`` for resid/mlp.
    """
    pair = make_pair(lab, clean, corrupted, target or Target(), pos)
    n_pos = int(pair.clean.shape[0])
    started = False
    for kind in kinds:
        sites = sweep_sites(lab, kind, n_pos, per_position=kind != "head")
        for ends, lp in iter_patching(lab, pair, sites, batch_size=batch_size):
            if not started:
                started = True
                yield {
                    **_pair_start(lab, pair, ends.clean, ends.corrupted, digits),
                    "kinds": list(kinds),
                }
            yield {
                "event": "patch",
                "kind": kind,
                "layer": lp.layer,
                "values": _nums(lp.recovery, digits),
                "metric": _nums(lp.metric, digits),
            }
    yield {"event": "done"}


def _pair_start(
    lab: LabModel, pair: PatchPair, clean: float, corrupted: float, digits: int
) -> dict[str, Any]:
    """The ``start`` event fields every patching stream shares: tokens, target, endpoints."""
    return {
        "event": "start",
        "clean_tokens": [lab.token_str(int(t)) for t in pair.clean],
        "corrupted_tokens": [lab.token_str(int(t)) for t in pair.corrupted],
        "target": pair.target.label(lab),
        "pos": pair.pos,
        "clean_metric": _num(clean, digits),
        "corrupted_metric": _num(corrupted, digits),
    }


def stream_path_patching(
    lab: LabModel,
    clean: Prompt,
    corrupted: Prompt,
    target: Target | None = None,
    *,
    receivers: Literal["logits"] | Sequence[Head] = "logits",
    inputs: str = INPUTS,
    pos: int = -1,
    batch_size: int = 256,
    digits: int = 4,
) -> Iterator[dict[str, Any]]:
    """Path patching from every head to ``receivers`` (see ``path_patch``), layer by layer.

    ``path`` events carry ``values``: the ``[head]`` recoveries of one sender layer (0 for
    layers at or after the last receiver layer, which cannot reach it).
    """
    recv = check_receivers(lab, receivers, inputs)
    pair = make_pair(lab, clean, corrupted, target or Target(), pos)
    started = False
    for ends, layer, recovery, metric in iter_path_patching(lab, pair, recv, batch_size=batch_size):
        if not started:
            started = True
            yield {
                **_pair_start(lab, pair, ends.clean, ends.corrupted, digits),
                "receivers": recv.label(),
                "receiver_heads": [list(h) for h in recv.heads],
                "inputs": "" if recv.logits else recv.inputs,
                "n_layers": lab.n_layers,
                "n_heads": lab.n_heads,
            }
        yield {
            "event": "path",
            "layer": layer,
            "values": _nums(recovery, digits),
            "metric": _nums(metric, digits),
        }
    yield {"event": "done"}
