"""Direct logit attribution: each head's and each MLP's direct effect on one logit (difference).

The residual entering the final norm is a sum of parts: ``resid = embed + sum_l (sum_h
head[l, h] + attn_bias[l] + mlp[l])``. With the final norm's scale ``s`` frozen at its value on
the prompt, the norm is affine, ``N(x) = C(x) * s * w + b`` (``C`` centres for LayerNorm), so a
logit direction ``u`` (``W_U[answer]``, or ``W_U[answer] - W_U[wrong]`` for a difference) reads

    logit . u = sum_parts part . g + const,   g = C(s * w * u),   const = b . u (+ b_U . u)

exactly. ``DLA.heads[l, h] = head[l, h] . g``; the parts sum to the model's (pre-softcap) logit
or logit difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.norms import norm_transpose
from ._model import LabModel, TokenRef
from .trace import Trace


@dataclass(frozen=True)
class Target:
    """``logit[answer]``, or ``logit[answer] - logit[wrong]`` when ``wrong`` is given.

    ``answer=None`` means the model's top prediction at the position.
    """

    answer: TokenRef | None = None
    wrong: TokenRef | None = None


@dataclass(frozen=True)
class ResolvedTarget:
    answer: int
    wrong: int | None

    def label(self, lab: LabModel) -> str:
        a = repr(lab.token_str(self.answer))
        return a if self.wrong is None else f"{a} - {lab.token_str(self.wrong)!r}"


def resolve_target(
    lab: LabModel, target: Target, logits: torch.Tensor | None = None
) -> ResolvedTarget:
    """Token ids of a target; ``logits [vocab]`` picks the answer when none is given."""
    if target.answer is None:
        if logits is None:
            raise ValueError("A target without an answer token needs the logits to pick one.")
        answer = int(logits.argmax())
    else:
        answer = lab.token_id(target.answer)
    wrong = None if target.wrong is None else lab.token_id(target.wrong)
    if wrong == answer:
        raise ValueError("The answer and wrong tokens are the same; a difference would be 0.")
    return ResolvedTarget(answer, wrong)


def unembed_direction(lab: LabModel, target: ResolvedTarget) -> tuple[torch.Tensor, float]:
    """``u [d]`` and the unembedding bias term of the target."""
    lm_head = lab.module(lab.adapter.unembed)
    w: torch.Tensor = lm_head.weight  # type: ignore[assignment]
    u = w[target.answer] - (w[target.wrong] if target.wrong is not None else 0)
    bias: torch.Tensor | None = getattr(lm_head, "bias", None)
    c = 0.0
    if bias is not None:
        c = float(bias[target.answer] - (bias[target.wrong] if target.wrong is not None else 0))
    return u, c  # type: ignore[return-value]


@dataclass
class DLA:
    """Direct logit attribution at one position.

    ``heads [layer, head]``, ``mlps [layer]``, ``attn_bias [layer]``, ``embed`` (the direct path
    from the token and position embeddings) and ``const`` (final-norm and unembedding biases)
    sum to ``total``, the pre-softcap logit (difference) the model computed.
    """

    target: ResolvedTarget
    pos: int
    heads: torch.Tensor
    mlps: torch.Tensor
    attn_bias: torch.Tensor
    embed: float
    const: float
    total: float

    def parts_sum(self) -> float:
        return float(
            self.heads.sum() + self.mlps.sum() + self.attn_bias.sum() + self.embed + self.const
        )


def readout(trace: Trace, target: ResolvedTarget, pos: int) -> tuple[torch.Tensor, float]:
    """``g [d]`` with ``resid . g + const`` the target's logit (difference) at ``pos``."""
    lab = trace.lab
    norm = lab.module(lab.adapter.final_norm)
    u, const = unembed_direction(lab, target)
    u = u.to(trace.resid.dtype)
    g = norm_transpose(lab.adapter.norm, norm, u, trace.final_scale[pos])
    b = getattr(norm, "bias", None)
    if b is not None and lab.adapter.norm == "layernorm":
        const += float(b.to(u.dtype) @ u)
    return g, const


@torch.inference_mode()
def direct_logit_attribution(trace: Trace, target: Target | None = None, pos: int = -1) -> DLA:
    """Each component's direct contribution to the target's logit (difference) at ``pos``."""
    pos = pos % trace.n_pos
    rt = resolve_target(trace.lab, target or Target(), trace.logits[pos])
    g, const = readout(trace, rt, pos)
    n = trace.lab.n_layers
    heads = torch.stack([trace.head_out(layer, pos) @ g for layer in range(n)])
    biases = torch.stack([trace.attn_bias(layer, pos) @ g for layer in range(n)])
    logits = trace.logits[pos]
    total = logits[rt.answer] - (logits[rt.wrong] if rt.wrong is not None else 0)
    return DLA(
        target=rt,
        pos=pos,
        heads=heads,
        mlps=trace.mlp_out[:, pos] @ g,
        attn_bias=biases,
        embed=float(trace.resid[0, pos] @ g),
        const=const,
        total=float(total),
    )
