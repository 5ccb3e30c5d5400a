"""The logit lens: what the residual stream would predict if the model stopped at a layer.

``lens[l] = W_U . N_final(resid[l])`` with the final norm recomputed on ``resid[l]`` (its own,
live scale), for ``l = 0`` (the embeddings) to ``n_layers`` (the final residual, which gives the
model's own logits before any softcap).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .trace import Trace


@dataclass
class LensRow:
    """One layer of the lens at one position: the top tokens and the target's standing."""

    layer: int
    top_ids: list[int]
    top_probs: list[float]
    target_logit: float | None
    target_prob: float | None
    target_rank: int | None


@torch.inference_mode()
def lens_logits(trace: Trace, pos: int = -1) -> torch.Tensor:
    """``[layer + 1, vocab]`` lens logits at ``pos`` (row ``n_layers`` = the model's logits)."""
    return trace.unembed(trace.final_norm(trace.resid[:, pos]))


@torch.inference_mode()
def logit_lens(
    trace: Trace, pos: int = -1, *, k: int = 5, target: int | None = None
) -> list[LensRow]:
    """Top-``k`` tokens per layer at ``pos`` (and the rank of ``target``, if given)."""
    logits = lens_logits(trace, pos).double()
    probs = logits.softmax(-1)
    top = probs.topk(min(k, probs.shape[-1]), dim=-1)
    rows = []
    for layer in range(logits.shape[0]):
        t_logit = t_prob = t_rank = None
        if target is not None:
            t_logit = float(logits[layer, target])
            t_prob = float(probs[layer, target])
            t_rank = int((logits[layer] > logits[layer, target]).sum())
        rows.append(
            LensRow(
                layer=layer,
                top_ids=top.indices[layer].tolist(),
                top_probs=top.values[layer].tolist(),
                target_logit=t_logit,
                target_prob=t_prob,
                target_rank=t_rank,
            )
        )
    return rows
