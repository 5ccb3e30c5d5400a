"""One recorded forward pass: everything the heads analyses read.

All tensors are for one prompt (no batch axis). Axis names: ``layer``, ``head``, ``q``/``k``
(query/key positions), ``pos``, ``d`` (d_model), ``dh`` (d_head).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.norms import norm_apply, norm_scale
from ..models.session import Plan, hooked
from ..models.tokens import Prompt
from ._model import LabModel
from ._taps import taps

# The MLP's contribution is read where it joins the residual (after Gemma's post-norm).
MLP_IN, MLP_OUT = "mlp.hook_in", "hook_mlp_out"


@dataclass
class Trace:
    """A prompt's forward pass, recorded.

    ``tokens [pos]``; ``patterns [layer, head, q, k]``; ``z [layer, pos, head, dh]`` the heads'
    outputs before the output projection; ``resid [layer + 1, pos, d]`` the residual stream
    entering each block (``resid[n_layers]`` enters the final norm); ``mlp_out [layer, pos, d]``
    what each MLP adds to the residual; ``attn_scale [layer, pos, 1]`` Gemma's post-attention
    norm scale (None elsewhere); ``final_scale [pos, 1]``; ``logits [pos, vocab]`` before any
    softcap.
    """

    lab: LabModel
    tokens: torch.Tensor
    patterns: torch.Tensor
    z: torch.Tensor
    resid: torch.Tensor
    mlp_out: torch.Tensor
    attn_scale: torch.Tensor | None
    final_scale: torch.Tensor
    logits: torch.Tensor

    @property
    def n_pos(self) -> int:
        return int(self.tokens.shape[0])

    def token_strs(self) -> list[str]:
        return [self.lab.token_str(int(t)) for t in self.tokens]

    def head_out(self, layer: int, pos: int | slice = slice(None)) -> torch.Tensor:
        """What each head adds to the residual: ``[pos, head, d]`` (``[head, d]`` for an int).

        ``z_h @ W_O[:, h].T``, times Gemma's frozen post-attention norm (RMS, so linear once its
        scale is fixed). The output projection's bias is not in any head (see ``attn_bias``).
        """
        attn = self.lab.blocks()[layer].get_submodule(self.lab.adapter.attn)
        w_o = self.lab.adapter.out_weight(attn)  # [d, head * dh]
        n_heads, dh = self.z.shape[-2:]
        w_o = w_o.reshape(w_o.shape[0], n_heads, dh)
        out = torch.einsum("...hk,dhk->...hd", self.z[layer, pos], w_o.to(self.z.dtype))
        return self._post_attn(layer, pos, out, per_head=True)

    def attn_bias(self, layer: int, pos: int | slice = slice(None)) -> torch.Tensor:
        """What the output projection's bias adds to the residual: ``[pos, d]`` (or ``[d]``)."""
        block = self.lab.blocks()[layer]
        proj = block.get_submodule(self.lab.adapter.attn).get_submodule(self.lab.adapter.out_proj)
        bias = getattr(proj, "bias", None)
        shape = self.resid[0, pos].shape
        if bias is None:
            return torch.zeros(shape, dtype=self.resid.dtype, device=self.resid.device)
        out = bias.to(self.resid.dtype).expand(shape)
        return self._post_attn(layer, pos, out, per_head=False)

    def _post_attn(
        self, layer: int, pos: int | slice, x: torch.Tensor, *, per_head: bool
    ) -> torch.Tensor:
        name = self.lab.adapter.post_attn_norm
        if name is None or self.attn_scale is None:
            return x
        norm = self.lab.blocks()[layer].get_submodule(name)
        scale = self.attn_scale[layer, pos]
        if per_head:
            scale = scale.unsqueeze(-2)
        # Linear in x with the scale frozen: no centring, no bias for RMS norms.
        return norm_apply(self.lab.adapter.norm, norm, x, scale)

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The final norm applied to residual vectors ``[..., d]`` with their own (live) scale."""
        norm = self.lab.module(self.lab.adapter.final_norm)
        kind = self.lab.adapter.norm
        return norm_apply(kind, norm, x, norm_scale(kind, norm, x).to(x.dtype))

    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (before any softcap) of final-norm outputs ``[..., d] -> [..., vocab]``."""
        lm_head = self.lab.module(self.lab.adapter.unembed)
        return lm_head(x.to(lm_head.weight.dtype)).to(x.dtype)  # type: ignore[union-attr,operator]


@torch.inference_mode()
def run_trace(lab: LabModel, prompt: Prompt) -> Trace:
    """Runs ``prompt`` once and records a ``Trace``."""
    ids = lab.tokens(prompt)
    n_heads = lab.n_heads
    zs: dict[int, torch.Tensor] = {}
    resid: dict[int, torch.Tensor] = {}

    def keep_z(layer: int, x: torch.Tensor) -> None:
        zs[layer] = x[0].reshape(x.shape[1], n_heads, -1)

    def keep_resid(layer: int, x: torch.Tensor) -> None:
        resid[layer] = x[0]

    with (
        hooked(lab.model, lab.adapter, Plan(record=True), MLP_IN, MLP_OUT) as cap,
        taps(lab.model, lab.adapter, z=keep_z, resid_pre=keep_resid, final_in=keep_resid),
    ):
        lab.model(input_ids=ids[None], use_cache=False, logits_to_keep=1)
    assert cap is not None and cap.final is not None and cap.final_scale is not None
    n = lab.n_layers
    resid[n] = resid.pop(-1)
    attn_scales = cap.scales.get("post_attn_norm")
    trace = Trace(
        lab=lab,
        tokens=ids,
        patterns=torch.stack([cap.patterns[i][0] for i in range(n)]),
        z=torch.stack([zs[i] for i in range(n)]),
        resid=torch.stack([resid[i] for i in range(n + 1)]),
        mlp_out=torch.stack([cap.writes[i][0] for i in range(n)]),
        attn_scale=(
            torch.stack([attn_scales[i][0] for i in range(n)]).to(ids.device)
            if attn_scales
            else None
        ),
        final_scale=cap.final_scale[0],
        logits=torch.empty(0),
    )
    trace.logits = trace.unembed(cap.final[0])
    return trace
