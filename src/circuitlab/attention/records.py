"""Attention results as JSON records for the lab page, and precomputed into a graph file.

The page shows three kinds of record (``docs/attention.md``, "In the lab"):

* ``loadings_record``: an edge (or a set of edges) split per attention head and layer,
  ``HeadLoadings.to_dict()`` plus the ten strongest heads (``top``);
* ``qk_record``: one QK attribution, ``QKAttribution.to_dict()`` with the pairs and each
  side's marginals cut to the strongest ``top_k`` (the page shows no more);
* ``flows_record``: the strongest attention flows (layer, head, key position, weight) from a
  query position, ``top_attention``.

``add_attention_results`` adds records for a pruned graph's strongest attention flows and
cross-position edges to its graph JSON (the top-level key ``attention``, which Neuronpedia's
schema leaves open), so a saved page shows them without a model. Keys: loadings by
``"{source}->{target}"``, QK attributions by ``qk_key(layer, head, query_pos, key_pos)``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..atomic import write_json_atomic
from ..graph.graph import Graph
from ..replacement import ReplacementModel
from .frozen import FrozenPrompt
from .loadings import Edge, head_loadings
from .qk import _position, qk_attribution, top_attention

RECORDS_VERSION = 1


def qk_key(layer: int, head: int, query_pos: int, key_pos: int) -> str:
    """The key of a QK record in a graph file's ``attention.qk``: ``"L.H.q.k"``."""
    return f"{layer}.{head}.{query_pos}.{key_pos}"


def edge_key(edges: Sequence[Edge]) -> str:
    """The key of a loadings record: ``"src->tgt"``, ``"|"``-joined for a set of edges."""
    return "|".join(f"{s}->{t}" for s, t in edges)


def loadings_record(
    model: ReplacementModel, fp: FrozenPrompt, edges: Sequence[Edge], top: int = 10
) -> dict[str, Any]:
    """The split of ``edges`` (summed) at every layer: ``heads [n_layers][n_heads]``,
    ``bypass [n_layers]``, ``edge`` and ``top`` ``[[layer, head, loading], ...]``."""
    hl = head_loadings(model, fp, list(edges))
    return {**hl.to_dict(), "top": [list(t) for t in hl.top_heads(top)]}


def qk_record(
    model: ReplacementModel,
    fp: FrozenPrompt,
    layer: int,
    head: int,
    query_pos: int,
    key_pos: int,
    top_k: int = 20,
) -> dict[str, Any]:
    """One QK attribution: its ``top_k`` pairs, ``top_k`` nodes of each side, bias terms and
    totals (``QKAttribution.to_dict``), and how many nodes each side has."""
    r = qk_attribution(model, fp, layer, head, query_pos, key_pos, top_k=top_k)
    out = r.to_dict()
    out["query_marginals"] = list(r.query_marginals.items())[:top_k]
    out["key_marginals"] = list(r.key_marginals.items())[:top_k]
    out["n_query_nodes"], out["n_key_nodes"] = len(r.query_nodes), len(r.key_nodes)
    return out


def flows_record(
    model: ReplacementModel, fp: FrozenPrompt, query_pos: int = -1, n: int = 8
) -> list[dict[str, Any]]:
    """The ``n`` strongest attention flows from ``query_pos`` (key 0, the BOS, left out)."""
    q = _position(fp, query_pos, "query_pos")
    return [
        {"layer": layer, "head": head, "query_pos": q, "key_pos": k, "weight": w}
        for layer, head, k, w in top_attention(model, fp, query_pos=q, n=n)
    ]


def strongest_cross_edges(data: dict[str, Any], n: int) -> list[Edge]:
    """The ``n`` largest ``|weight|`` links of a graph file whose source sits at an earlier
    position than its target (the edges attention carries) and whose target is a feature or
    a logit, not an error or token."""
    picked = []
    for link in sorted(data["links"], key=lambda x: -abs(float(x["weight"]))):
        src, tgt = str(link["source"]), str(link["target"])
        s_pos, t_parts = int(src.rsplit("_", 1)[1]), tgt.split("_")
        if tgt.startswith("E_") or t_parts[1] == "-1" or s_pos >= int(t_parts[2]):
            continue
        picked.append((src, tgt))
        if len(picked) == n:
            break
    return picked


def attention_results(
    model: ReplacementModel,
    graph: Graph | FrozenPrompt,
    data: dict[str, Any],
    *,
    n_edges: int = 8,
    n_flows: int = 5,
    top_k: int = 20,
) -> dict[str, Any]:
    """The ``attention`` block for graph file ``data`` (made from ``graph``): loadings of
    its ``n_edges`` strongest cross-position edges, and the flows and QK attributions of the
    ``n_flows`` strongest attention flows from the last position."""
    fp = graph if isinstance(graph, FrozenPrompt) else FrozenPrompt.build(model, graph)
    loadings = {}
    for e in strongest_cross_edges(data, n_edges):
        try:
            loadings[edge_key([e])] = loadings_record(model, fp, [e])
        except ValueError:  # a virtual logit target (its direction is not in the graph)
            continue
    flows = flows_record(model, fp, -1, n_flows)
    qk = {
        qk_key(f["layer"], f["head"], f["query_pos"], f["key_pos"]): qk_record(
            model, fp, f["layer"], f["head"], f["query_pos"], f["key_pos"], top_k
        )
        for f in flows
    }
    return {"version": RECORDS_VERSION, "flows": flows, "loadings": loadings, "qk": qk}


def add_attention_results(
    model: ReplacementModel,
    graph: Graph | FrozenPrompt,
    graph_file: str | Path,
    *,
    n_edges: int = 8,
    n_flows: int = 5,
    top_k: int = 20,
) -> Path:
    """Add ``attention_results`` to the graph file ``create_graph_files`` wrote for ``graph``
    (replaced atomically), so the page shows them offline. Returns the file's path."""
    path = Path(graph_file)
    data = json.loads(path.read_text())
    data["attention"] = attention_results(
        model, graph, data, n_edges=n_edges, n_flows=n_flows, top_k=top_k
    )
    write_json_atomic(path, data)
    return path
