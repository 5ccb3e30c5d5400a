"""Checking a reduced circuit by intervention: does ablating a supernode move the target logit
the way the reduced graph says?

For each supernode ``S`` (members zero-ablated with ``interventions.ablate_nodes``), on the
target ``logit - mean(logits)`` (what the graph's logit edges measure):

* **direct**: predicted ``-R[logit, S]``; measured with every layer constrained (every other
  feature and error held at its clean value, attention and norms frozen), where it is exact up
  to float rounding: a check of the edge sums;
* **total**: measured with features recomputed downstream (``constrained_layers=None``,
  attention frozen). Predicted by propagating the ablation linearly through the reduced graph:
  a supernode's value ``v_U`` is its members' summed activation, a change ``δ_U`` moves
  supernode ``T`` by ``Σ_U R[T, U] / v_U · δ_U`` (members stay active, their activation
  following their input), ``δ_S = -v_S``, and the logit by ``Σ_U R[logit, U] / v_U · δ_U``.
  Features outside the pruned graph, errors and tokens stay fixed, so "roughly" is the word.

The report gives each supernode's predicted and measured changes, whether the signs agree,
and the Pearson correlation of predicted and measured over the supernodes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from circuitlab.circuits.circuit import Circuit
    from circuitlab.replacement import ReplacementModel


@dataclass(frozen=True)
class SupernodeEffect:
    """The target logit's change (``logit - mean(logits)``) when one supernode is ablated."""

    supernode: str
    label: str
    n_members: int
    predicted: float
    measured: float
    predicted_direct: float
    measured_direct: float

    @property
    def sign_agrees(self) -> bool:
        """Whether predicted and measured total changes have the same sign (or are both ~0)."""
        tiny = 1e-9
        if abs(self.predicted) < tiny and abs(self.measured) < tiny:
            return True
        return self.predicted * self.measured > 0


@dataclass(frozen=True)
class Agreement:
    """Per-supernode effects and their agreement (module docs)."""

    target: str
    effects: list[SupernodeEffect]
    sign_agreement: float  # share of supernodes whose total change has the predicted sign
    correlation: float  # Pearson, predicted vs measured total change (NaN under 2 supernodes)
    direct_correlation: float  # the same for the direct change
    direct_max_error: float  # largest |predicted - measured| direct change

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data (NaN correlations as ``None``)."""
        from circuitlab.validation.files import json_ready

        data = asdict(self)
        for row, effect in zip(data["effects"], self.effects, strict=True):
            row["sign_agrees"] = effect.sign_agrees
        return json_ready(data)

    def table(self) -> str:
        """A markdown table of the effects and the summary line."""
        lines = [
            f"ablating each supernode: target {self.target!r} (logit - mean logit)",
            "",
            "| supernode | label | members | predicted | measured | sign | direct pred. "
            "| direct meas. |",
            "|---|---|---:|---:|---:|:-:|---:|---:|",
        ]
        for e in self.effects:
            lines.append(
                f"| {e.supernode} | {e.label} | {e.n_members} | {e.predicted:+.4f} | "
                f"{e.measured:+.4f} | {'yes' if e.sign_agrees else 'no'} | "
                f"{e.predicted_direct:+.4f} | {e.measured_direct:+.4f} |"
            )
        lines += [
            "",
            f"sign agreement {self.sign_agreement:.2f}, correlation {self.correlation:.3f} "
            f"(direct: correlation {self.direct_correlation:.3f}, max error "
            f"{self.direct_max_error:.2e})",
        ]
        return "\n".join(lines)


def predicted_changes(circuit: Circuit, logit: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(total[K], direct[K])``: the predicted change of logit target ``logit`` when each of
    the ``K`` supernodes is ablated (module docs)."""
    k = len(circuit.supernodes)
    r = circuit.reduced_edges
    row = r[circuit.logit_group(logit), :k]
    values = circuit.supernode_values().clamp(min=1e-12)
    per_unit = r[:k, :k] / values[None, :]  # M[T, U]
    total = torch.zeros(k, dtype=torch.float64)
    for s in range(k):
        rest = [u for u in range(k) if u != s]
        delta = torch.zeros(k, dtype=torch.float64)
        delta[s] = -values[s]
        if rest:
            idx = torch.tensor(rest)
            a = torch.eye(len(rest), dtype=torch.float64) - per_unit[idx][:, idx]
            delta[idx] = torch.linalg.solve(a, per_unit[idx, s] * delta[s])
        total[s] = (row / values * delta).sum()
    return total, -row


def check_circuit(circuit: Circuit, model: ReplacementModel, logit: int = 0) -> Agreement:
    """Ablate each supernode of ``circuit`` in ``model`` and compare with the prediction."""
    from circuitlab.interventions import ablate_nodes

    graph = circuit.graph
    target = graph.logit_targets[logit]
    if not 0 <= target.vocab_idx < graph.vocab_size:
        raise ValueError(
            f"logit target {target.token_str!r} is not a vocabulary token (a custom target); "
            "check a circuit of a token's logit"
        )
    predicted, direct = predicted_changes(circuit, logit)
    every_layer = list(range(graph.n_layers))
    effects = []
    for i, sn in enumerate(circuit.supernodes):
        measured = []
        for layers in (None, every_layer):
            check = ablate_nodes(
                model, graph, sn.nodes, target=target.vocab_idx, constrained_layers=layers, k=1
            )
            before, after = check.logits_before.double(), check.logits_after.double()
            change = (after[target.vocab_idx] - after.mean()) - (
                before[target.vocab_idx] - before.mean()
            )
            measured.append(float(change))
        effects.append(
            SupernodeEffect(
                sn.id,
                sn.label,
                len(sn.nodes),
                float(predicted[i]),
                measured[0],
                float(direct[i]),
                measured[1],
            )
        )
    return Agreement(
        target.token_str,
        effects,
        sum(e.sign_agrees for e in effects) / max(len(effects), 1),
        _pearson([e.predicted for e in effects], [e.measured for e in effects]),
        _pearson([e.predicted_direct for e in effects], [e.measured_direct for e in effects]),
        max((abs(e.predicted_direct - e.measured_direct) for e in effects), default=0.0),
    )


def _pearson(x: list[float], y: list[float]) -> float:
    if len(x) < 2:
        return math.nan
    a, b = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    a, b = a - a.mean(), b - b.mean()
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den > 0 else math.nan
