"""Interventions on graph nodes and supernodes, named as the UI names them.

Node ids follow the circuit-tracer / Neuronpedia graph JSON:

* feature ``"{layer}_{feature}_{pos}"`` (e.g. ``"12_4031_5"``);
* error ``"{layer}_-1_{pos}"`` (the collision-free form; circuit-tracer 0.5.0 wrote
  ``"0_{layer}_{pos}"``, which cannot be told apart from a layer-0 feature and is read as one);
* token ``"E_{token}_{pos}"`` and logit ``"{n_layers + 1}_{token}_{pos}"`` nodes cannot be
  intervened on.

Nodes may also be given as integer node indices of a ``Graph`` (its node order), and
supernodes as the UI's ``[label, node_id, ...]`` lists (``qParams.supernodes``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from ..graph.graph import Graph
from .spec import Intervention, Value

NodeLike = str | int


@dataclass(frozen=True)
class NodeRef:
    """A feature node ``(layer, pos, feature)`` or an error node (``feature is None``)."""

    kind: Literal["feature", "error"]
    layer: int
    pos: int
    feature: int | None = None

    @property
    def node_id(self) -> str:
        return f"{self.layer}_{-1 if self.feature is None else self.feature}_{self.pos}"


_FORMATS = "'{layer}_{feature}_{pos}' for features or '{layer}_-1_{pos}' for error nodes"


def parse_node_id(node_id: str) -> NodeRef:
    """The node a UI node id names (formats in the module docstring)."""
    parts = node_id.strip().split("_")
    if parts and parts[0] == "E":
        raise ValueError(
            f"{node_id!r} is a token (embedding) node; intervene on features or error nodes."
        )
    try:
        layer, feature, pos = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"cannot read node id {node_id!r}: expected {_FORMATS}.") from None
    if layer < 0 or pos < 0 or feature < -1:
        raise ValueError(f"cannot read node id {node_id!r}: expected {_FORMATS}.")
    if feature == -1:
        return NodeRef("error", layer, pos)
    return NodeRef("feature", layer, pos, feature)


def resolve_node(node: NodeLike | NodeRef, graph: Graph | None = None) -> NodeRef:
    """A node id, node index (needs ``graph``) or ``NodeRef`` as a ``NodeRef``, checked
    against ``graph`` when given."""
    if isinstance(node, NodeRef):
        ref = node
    elif isinstance(node, str):
        ref = parse_node_id(node)
    elif isinstance(node, int) and not isinstance(node, bool):
        if graph is None:
            raise ValueError(f"node index {node} needs its graph: pass graph=...")
        ref = _from_index(graph, node)
    else:
        raise ValueError(f"cannot read node {node!r}: give a node id string or a node index.")
    if graph is not None:
        if ref.layer == graph.n_layers + 1:
            raise ValueError(f"{ref.node_id!r} is a logit node; intervene on features or errors.")
        if ref.layer >= graph.n_layers or ref.pos >= graph.n_pos:
            raise ValueError(
                f"node {ref.node_id!r} is outside the graph ({graph.n_layers} layers, "
                f"{graph.n_pos} positions)."
            )
    return ref


def _from_index(graph: Graph, node: int) -> NodeRef:
    kind = graph.node_kind(node)
    if kind == "feature":
        layer, pos, feat = graph.selected_feature_coords[node].tolist()
        return NodeRef("feature", layer, pos, feat)
    if kind == "error":
        layer, pos = graph.error_position(node)
        return NodeRef("error", layer, pos)
    raise ValueError(f"node {node} is a {kind} node; intervene on features or error nodes.")


def node_interventions(
    nodes: Iterable[NodeLike | NodeRef],
    *,
    value: Value | None = None,
    scale: Value | None = None,
    graph: Graph | None = None,
) -> list[Intervention]:
    """Interventions setting every node to ``value`` or multiplying it by ``scale``.

    With neither given the nodes are ablated (set to 0). Features at the same (layer, pos)
    become one intervention.
    """
    if value is not None and scale is not None:
        raise ValueError("give value= (set) or scale= (multiply), not both.")
    op: Literal["set", "scale"] = "scale" if scale is not None else "set"
    amount: Value = scale if scale is not None else (0.0 if value is None else value)
    features: dict[tuple[int, int], list[int]] = defaultdict(list)
    errors: list[tuple[int, int]] = []
    for node in nodes:
        ref = resolve_node(node, graph)
        if ref.feature is None:
            errors.append((ref.layer, ref.pos))
        elif ref.feature not in features[(ref.layer, ref.pos)]:
            features[(ref.layer, ref.pos)].append(ref.feature)
    out = [
        Intervention(layer, pos, torch.tensor(feats), amount, op)
        for (layer, pos), feats in sorted(features.items())
    ]
    out += [Intervention(layer, pos, None, amount, op) for layer, pos in sorted(set(errors))]
    return out


def supernode_members(
    supernodes: Iterable[Sequence[str]] | Mapping[str, Sequence[str]], labels: Iterable[str]
) -> list[str]:
    """Node ids of the supernodes named ``labels`` (UI lists ``[label, id, ...]`` or a dict)."""
    table = dict(supernodes) if isinstance(supernodes, Mapping) else _table(supernodes)
    members: list[str] = []
    for label in labels:
        if label not in table:
            known = ", ".join(repr(k) for k in table) or "none"
            raise ValueError(f"no supernode labelled {label!r}; known: {known}.")
        members += [m for m in table[label] if m not in members]
    return members


def _table(supernodes: Iterable[Sequence[str]]) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for entry in supernodes:
        if not entry:
            continue
        table[str(entry[0])] = [str(m) for m in entry[1:]]
    return table


def read_qparams(source: str | Path | Mapping[str, Any]) -> tuple[list[str], dict[str, list[str]]]:
    """Pinned node ids and supernodes (label -> ids) of a graph JSON file or its ``qParams``."""
    data: Any = source
    if isinstance(source, (str, Path)):
        data = json.loads(Path(source).read_text())
    q = data.get("qParams", data)
    pinned = q.get("pinnedIds") or []
    if isinstance(pinned, str):  # the UI may save the raw comma-joined URL value
        pinned = [p for p in pinned.split(",") if p]
    supers = q.get("supernodes") or []
    if isinstance(supers, str):
        supers = json.loads(supers)
    return [str(p) for p in pinned], _table(supers)
