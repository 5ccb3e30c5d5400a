"""Circuit checks: does the circuit carry the answer?

``check_interventions`` runs a prompt with and without interventions (in the same mode) and
reports how the target logit and the top-k next tokens move. ``ablate_nodes`` ablates a node set
of a graph (necessity); ``ablate_outside`` ablates every feature and error node outside a
circuit, e.g. a pruned graph (sufficiency). Both zero-ablate by default; given ``means``
(``ablation_means``) they mean-ablate: a feature takes its reference mean activation, an error
node its reference mean error vector.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ..graph.graph import Graph
from ..models.tokens import Prompt
from ..replacement import ReplacementModel
from .intervene import feature_intervention
from .means import AblationMeans, mean_ablate_all_features, mean_ablations
from .nodes import NodeLike, NodeRef, node_interventions, resolve_node
from .spec import Intervention, InterventionLike


@dataclass(frozen=True)
class TokenShift:
    """One token's probability and rank (0 = top) before and after."""

    token: str
    token_id: int
    prob_before: float
    prob_after: float
    rank_before: int
    rank_after: int


@dataclass(frozen=True)
class CircuitCheck:
    """The effect of interventions on the next-token distribution at one position.

    ``target`` is the token being tested (``logit_*``, ``prob_*`` its values); ``top_before`` /
    ``top_after`` the top-k tokens of each run; ``logits_before/after [vocab]``.
    """

    target: TokenShift
    logit_before: float
    logit_after: float
    top_before: list[TokenShift]
    top_after: list[TokenShift]
    logits_before: torch.Tensor
    logits_after: torch.Tensor
    n_interventions: int

    @property
    def logit_change(self) -> float:
        return self.logit_after - self.logit_before

    @property
    def prob_change(self) -> float:
        return self.target.prob_after - self.target.prob_before

    def report(self) -> str:
        """A plain-text table of the change."""
        t = self.target
        lines = [
            f"target {t.token!r}: logit {self.logit_before:+.3f} -> {self.logit_after:+.3f} "
            f"({self.logit_change:+.3f}), p {t.prob_before:.3f} -> {t.prob_after:.3f}, "
            f"rank {t.rank_before} -> {t.rank_after}",
            f"{'before':<28}after",
        ]
        for b, a in zip(self.top_before, self.top_after, strict=True):
            lines.append(
                f"  {b.token!r:<16}{b.prob_before:6.3f}    {a.token!r:<16}{a.prob_after:6.3f}"
            )
        return "\n".join(lines)


def _shift(tok_id: int, before: torch.Tensor, after: torch.Tensor, names: list[str]) -> TokenShift:
    pb, pa = before.softmax(-1), after.softmax(-1)
    return TokenShift(
        names[0],
        tok_id,
        float(pb[tok_id]),
        float(pa[tok_id]),
        int((pb > pb[tok_id]).sum()),
        int((pa > pa[tok_id]).sum()),
    )


def _token_names(model: ReplacementModel, ids: list[int]) -> list[str]:
    if model.tokenizer is None:
        return [str(i) for i in ids]
    return [str(model.tokenizer.decode([i])) for i in ids]


def _target_id(model: ReplacementModel, target: int | str | None, before: torch.Tensor) -> int:
    if target is None:
        return int(before.argmax())
    if isinstance(target, int):
        if not 0 <= target < before.shape[-1]:
            raise ValueError(f"target token id {target} is outside the vocabulary.")
        return target
    if model.tokenizer is None:
        raise ValueError("this model has no tokenizer: give the target as a token id.")
    ids = model.tokenizer(target, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ValueError(f"target {target!r} is {len(ids)} tokens; give a single token.")
    return int(ids[0])


@torch.no_grad()
def check_interventions(
    model: ReplacementModel,
    prompt: Prompt,
    interventions: Iterable[InterventionLike],
    *,
    target: int | str | None = None,
    k: int = 10,
    position: int = -1,
    constrained_layers: Iterable[int] | None = None,
    freeze_attention: bool = True,
) -> CircuitCheck:
    """Next-token distribution at ``position`` without and with ``interventions``.

    ``target`` (token id or single-token string) defaults to the clean top token. Both runs use
    the same mode (``constrained_layers``, ``freeze_attention``).
    """
    items = list(interventions)
    layers = list(constrained_layers) if constrained_layers is not None else None

    def run(ivs: list[InterventionLike]) -> torch.Tensor:
        return feature_intervention(
            model,
            prompt,
            ivs,
            constrained_layers=layers,
            freeze_attention=freeze_attention,
            return_activations=False,
        ).logits

    before, after = run([]), run(items)
    lb, la = before[position].float(), after[position].float()
    tid = _target_id(model, target, lb)

    def top(logits: torch.Tensor) -> list[TokenShift]:
        ids = logits.topk(min(k, logits.shape[-1])).indices.tolist()
        return [_shift(i, lb, la, _token_names(model, [i])) for i in ids]

    return CircuitCheck(
        target=_shift(tid, lb, la, _token_names(model, [tid])),
        logit_before=float(lb[tid]),
        logit_after=float(la[tid]),
        top_before=top(lb),
        top_after=top(la),
        logits_before=lb,
        logits_after=la,
        n_interventions=len(items),
    )


def _graph_target(graph: Graph, target: int | str | None) -> int | str | None:
    if target is None and graph.logit_targets:
        return graph.logit_targets[0].vocab_idx
    return target


def ablate_nodes(
    model: ReplacementModel,
    graph: Graph,
    nodes: Iterable[NodeLike | NodeRef],
    *,
    target: int | str | None = None,
    k: int = 10,
    constrained_layers: Iterable[int] | None = None,
    freeze_attention: bool = True,
    means: AblationMeans | None = None,
) -> CircuitCheck:
    """Ablates ``nodes`` (ids, indices or ``NodeRef``s of ``graph``) on the graph's prompt.

    ``target`` defaults to the graph's first logit target. Nodes are set to 0, or with
    ``means`` to their reference means (mean ablation).
    """
    refs = [resolve_node(n, graph) for n in nodes]
    if means is not None:
        means.check(model)
    return check_interventions(
        model,
        graph.input_tokens,
        node_interventions(refs) if means is None else mean_ablations(refs, means),
        target=_graph_target(graph, target),
        k=k,
        constrained_layers=constrained_layers,
        freeze_attention=freeze_attention,
    )


def ablate_outside(
    model: ReplacementModel,
    graph: Graph,
    keep: torch.Tensor | Iterable[NodeLike | NodeRef],
    *,
    errors: bool = True,
    target: int | str | None = None,
    k: int = 10,
    constrained_layers: Iterable[int] | None = None,
    freeze_attention: bool = True,
    means: AblationMeans | None = None,
) -> CircuitCheck:
    """Ablates every active feature (selected or not) and, with ``errors``, every error node
    outside the circuit ``keep``: a node mask ``[N]`` (e.g. ``prune_graph(g).node_mask``) or
    nodes. Positions the graph zeroes (BOS) are left alone.

    With ``means`` (mean ablation) *every* feature outside the circuit, active or not, takes its
    reference mean (an inactive feature's mean is in general not 0), and error nodes their mean.
    """
    kept = _kept(graph, keep)
    pos_zeroed = set(range(graph.n_pos)[model.zero_positions])
    if means is None:
        ivs = node_interventions(_zero_outside(graph, kept, pos_zeroed, errors))
    else:
        means.check(model)
        ivs = _mean_outside(graph, kept, pos_zeroed, errors, means)
    return check_interventions(
        model,
        graph.input_tokens,
        ivs,
        target=_graph_target(graph, target),
        k=k,
        constrained_layers=constrained_layers,
        freeze_attention=freeze_attention,
    )


def _zero_outside(
    graph: Graph, kept: set[tuple[int, int, int | None]], pos_zeroed: set[int], errors: bool
) -> list[NodeRef]:
    """Active features and (with ``errors``) error nodes outside ``kept``."""
    refs: list[NodeRef] = []
    for layer, pos, feat in graph.active_features.tolist():
        if (layer, pos, feat) not in kept and pos not in pos_zeroed:
            refs.append(NodeRef("feature", layer, pos, feat))
    if errors:
        for layer in range(graph.n_layers):
            for pos in range(graph.n_pos):
                if (layer, pos, None) not in kept and pos not in pos_zeroed:
                    refs.append(NodeRef("error", layer, pos))
    return refs


def _mean_outside(
    graph: Graph,
    kept: set[tuple[int, int, int | None]],
    pos_zeroed: set[int],
    errors: bool,
    means: AblationMeans,
) -> list[Intervention]:
    """Every feature and (with ``errors``) error node outside ``kept``, set to its mean."""
    positions = [p for p in range(graph.n_pos) if p not in pos_zeroed]
    kept_feats: dict[tuple[int, int], set[int]] = {}
    for layer, pos, feat in kept:
        if feat is not None:
            kept_feats.setdefault((layer, pos), set()).add(feat)
    ivs: list[Intervention] = []
    for layer in range(graph.n_layers):
        for pos in positions:
            iv = mean_ablate_all_features(layer, pos, kept_feats.get((layer, pos), set()), means)
            if iv is not None:
                ivs.append(iv)
    if errors:
        refs = [
            NodeRef("error", layer, pos)
            for layer in range(graph.n_layers)
            for pos in positions
            if (layer, pos, None) not in kept
        ]
        ivs += mean_ablations(refs, means)
    return ivs


def _kept(
    graph: Graph, keep: torch.Tensor | Iterable[NodeLike | NodeRef]
) -> set[tuple[int, int, int | None]]:
    if isinstance(keep, torch.Tensor):
        if keep.dtype != torch.bool or keep.shape != (graph.n_nodes,):
            raise ValueError(
                f"keep must be a bool node mask of shape [{graph.n_nodes}] (prune_graph(g)"
                f".node_mask) or a list of nodes; got dtype {keep.dtype}, shape {tuple(keep.shape)}."
            )
        nodes: list[NodeLike | NodeRef] = [
            int(i) for i in keep.nonzero(as_tuple=True)[0].tolist() if i < graph.token_offset
        ]
    else:
        nodes = list(keep)
    refs = [resolve_node(n, graph) for n in nodes]
    return {(r.layer, r.pos, r.feature) for r in refs}
