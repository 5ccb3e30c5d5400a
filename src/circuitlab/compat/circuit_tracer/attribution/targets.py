"""circuit-tracer's target records: ``LogitTarget``, ``CustomTarget`` and raw target tuples.

``CustomTarget(token_str, prob, vec)`` and a raw ``(token_str, prob, vec)`` tuple become
circuitlab's ``CustomTarget(label, weight, vec)``; token strings and tensors of token ids pass
through unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from circuitlab.attribution.targets import CustomTarget as NativeCustomTarget
from circuitlab.attribution.targets import LogitDiff, resolve_targets
from circuitlab.attribution.targets import TargetSpec as NativeTargetSpec
from circuitlab.graph.targets import LogitTarget


class CustomTarget(NamedTuple):
    """A residual direction ``vec [d_model]`` attributed as one logit node.

    ``token_str`` labels the node, ``prob`` weights it in influence and pruning.
    """

    token_str: str
    prob: float
    vec: torch.Tensor


TargetSpec = CustomTarget | tuple[str, float, torch.Tensor]


def native_targets(
    targets: Sequence[Any] | torch.Tensor | None,
) -> Sequence[NativeTargetSpec] | torch.Tensor | None:
    """circuit-tracer's ``attribution_targets`` as circuitlab's (see the module docstring)."""
    if targets is None or isinstance(targets, torch.Tensor):
        return targets
    if isinstance(targets, (str, CustomTarget)) or _is_raw(targets):
        targets = [targets]
    return [_native(t) for t in targets]


def _is_raw(spec: object) -> bool:
    return (
        isinstance(spec, tuple)
        and not isinstance(spec, (LogitDiff, NativeCustomTarget))
        and len(spec) == 3
        and isinstance(spec[0], str)
        and isinstance(spec[2], torch.Tensor)
    )


def _native(spec: Any) -> NativeTargetSpec:
    if isinstance(spec, NativeCustomTarget | LogitDiff):
        return spec
    if isinstance(spec, CustomTarget) or _is_raw(spec):
        label, prob, vec = spec
        return NativeCustomTarget(str(label), float(prob), vec)
    if isinstance(spec, (str, int)):
        return spec
    raise TypeError(
        f"unsupported attribution target {spec!r}: use a token string, a tensor of token ids, "
        "CustomTarget(token_str, prob, vec) or a (token_str, prob, vec) tuple"
    )


class AttributionTargets:
    """Resolved targets: ``logit_targets``, ``logit_probabilities [k]`` (weights) and
    ``logit_vectors [k, d_model]`` (de-meaned unembedding directions, or custom vectors).

    ``logits [vocab]`` is the last position's; ``unembed_proj`` is ``[d_model, vocab]``
    (TransformerLens' orientation) or ``[vocab, d_model]``.
    """

    def __init__(
        self,
        attribution_targets: Sequence[Any] | torch.Tensor | None,
        logits: torch.Tensor,
        unembed_proj: torch.Tensor,
        tokenizer: Any,
        *,
        max_n_logits: int = 10,
        desired_logit_prob: float = 0.95,
    ):
        vocab = logits.shape[-1]
        unembed = unembed_proj if unembed_proj.shape[1] != vocab else unembed_proj.T
        resolved = resolve_targets(
            native_targets(attribution_targets),
            logits,
            unembed,
            tokenizer,
            max_n_logits=max_n_logits,
            desired_logit_prob=desired_logit_prob,
        )
        self.tokenizer = tokenizer
        self._vocab_size = int(vocab)
        self.logit_targets: list[LogitTarget] = resolved.logit_targets
        self.logit_probabilities: torch.Tensor = resolved.weights
        self.logit_vectors: torch.Tensor = resolved.vecs

    def __len__(self) -> int:
        return len(self.logit_targets)

    def __repr__(self) -> str:
        shown = ", ".join(repr(t) for t in self.logit_targets[:3])
        more = ", ..." if len(self) > 3 else ""
        return f"AttributionTargets(n={len(self)}, targets=[{shown}{more}])"

    @property
    def tokens(self) -> list[str]:
        """Each target's label."""
        return [t.token_str for t in self.logit_targets]

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def token_ids(self) -> torch.Tensor:
        """Each target's vocabulary index (``>= vocab_size`` for custom targets)."""
        ids = [t.vocab_idx for t in self.logit_targets]
        return torch.tensor(ids, dtype=torch.long, device=self.logit_probabilities.device)

    def to(self, device: str | torch.device) -> AttributionTargets:
        """Moves the tensors to ``device`` in place; returns this object."""
        self.logit_probabilities = self.logit_probabilities.to(device)
        self.logit_vectors = self.logit_vectors.to(device)
        return self


__all__ = ["AttributionTargets", "CustomTarget", "LogitTarget", "TargetSpec", "native_targets"]
