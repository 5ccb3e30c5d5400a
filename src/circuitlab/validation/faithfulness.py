"""Faithfulness: does the pruned circuit carry the answer?

For each node threshold ``t`` the graph is pruned (``prune_graph(g, t, edge_threshold)``); the
circuit is its kept feature and error nodes. On the graph's prompt, in one intervention mode:

* **necessity**: ablate the circuit's nodes (``interventions.ablate_nodes``) and read the target
  logit and probability; a necessary circuit takes the answer away;
* **sufficiency**: ablate every active feature and error node *outside* the circuit
  (``interventions.ablate_outside``); a sufficient circuit keeps the answer;
* **scores**: replacement and completeness of the pruned subgraph
  (``graph.compute_subgraph_scores``: features outside it count as errors).

Two reference runs frame the curves: ``clean`` (no intervention) and ``all_ablated`` (every
active feature and, with ``errors=True``, every error node ablated). ``effect`` places a logit
between them: sufficiency ``(logit − all_ablated) / (clean − all_ablated)`` (share recovered by
the circuit alone), necessity ``(clean − logit) / (clean − all_ablated)`` (share removed by
ablating it).

With ``means`` (``interventions.ablation_means``) every ablation is a mean ablation: an ablated
feature takes its mean activation over reference prompts, an ablated error node its mean error
vector, and "everything outside the circuit" includes the inactive features (their mean is in
general not 0). The result records ``ablation``: ``"zero"`` or ``"mean"``.

A **pinned** subgraph (node ids from the lab) gets the same measurements without pruning.
The target is the graph's first logit target unless given.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from circuitlab.graph.export import node_ids
from circuitlab.graph.graph import Graph
from circuitlab.graph.pruning import check_fraction
from circuitlab.graph.scores import compute_graph_scores, compute_subgraph_scores
from circuitlab.interventions.checks import CircuitCheck, ablate_nodes, ablate_outside
from circuitlab.interventions.means import AblationMeans
from circuitlab.replacement import ReplacementModel
from circuitlab.validation.circuit import prune_kept
from circuitlab.validation.files import save_json

SCHEMA_VERSION = 1
DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
Mode = Literal["iterative", "constrained", "direct"]
Ablation = Literal["zero", "mean"]


@dataclass(frozen=True)
class Measurement:
    """The target after one run: ``logit`` (raw), ``logit_demeaned`` (``logit − mean(logits)``,
    what the graph's logit nodes attribute), ``prob``, ``rank`` (0 = top), and for ablation runs
    ``logit_change`` (vs clean) and ``effect`` (see the module docs; ``None`` when undefined)."""

    logit: float
    logit_demeaned: float
    prob: float
    rank: int
    logit_change: float | None = None
    effect: float | None = None


@dataclass(frozen=True)
class CircuitPoint:
    """Measurements of one circuit: a pruning threshold's (``node_threshold``) or pinned nodes."""

    node_threshold: float | None
    node_ids: list[str]
    n_features: int
    n_errors: int
    n_edges: int | None
    replacement: float
    completeness: float
    necessity: Measurement
    sufficiency: Measurement

    def to_json(self) -> dict[str, Any]:
        data = _clean_floats(asdict(self))
        if self.node_threshold is None:  # pinned: no threshold, no edge count
            del data["node_threshold"], data["n_edges"]
        return data


@dataclass
class Faithfulness:
    """Necessity and sufficiency curves and scores of a graph (``docs/validation.md``)."""

    slug: str
    prompt: str
    model_name: str
    transcoder_name: str | None
    mode: Mode
    constrained_layers: list[int] | None
    edge_threshold: float
    target_token: str
    target_id: int
    clean: Measurement
    all_ablated: Measurement
    replacement: float
    completeness: float
    points: list[CircuitPoint]
    pinned: CircuitPoint | None = None
    errors: bool = True
    ablation: Ablation = "zero"
    mean_reference: dict[str, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The faithfulness file's dict (schema ``circuitlab.faithfulness``)."""
        return {
            "kind": "circuitlab.faithfulness",
            "schema_version": SCHEMA_VERSION,
            "slug": self.slug,
            "prompt": self.prompt,
            "model_name": self.model_name,
            "transcoder_name": self.transcoder_name,
            "mode": self.mode,
            "constrained_layers": self.constrained_layers,
            "edge_threshold": self.edge_threshold,
            "ablate_errors": self.errors,
            "ablation": self.ablation,
            "mean_reference": self.mean_reference,
            "target": {"token": self.target_token, "token_id": self.target_id},
            "clean": _clean_floats(asdict(self.clean)),
            "all_ablated": _clean_floats(asdict(self.all_ablated)),
            "full_graph": _clean_floats(
                {"replacement": self.replacement, "completeness": self.completeness}
            ),
            "points": [p.to_json() for p in self.points],
            "pinned": self.pinned.to_json() if self.pinned is not None else None,
        }

    def save(self, path: str | Path) -> Path:
        """Write ``to_json()`` atomically; returns the path."""
        return save_json(path, self.to_json())

    def table(self) -> str:
        """A plain-text table of the curves."""
        c, z = self.clean, self.all_ablated
        how = self.mode if self.ablation == "zero" else f"{self.mode}, mean ablation"
        lines = [
            f"target {self.target_token!r} ({how}): clean logit {c.logit:+.3f} "
            f"p {c.prob:.3f}; all ablated logit {z.logit:+.3f} p {z.prob:.3f}",
            f"full graph: replacement {self.replacement:.3f}, completeness {self.completeness:.3f}",
            f"{'threshold':>9} {'feat':>5} {'err':>4} {'repl':>6} {'compl':>6} "
            f"{'necessity logit/p':>20} {'sufficiency logit/p':>21}",
        ]
        rows = [(f"{p.node_threshold:9.3f}", p) for p in self.points]
        if self.pinned is not None:
            rows.append((f"{'pinned':>9}", self.pinned))
        for name, p in rows:
            n, s = p.necessity, p.sufficiency
            lines.append(
                f"{name} {p.n_features:5d} {p.n_errors:4d} {p.replacement:6.3f} "
                f"{p.completeness:6.3f} {n.logit:+11.3f} {n.prob:7.3f} {s.logit:+12.3f} "
                f"{s.prob:7.3f}"
            )
        return "\n".join(lines)


def faithfulness(
    model: ReplacementModel,
    graph: Graph,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    *,
    edge_threshold: float = 0.98,
    pinned: Iterable[str] | None = None,
    target: int | str | None = None,
    constrained_layers: Iterable[int] | None = None,
    freeze_attention: bool = True,
    errors: bool = True,
    means: AblationMeans | None = None,
    slug: str = "graph",
) -> Faithfulness:
    """Necessity and sufficiency curves over ``thresholds`` (see the module docs).

    Args:
        model: the model (and transcoders) the graph was traced with.
        graph: the attribution graph.
        thresholds: node thresholds, each in [0, 1]; measured in ascending order.
        edge_threshold: edge pruning share, as in ``prune_graph``.
        pinned: node ids of a pinned subgraph (token and logit ids are accepted and ignored by
            the ablations).
        target: token id or single-token string; default the graph's first logit target.
        constrained_layers: intervention mode (``None`` iterative; every layer: direct effects).
        freeze_attention: keep attention patterns of the clean prompt.
        errors: whether sufficiency (and the all-ablated reference) also ablates error nodes.
        means: reference means (``ablation_means``) for mean ablation; None: zero ablation.
        slug: the graph's name in the lab.
    """
    for t in thresholds:
        check_fraction("node threshold", t)
    check_fraction("edge_threshold", edge_threshold)
    _check_model(model, graph)
    graph = graph.to("cpu")
    layers = sorted(set(constrained_layers)) if constrained_layers is not None else None
    run = _Runner(model, graph, target, layers, freeze_attention, errors, means)

    points = []
    for t in sorted(thresholds):
        pruned = prune_kept(graph, t, edge_threshold)
        points.append(run.point(pruned.node_mask, t, pruned.n_edges))
    pinned_point = None
    if pinned is not None:
        pinned_point = run.point(pinned_mask(graph, pinned), None, None, list(pinned))
    scores = compute_graph_scores(graph)
    return Faithfulness(
        slug=slug,
        prompt=graph.input_string,
        model_name=graph.model_name,
        transcoder_name=graph.transcoder_name,
        mode=_mode(layers, model.n_layers),
        constrained_layers=layers,
        edge_threshold=edge_threshold,
        target_token=run.target_token,
        target_id=run.target_id,
        clean=run.clean,
        all_ablated=run.all_ablated,
        replacement=scores.replacement,
        completeness=scores.completeness,
        points=points,
        pinned=pinned_point,
        errors=errors,
        ablation="zero" if means is None else "mean",
        mean_reference=None
        if means is None
        else {"n_prompts": means.n_prompts, "n_positions": means.n_positions},
    )


def pinned_mask(graph: Graph, pinned: Iterable[str]) -> torch.Tensor:
    """``[N]`` bool mask of the nodes named by lab node ids; unknown ids raise ``ValueError``."""
    index = {node_id: i for i, node_id in enumerate(node_ids(graph))}
    mask = torch.zeros(graph.n_nodes, dtype=torch.bool)
    for node_id in pinned:
        if node_id not in index:
            raise ValueError(
                f"pinned node {node_id!r} is not a node of this graph: use the lab's node ids "
                "(e.g. '12_4031_5' for a feature, '3_-1_2' for an error node)"
            )
        mask[index[node_id]] = True
    return mask


class _Runner:
    """Runs the ablations of one graph in one mode and turns them into measurements."""

    def __init__(
        self,
        model: ReplacementModel,
        graph: Graph,
        target: int | str | None,
        layers: list[int] | None,
        freeze_attention: bool,
        errors: bool,
        means: AblationMeans | None,
    ):
        self.model, self.graph, self.errors = model, graph, errors
        self.kwargs: dict[str, Any] = dict(
            target=target,
            k=1,
            constrained_layers=layers,
            freeze_attention=freeze_attention,
            means=means,
        )
        nothing = torch.zeros(graph.n_nodes, dtype=torch.bool)
        check = ablate_outside(model, graph, nothing, errors=errors, **self.kwargs)
        self.target_id = check.target.token_id
        self.target_token = check.target.token
        self.clean = _measure(check.logits_before, self.target_id)
        base = _measure(check.logits_after, self.target_id)
        self.all_ablated = _with_change(base, self.clean, base, "sufficiency")

    def point(
        self,
        mask: torch.Tensor,
        threshold: float | None,
        n_edges: int | None,
        ids: list[str] | None = None,
    ) -> CircuitPoint:
        g = self.graph
        nodes = mask[: g.token_offset].nonzero().flatten().tolist()
        necessity = ablate_nodes(self.model, g, nodes, **self.kwargs)
        sufficiency = ablate_outside(self.model, g, mask, errors=self.errors, **self.kwargs)
        scores = compute_subgraph_scores(g, mask)
        all_ids = node_ids(g)
        return CircuitPoint(
            node_threshold=threshold,
            node_ids=ids if ids is not None else [all_ids[i] for i in nodes],
            n_features=int(mask[: g.n_selected].sum()),
            n_errors=int(mask[g.error_offset : g.token_offset].sum()),
            n_edges=n_edges,
            replacement=scores.replacement,
            completeness=scores.completeness,
            necessity=self._after(necessity, "necessity"),
            sufficiency=self._after(sufficiency, "sufficiency"),
        )

    def _after(self, check: CircuitCheck, kind: str) -> Measurement:
        return _with_change(
            _measure(check.logits_after, self.target_id), self.clean, self.all_ablated, kind
        )


def _measure(logits: torch.Tensor, token_id: int) -> Measurement:
    """Measurement of ``token_id`` from ``logits[vocab]``."""
    logits = logits.double()
    probs = logits.softmax(-1)
    return Measurement(
        logit=float(logits[token_id]),
        logit_demeaned=float(logits[token_id] - logits.mean()),
        prob=float(probs[token_id]),
        rank=int((probs > probs[token_id]).sum()),
    )


def _with_change(m: Measurement, clean: Measurement, base: Measurement, kind: str) -> Measurement:
    span = clean.logit - base.logit
    if abs(span) < 1e-12:
        effect = None
    elif kind == "sufficiency":
        effect = (m.logit - base.logit) / span
    else:
        effect = (clean.logit - m.logit) / span
    return Measurement(m.logit, m.logit_demeaned, m.prob, m.rank, m.logit - clean.logit, effect)


def _mode(layers: list[int] | None, n_layers: int) -> Mode:
    if layers is None:
        return "iterative"
    return "direct" if layers == list(range(n_layers)) else "constrained"


def _check_model(model: ReplacementModel, graph: Graph) -> None:
    if model.n_layers != graph.n_layers:
        raise ValueError(
            f"the graph was traced on a model with {graph.n_layers} layers ({graph.model_name}) "
            f"but this model has {model.n_layers}: pass the model and transcoders the graph was "
            "made with"
        )


def _clean_floats(data: Any) -> Any:
    """Replace NaN/inf floats by ``None`` (JSON has no NaN), recursively."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _clean_floats(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_clean_floats(v) for v in data]
    return data
