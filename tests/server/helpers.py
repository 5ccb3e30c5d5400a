"""Files for the lab tests, built in code: graphs, dashboard stores, circuit-tracer-style JSON."""

from __future__ import annotations

import gzip
import json
import random
import struct
import zlib
from pathlib import Path
from typing import Any

import torch
from fastapi.testclient import TestClient

from circuitlab.graph import Graph, LogitTarget

LAB_ORIGIN = "http://127.0.0.1"


class LabClient(TestClient):
    """A test client that reaches the app as its page on 127.0.0.1 does: the lab refuses
    TestClient's own ``Host: testserver`` (no allowed host), for HTTP and websockets alike."""

    def __init__(self, app: Any, **kwargs: Any):
        super().__init__(app, base_url=LAB_ORIGIN, **kwargs)

    def websocket_connect(self, url: str, *args: Any, **kwargs: Any) -> Any:
        return super().websocket_connect(f"ws://127.0.0.1/{url.lstrip('/')}", *args, **kwargs)


def small_graph() -> Graph:
    """2 layers x 3 positions; feature 0 of layer 0 sits at pos 1 beside error (0, 1), which is
    exactly where circuit-tracer 0.5.0's ids collided (``0_0_1`` twice)."""
    n_layers, n_pos = 2, 3
    active = torch.tensor([[0, 1, 0], [0, 2, 4], [1, 1, 1], [1, 2, 2]])
    n_sel, n_logits = 4, 2
    n = n_sel + n_layers * n_pos + n_pos + n_logits
    tok = n_sel + n_layers * n_pos
    err = n_sel
    edges = torch.zeros(n_sel + n_logits, n)
    edges[0, [tok + 1, tok + 0]] = torch.tensor([1.0, 0.5])  # f0 <- tokens
    edges[1, [tok + 2, 0, err + 2]] = torch.tensor([1.0, 0.7, 0.3])  # f1 <- t2, f0, e(0,2)
    edges[2, [0, err + 1, tok + 1]] = torch.tensor([0.9, 0.4, 0.2])  # f2 <- f0, e(0,1)
    edges[3, [1, 2, tok + 2]] = torch.tensor([1.2, -0.6, 0.5])  # f3 <- f1, f2
    edges[4, [3, 1, err + n_pos + 2]] = torch.tensor([2.0, 0.5, 0.4])  # L0
    edges[5, [3, 2]] = torch.tensor([-1.0, 0.8])  # L1
    return Graph(
        input_string="the capital of",
        input_tokens=torch.tensor([0, 3, 4]),
        logit_targets=[LogitTarget(" France", 12), LogitTarget(" Texas", 11)],
        logit_probabilities=torch.tensor([0.7, 0.2]),
        vocab_size=20,
        active_features=active,
        activation_values=torch.tensor([1.5, 2.0, 0.5, 3.0]),
        selected_features=torch.arange(4),
        edges=edges,
        n_layers=n_layers,
        model_name="",
        transcoder_name="tiny-plt",
        feature_labels={2: "says capital"},
    )


def feature_record(layer: int, feature: int, label: str | None = None) -> dict[str, Any]:
    """A dashboard record in circuit-tracer's per-feature JSON format."""
    rec: dict[str, Any] = {
        "index": feature,
        "examples_quantiles": [
            {
                "quantile_name": "Top activations",
                "examples": [
                    {
                        "tokens": ["The", " capital", " of", " France"],
                        "tokens_acts_list": [0.0, 2.5, 0.5, 0.0],
                        "train_token_ind": 1,
                        "is_repeated_datapoint": False,
                    }
                ],
            }
        ],
        "top_logits": [" Paris", " Lyon"],
        "bottom_logits": [" the", " a"],
        "act_min": 0.0,
        "act_max": 2.5,
        "quantile_values": [0.5, 1.0, 2.5],
        "histogram": [5, 3, 2, 1],
        "activation_frequency": 0.0123,
    }
    if label:
        rec["label"] = label
    return rec


def write_feature_store(
    root: Path, records: dict[int, dict[int, dict[str, Any]]], n_features: int
) -> Path:
    """Write ``root/features/`` as docs/formats.md specifies: ``index.json.gz`` is a gzip JSON
    list with entry ``l`` = ``{filename, offsets}`` for layer ``l``; feature ``f`` is bytes
    ``[offsets[f], offsets[f+1])`` of that file, a 4-byte little-endian length then
    zlib-compressed JSON (an empty range when the store holds no record for it)."""
    store = root / "features"
    store.mkdir(parents=True, exist_ok=True)
    index = []
    for layer in range(max(records) + 1):
        feats = records.get(layer, {})
        blob, offsets = bytearray(), [0]
        for f in range(n_features):
            if f in feats:
                packed = zlib.compress(json.dumps(feats[f]).encode())
                blob += struct.pack("<I", len(packed)) + packed
            offsets.append(len(blob))
        name = f"layer_{layer}.bin"
        (store / name).write_bytes(bytes(blob))
        index.append({"filename": name, "offsets": offsets})
    (store / "index.json.gz").write_bytes(gzip.compress(json.dumps(index).encode()))
    return store


def circuit_tracer_graph(slug: str = "ct-graph") -> dict[str, Any]:
    """A graph file shaped the way circuit-tracer 0.5.0 writes it: error ids ``0_{layer}_{pos}``,
    feature indices as Cantor pairs, ``qParams`` holding raw URL strings."""
    nodes = [
        _ct_node("E_2_0", 0, "E", 0, "embedding", "E_2-0"),
        _ct_node("E_7_1", 1, "E", 1, "embedding", "E_7-1"),
        _ct_node("0_5_1", 20, "0", 1, "cross layer transcoder", "0_5-0", influence=0.3),
        _ct_node("1_3_1", 13, "1", 1, "cross layer transcoder", "1_3-0", influence=0.5),
        _ct_node("0_1_1", -1, "1", 1, "mlp reconstruction error", "1_1-0", influence=0.6),
        {
            **_ct_node("3_9_1", 9, "3", 1, "logit", "L_9-1"),
            "token_prob": 0.8,
            "is_target_logit": True,
            "clerp": 'Output " Paris" (p=0.800)',
        },
    ]
    links = [
        {"source": "E_7_1", "target": "0_5_1", "weight": 1.5},
        {"source": "0_5_1", "target": "1_3_1", "weight": 0.8},
        {"source": "E_2_0", "target": "1_3_1", "weight": -0.2},
        {"source": "1_3_1", "target": "3_9_1", "weight": 2.0},
        {"source": "0_1_1", "target": "3_9_1", "weight": 0.4},
    ]
    return {
        "metadata": {
            "slug": slug,
            "scan": "gemma-2-2b",
            "transcoder_list": [],
            "prompt_tokens": ["<bos>", " Paris"],
            "prompt": "<bos> Paris",
            "node_threshold": 0.8,
            "schema_version": 1,
        },
        "qParams": {
            "pinnedIds": "0_5_1,1_3_1",
            "supernodes": '[["capital", "0_5_1", "1_3_1"]]',
            "linkType": "both",
            "clickedId": "",
            "sg_pos": "",
        },
        "nodes": nodes,
        "links": links,
    }


def _ct_node(
    node_id: str,
    feature: int,
    layer: str,
    ctx: int,
    kind: str,
    js: str,
    influence: float | None = None,
) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "feature": feature,
        "layer": layer,
        "ctx_idx": ctx,
        "feature_type": kind,
        "token_prob": 0.0,
        "is_target_logit": False,
        "run_idx": 0,
        "reverse_ctx_idx": 0,
        "jsNodeId": js,
        "clerp": "",
        "influence": influence,
        "activation": None,
    }


def write_graph_dir(folder: Path, *graphs: dict[str, Any]) -> Path:
    """Write graph dicts and their ``graph-metadata.json`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for g in graphs:
        (folder / f"{g['metadata']['slug']}.json").write_text(json.dumps(g))
    meta = {"graphs": [g["metadata"] for g in graphs]}
    (folder / "graph-metadata.json").write_text(json.dumps(meta))
    return folder


def big_graph(n_nodes: int = 5000, n_links: int = 100_000, seed: int = 0) -> dict[str, Any]:
    """A synthetic graph file of the requested size (for responsiveness checks)."""
    rng = random.Random(seed)
    n_layers, n_pos = 26, 20
    nodes = [
        _ct_node(f"E_{p}_{p}", p, "E", p, "embedding", f"E_{p}-{p}", influence=0.0)
        for p in range(n_pos)
    ]
    logit = {
        **_ct_node(f"{n_layers + 1}_1_{n_pos - 1}", 1, str(n_layers + 1), n_pos - 1, "logit", "L"),
        "token_prob": 0.9,
        "clerp": 'Output " x" (p=0.900)',
    }
    n_feat = n_nodes - n_pos - 1
    for i in range(n_feat):
        layer, pos = rng.randrange(n_layers), rng.randrange(n_pos)
        nodes.append(
            _ct_node(
                f"{layer}_{i}_{pos}",
                i,
                str(layer),
                pos,
                "cross layer transcoder",
                f"{layer}_{i}-0",
                influence=rng.random() * 0.8,
            )
        )
    nodes.append(logit)
    ids = [n["node_id"] for n in nodes]
    links = []
    while len(links) < n_links:
        source, target = rng.randrange(n_nodes - 1), n_pos + rng.randrange(n_feat + 1)
        if source != target:
            links.append({"source": ids[source], "target": ids[target], "weight": rng.gauss(0, 1)})
    meta = {
        "slug": "big",
        "scan": "synthetic",
        "prompt_tokens": [f"t{p}" for p in range(n_pos)],
        "prompt": "synthetic",
        "node_threshold": 0.8,
        "schema_version": 1,
    }
    return {"metadata": meta, "qParams": {}, "nodes": nodes, "links": links}


def _measure(logit: float, prob: float, rank: int, change: float | None, effect: float | None):
    return {
        "logit": logit,
        "logit_demeaned": logit + 1.5,
        "prob": prob,
        "rank": rank,
        "logit_change": change,
        "effect": effect,
    }


def faithfulness_record(slug: str = "small") -> dict[str, Any]:
    """A hand-written ``{slug}.faithfulness.json`` (docs/validation.md) for ``small_graph``."""
    points = []
    for t, ids, nec, suf in [
        (0.3, ["1_2_2"], 0.2, 0.35),
        (0.5, ["1_2_2", "0_4_2"], 0.45, 0.6),
        (0.7, ["1_2_2", "0_4_2", "0_0_1"], 0.7, 0.8),
        (0.9, ["1_2_2", "0_4_2", "0_0_1", "1_1_1", "1_-1_2"], 0.9, 0.95),
    ]:
        points.append(
            {
                "node_threshold": t,
                "n_features": sum("_-1_" not in i for i in ids),
                "n_errors": sum("_-1_" in i for i in ids),
                "n_edges": 2 * len(ids),
                "replacement": round(0.4 + t / 2, 3),
                "completeness": round(0.7 + t / 4, 3),
                "necessity": _measure(10 - 8 * nec, 0.7 * (1 - nec), 0, -8 * nec, nec),
                "sufficiency": _measure(2 + 8 * suf, 0.7 * suf, 1, 8 * suf - 8, suf),
                "node_ids": ids,
            }
        )
    return {
        "kind": "circuitlab.faithfulness",
        "schema_version": 1,
        "slug": slug,
        "prompt": "the capital of",
        "model_name": "tiny",
        "transcoder_name": "tiny-plt",
        "mode": "iterative",
        "constrained_layers": None,
        "edge_threshold": 0.98,
        "ablate_errors": True,
        "target": {"token": " France", "token_id": 12},
        "clean": _measure(10.0, 0.7, 0, None, None),
        "all_ablated": _measure(2.0, 0.01, 9, -8.0, 0.0),
        "full_graph": {"replacement": 0.81, "completeness": 0.93},
        "points": points,
        "pinned": {
            "node_ids": ["0_4_2", "1_2_2"],
            "n_features": 2,
            "n_errors": 0,
            "replacement": 0.5,
            "completeness": 0.8,
            "necessity": _measure(5.0, 0.2, 1, -5.0, 0.625),
            "sufficiency": _measure(6.0, 0.3, 0, -4.0, 0.5),
        },
    }


def diff_record(a: str = "small", b: str = "ct-graph") -> dict[str, Any]:
    """A hand-written ``{a}__vs__{b}.diff.json`` (docs/validation.md): ``small`` vs ``ct-graph``."""

    def node(key: str, ids_a: list[str], ids_b: list[str], wa: float, wb: float):
        return {"key": key, "a": ids_a, "b": ids_b, "weight_a": wa, "weight_b": wb, "cosine": None}

    def edge(s: str, t: str, pa: list[list[str]], pb: list[list[str]], wa: float, wb: float):
        return {"source": s, "target": t, "a": pa, "b": pb, "weight_a": wa, "weight_b": wb}

    return {
        "kind": "circuitlab.diff",
        "schema_version": 1,
        "a": {"slug": a, "prompt": "the capital of", "model_name": "tiny",
              "transcoder_name": "tiny-plt", "n_layers": 2},
        "b": {"slug": b, "prompt": "capital", "model_name": "tiny",
              "transcoder_name": "tiny-plt", "n_layers": 2},
        "settings": {"node_threshold": 0.8, "edge_threshold": 0.98, "position_aware": False,
                     "aligned": False, "align_threshold": 0.7},
        "node_overlap": 0.43,
        "edge_overlap": 0.21,
        "spectral_distance": 0.12,
        "nodes": {
            "shared": [node("1_1", ["1_1_1"], ["1_1_1"], 0.4, 0.3)],
            "only_a": [node("0_4", ["0_4_2"], [], 0.3, 0.0), node("0_0", ["0_0_1"], [], 0.2, 0.0)],
            "only_b": [node("0_5", [], ["0_5_1"], 0.0, 0.5), node("1_3", [], ["1_3_1"], 0.0, 0.2)],
        },
        "edges": {
            "shared": [edge("0_0", "1_1", [["0_0_1", "1_1_1"]], [["0_1_1", "1_3_1"]], 0.3, 0.2)],
            "only_a": [edge("0_4", "1_2", [["0_4_2", "1_2_2"]], [], 0.2, 0.0)],
            "only_b": [edge("0_5", "logit_9", [], [["0_5_1", "3_9_1"]], 0.0, 0.4)],
        },
    }  # fmt: skip


# The constraints of Neuronpedia's published graph schema (apps/webapp/app/api/graph/
# graph-schema.json in its repository): required keys and value types; extra keys are allowed.
STRING = {"type": "string"}
SETTINGS_TYPES = {
    "max_n_logits": {"type": "integer"},
    "desired_logit_prob": {"type": "number"},
    "batch_size": {"type": "integer"},
    "max_feature_nodes": {"type": "integer"},
}
NEURONPEDIA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["metadata", "qParams", "nodes", "links"],
    "properties": {
        "metadata": {
            "type": "object",
            "required": ["slug", "scan", "prompt_tokens", "prompt"],
            "properties": {
                "slug": STRING,
                "scan": STRING,
                "prompt": STRING,
                "prompt_tokens": {"type": "array", "items": STRING},
                "node_threshold": {"type": "number"},
                "feature_details": {"type": "object"},
                "info": {"type": "object", "properties": {"create_time_ms": {"type": "number"}}},
                "generation_settings": {"type": "object", "properties": SETTINGS_TYPES},
                "pruning_settings": {
                    "type": "object",
                    "properties": {
                        "node_threshold": {"type": "number"},
                        "edge_threshold": {"type": "number"},
                    },
                },
            },
        },
        "qParams": {
            "type": "object",
            "properties": {
                "pinnedIds": {"type": "array", "items": STRING},
                "supernodes": {"type": "array"},
                "linkType": STRING,
                "clickedId": STRING,
                "sg_pos": STRING,
            },
        },
        "nodes": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "node_id",
                    "feature",
                    "layer",
                    "ctx_idx",
                    "feature_type",
                    "jsNodeId",
                    "clerp",
                ],
                "properties": {
                    "node_id": STRING,
                    "feature": {"type": ["integer", "null"]},
                    "layer": {"type": ["string", "integer"]},
                    "ctx_idx": {"type": "integer"},
                    "feature_type": STRING,
                    "jsNodeId": STRING,
                    "clerp": STRING,
                    "influence": {"type": ["number", "null"]},
                    "activation": {"type": ["number", "null"]},
                },
            },
        },
        "links": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["source", "target", "weight"],
                "properties": {"source": STRING, "target": STRING, "weight": {"type": "number"}},
            },
        },
    },
}
