"""Ground truth for attribution tests: direct effects measured by perturbing the frozen model.

``direct_effects`` re-runs the Hugging Face model with attention patterns and norm scales
replayed from the clean run and every layer's transcoder output point frozen at its clean value
(only the linear skip path stays live). Adding a source's vector once more then changes every
target by exactly that source's direct effect. It shares no code with the attribution engine's
backward sweep.
"""

from __future__ import annotations

import torch

from circuitlab.models.session import Plan
from circuitlab.replacement import ReplacementModel
from circuitlab.transcoders.base import SparseActivations


def frozen_plan(
    model: ReplacementModel,
    cap,
    delta: torch.Tensor | None = None,
    embed_delta: torch.Tensor | None = None,
) -> Plan:
    """The frozen local replacement model with ``delta [layer, pos, d]`` added at write points."""
    tc = model.transcoders
    reads, writes = cap.stacked_reads(), cap.stacked_writes()

    def write(layer: int, read: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        value = writes[layer].clone()
        if tc.has_skip:
            value = value + tc.skip(layer, read[0]) - tc.skip(layer, reads[layer])  # type: ignore[operator]
        if delta is not None:
            value = value + delta[layer]
        return value[None]

    def embed(x: torch.Tensor) -> torch.Tensor:
        return x if embed_delta is None else x + embed_delta[None]

    return Plan(
        record=True, attention="replay", norms="replay", frozen=cap, mlp_out=write, embed=embed
    )


def target_values(
    model: ReplacementModel, cap, features: SparseActivations, logit_vecs: torch.Tensor
) -> torch.Tensor:
    """``[n_active + n_logits]``: each active feature's pre-activation minus b_enc, then each
    logit direction read at the final norm's output at the last position."""
    tc = model.transcoders
    reads = cap.stacked_reads()
    idx = features.indices
    vals = torch.empty(len(idx), dtype=reads.dtype)
    for layer in range(tc.n_layers):
        sel = (idx[:, 0] == layer).nonzero(as_tuple=True)[0]
        if sel.numel():
            enc = tc.encoder_rows(layer, idx[sel, 2]).to(reads.dtype)
            vals[sel] = (reads[layer, idx[sel, 1]] * enc).sum(-1)
    logits = cap.final[0, -1] @ logit_vecs.T.to(reads.dtype)
    return torch.cat([vals, logits])


@torch.no_grad()
def direct_effects(
    model: ReplacementModel,
    ids: torch.Tensor,
    features: SparseActivations,
    errors: torch.Tensor,
    logit_vecs: torch.Tensor,
) -> torch.Tensor:
    """Dense direct-effect matrix ``[n_active + n_logits, n_active + n_layers*n_pos + n_pos]``."""
    tc = model.transcoders
    _, clean = model.run(ids[None], Plan(record=True))
    assert clean is not None
    n_layers, n_pos, d = errors.shape
    base_cap = model.run(ids[None], frozen_plan(model, clean))[1]
    base = target_values(model, base_cap, features, logit_vecs)
    cols = []

    def effect(delta=None, embed_delta=None) -> torch.Tensor:
        cap = model.run(ids[None], frozen_plan(model, clean, delta, embed_delta))[1]
        return target_values(model, cap, features, logit_vecs) - base

    for (layer, pos, feat), val in zip(
        features.indices.tolist(), features.values.tolist(), strict=True
    ):
        dec = tc.decoder_rows(layer, torch.tensor([feat]))[0].to(errors.dtype)  # [n_out, d]
        delta = torch.zeros_like(errors)
        delta[layer : layer + dec.shape[0], pos] = val * dec
        cols.append(effect(delta))
    for layer in range(n_layers):
        for pos in range(n_pos):
            delta = torch.zeros_like(errors)
            delta[layer, pos] = errors[layer, pos]
            cols.append(effect(delta))
    assert clean.embed is not None
    for pos in range(n_pos):
        e = torch.zeros(n_pos, d, dtype=errors.dtype)
        e[pos] = clean.embed[0, pos]
        cols.append(effect(embed_delta=e))
    return torch.stack(cols, dim=1)
