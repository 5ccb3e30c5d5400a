"""Top and bottom logits of features: what each decoder direction promotes and suppresses.

For feature ``f`` with decoder direction ``d_f [d_model]`` the logit effect is

    effect_f = W_U @ (C(d_f) * w_eff)        [vocab]

where ``w_eff`` is the final norm's weight (``1 + w`` for Gemma), ``C`` removes the mean for
LayerNorm models (GPT-2) and is the identity for RMSNorm, and ``W_U [vocab, d_model]`` is the
unembedding. It is the direct path through the residual stream with the final norm's
per-position scale set to 1 (it only rescales a position's logits, so the ranking is the same).
``d_f`` is the feature's decoder row for per-layer transcoders; for cross-layer transcoders it
is the **sum** of the feature's decoder rows over all the layers it writes to (everything it
adds to the residual stream). Softcaps are ignored.
"""

from __future__ import annotations

import torch

from ..models.adapters import get_module
from ..replacement import ReplacementModel


def decoder_directions(model: ReplacementModel, layer: int) -> torch.Tensor:
    """``[d_t, d_model]``: each feature's decoder row (summed over output layers for a CLT)."""
    tc = model.transcoders
    rows = tc.decoder_rows(layer, torch.arange(tc.d_transcoder))  # [d_t, n_out, d]
    return rows.sum(1).float()


@torch.no_grad()
def logit_effects(model: ReplacementModel, directions: torch.Tensor) -> torch.Tensor:
    """``[n, vocab]`` logit effects of residual directions ``[n, d_model]`` (module docstring)."""
    norm = get_module(model.model, model.adapter.final_norm)
    w = norm.weight.detach().float()  # type: ignore[union-attr]
    if model.adapter.norm == "rms_gemma":
        w = 1.0 + w
    d = directions.float().to(w.device)
    if model.adapter.norm == "layernorm":
        d = d - d.mean(-1, keepdim=True)
    return (d * w) @ model.unembed_weight.detach().float().T


def top_bottom_logits(
    model: ReplacementModel, layer: int, k: int = 10, chunk: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``[d_t, k]`` of the largest and of the smallest logit effects of each feature."""
    dirs = decoder_directions(model, layer)
    tops, bottoms = [], []
    for start in range(0, dirs.shape[0], chunk):
        eff = logit_effects(model, dirs[start : start + chunk])
        kk = min(k, eff.shape[1])
        tops.append(eff.topk(kk, dim=1).indices.cpu())
        bottoms.append(eff.topk(kk, dim=1, largest=False).indices.cpu())
    return torch.cat(tops), torch.cat(bottoms)
