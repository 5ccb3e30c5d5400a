"""Per-head pattern metrics and token-to-token flow.

For a head's pattern ``A [q, k]`` (rows sum to 1 over the causal keys), averaged over query
positions ``q >= 1`` (position 0 can only attend to itself):

* ``entropy = mean_q  -sum_k A[q, k] log A[q, k]`` (nats; 0 = one key, ``log(q + 1)`` = uniform);
* ``concentration = mean_q max_k A[q, k]`` (1 = always exactly one key);
* ``value_norm = mean_q |head_out[q]|``, the L2 norm of what the head writes to the residual
  (``sum_k A[q, k] v_k W_O``: attention weighted by value vectors, Kobayashi et al. 2020);
* ``sink = mean_q A[q, 0]``, the mass on the first position (a BOS "attention sink").

Averages over all queries, including ``q = 0``, would make every head look more focused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .trace import Trace


@dataclass
class HeadMetrics:
    """``[layer, head]`` tensors (see the module docstring for the formulas)."""

    entropy: torch.Tensor
    concentration: torch.Tensor
    value_norm: torch.Tensor
    sink: torch.Tensor


def _queries(patterns: torch.Tensor) -> torch.Tensor:
    """``patterns [..., q, k]`` restricted to the queries ``q >= 1`` (all of them if only one)."""
    return patterns[..., 1:, :] if patterns.shape[-2] > 1 else patterns


def pattern_metrics(patterns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``entropy``, ``concentration``, ``sink`` of ``patterns [..., q, k]`` -> ``[...]``."""
    a = _queries(patterns).double()
    plogp = torch.where(a > 0, a * a.clamp_min(1e-300).log(), torch.zeros_like(a))
    entropy = (-plogp.sum(-1)).mean(-1)
    concentration = a.amax(-1).mean(-1)
    sink = a[..., 0].mean(-1)
    dtype = patterns.dtype
    return entropy.to(dtype), concentration.to(dtype), sink.to(dtype)


@torch.inference_mode()
def head_metrics(trace: Trace) -> HeadMetrics:
    entropy, concentration, sink = pattern_metrics(trace.patterns)
    norms = torch.stack(
        [trace.head_out(layer).norm(dim=-1) for layer in range(trace.lab.n_layers)]
    )  # [layer, pos, head]
    value_norm = (norms[:, 1:] if norms.shape[1] > 1 else norms).mean(1)
    return HeadMetrics(entropy, concentration, value_norm, sink)


def token_flow(patterns: torch.Tensor) -> torch.Tensor:
    """``[layer, q, k]``: attention summed over heads (``sum_h A[l, h, q, k]``).

    Each row sums to ``n_heads``; sum over layers too for the whole model's flow.
    """
    return patterns.sum(1)
