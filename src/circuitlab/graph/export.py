"""Graph files for the web lab: ``create_graph_files`` writes ``{slug}.json`` and upserts
``graph-metadata.json``.

The JSON is the schema circuit-tracer and Neuronpedia read (``metadata``, ``qParams``, ``nodes``,
``links``; documented in ``docs/formats.md``), so graphs move between the three tools. Node ids:

* feature ``{layer}_{feature}_{pos}``
* error   ``{layer}_-1_{pos}``          (``-1`` never names a feature, so no collisions)
* token   ``E_{token_id}_{pos}``
* logit   ``{n_layers + 1}_{vocab_idx}_{n_pos - 1}``

Only the pruned graph is written: nodes that survive ``prune_graph`` and touch a kept edge, plus
every token and logit node; links are the kept edges with their raw weights.

With ``suggestions`` the file also carries ``circuit_suggestions``: the automatic supernodes of
``circuitlab.circuits`` (their hierarchy and labels, ``circuits/suggestions.py``), which the
page loads as editable suggestions. Off by default: grouping costs seconds on big graphs.
"""

from __future__ import annotations

import gzip
import json
import re
import struct
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch

from circuitlab.atomic import write_atomic
from circuitlab.graph.graph import Graph
from circuitlab.graph.link_sidecar import write_graph_sidecar
from circuitlab.graph.pruning import prune_graph


class Circuit(Protocol):
    """What ``create_graph_files(suggestions=...)`` takes: a ``circuitlab.circuits.Circuit``
    (named structurally here: ``graph/`` does not import ``circuits/``)."""

    graph: Graph


SuggestionsBuilder = Callable[[Graph, "bool | Circuit", float, float, "str | Path | None"], dict]
_suggestions_builder: list[SuggestionsBuilder] = []


def set_suggestions_builder(builder: SuggestionsBuilder) -> None:
    """Installs what builds the ``circuit_suggestions`` block (``import circuitlab`` installs
    ``circuits.suggestions.suggestions_block``; lower layers never import higher ones)."""
    _suggestions_builder[:] = [builder]


SCHEMA_VERSION = 1
FEATURE_TYPE = "cross layer transcoder"  # what circuit-tracer and Neuronpedia call any feature
ERROR_TYPE = "mlp reconstruction error"
SLUG_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_METADATA_LOCK = threading.Lock()


def cantor(layer: int, feature: int) -> int:
    """circuit-tracer's feature index: the Cantor pairing of (layer, feature)."""
    return (layer + feature) * (layer + feature + 1) // 2 + feature


def check_slug(slug: str) -> str:
    """Return ``slug`` or raise ``ValueError``: letters, digits, ``.``, ``_``, ``-`` only."""
    if not isinstance(slug, str) or not SLUG_PATTERN.match(slug) or ".." in slug:
        raise ValueError(
            f"bad slug {slug!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (it becomes a file name)"
        )
    return slug


def create_graph_files(
    graph: Graph | str | Path,
    slug: str,
    output_dir: str | Path,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    *,
    scan: str | None = None,
    tokenizer: Any = None,
    labels: Mapping[tuple[int, int], str] | None = None,
    features_dir: str | Path | None = None,
    suggestions: bool | Circuit = False,
) -> Path:
    """Write ``{output_dir}/{slug}.json`` and upsert ``{output_dir}/graph-metadata.json``.

    ``graph`` is a ``Graph`` or a path to one saved with ``Graph.save``. ``tokenizer`` decodes
    the prompt tokens (default: the graph's ``model_name`` loaded from local files, else
    ``<id>``). Feature labels (``clerp``), first found wins: ``graph.feature_labels``,
    ``labels[(layer, feature)]``, the ``label`` field of the feature's dashboard record in
    ``features_dir``. Both files are replaced atomically. Returns the graph file's path.
    A graph with more than ``SIDECAR_MIN_LINKS`` links also gets ``{slug}.links.npz``, its
    links sorted for the page (``graph.link_sidecar``).

    ``suggestions``: ``True`` adds ``circuit_suggestions`` from ``find_circuit`` at the same
    thresholds (labels from ``features_dir``; no decoder term); a ``Circuit`` of this graph
    (e.g. ``find_circuit(graph, model=model, ...)``) adds that one. Off by default.
    """
    if not isinstance(graph, Graph):
        graph = Graph.load(graph)
    check_slug(slug)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = graph_json(
        graph,
        slug,
        node_threshold,
        edge_threshold,
        scan=scan,
        tokenizer=tokenizer,
        labels=labels,
        features_dir=features_dir,
        suggestions=suggestions,
    )
    path = out / f"{slug}.json"
    write_atomic(path, json.dumps(data, separators=(",", ":"), allow_nan=False).encode())
    write_graph_sidecar(path, data)  # the page's link index, for files too big to parse fast
    upsert_graph_metadata(out, data["metadata"])
    return path


def graph_json(
    graph: Graph,
    slug: str,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    *,
    scan: str | None = None,
    tokenizer: Any = None,
    labels: Mapping[tuple[int, int], str] | None = None,
    features_dir: str | Path | None = None,
    suggestions: bool | Circuit = False,
) -> dict[str, Any]:
    """The graph-file dict ``create_graph_files`` writes (see the module docstring)."""
    pruned = prune_graph(graph, node_threshold=node_threshold, edge_threshold=edge_threshold)
    g = graph.to("cpu")
    node_mask = pruned.node_mask.cpu()
    kept = pruned.within(pruned.node_mask)
    edge_targets, edge_sources = kept.edge_targets.cpu(), kept.edge_sources.cpu()
    weights = g.edge_blocks.values_at(edge_targets, edge_sources).float().tolist()
    sources, targets = edge_sources.tolist(), edge_targets.tolist()

    in_links = torch.zeros(g.n_nodes, dtype=torch.bool)
    in_links[edge_sources] = True
    in_links[edge_targets] = True
    keep = in_links & node_mask
    keep[g.token_offset :] = True  # tokens and logits always stay

    tokens = decode_tokens(g, tokenizer)
    ids = node_ids(g)
    clerps = feature_clerps(g, labels, features_dir, keep)
    scores = pruned.cumulative_scores.cpu().float().tolist()
    nodes = [
        node_record(g, i, ids[i], scores[i], tokens, clerps.get(i, ""))
        for i in keep.nonzero().flatten().tolist()
    ]
    links = [
        {"source": ids[s], "target": ids[t], "weight": float(f"{w:.6g}")}
        for s, t, w in zip(sources, targets, weights, strict=True)
    ]
    data: dict[str, Any] = {
        "metadata": graph_metadata(g, slug, scan, tokens, node_threshold, edge_threshold),
        "qParams": {
            "pinnedIds": [],
            "supernodes": [],
            "linkType": "both",
            "clickedId": "",
            "sg_pos": "",
        },
        "nodes": nodes,
        "links": links,
    }
    if suggestions is not False:
        data["circuit_suggestions"] = circuit_suggestions(
            g, suggestions, node_threshold, edge_threshold, features_dir
        )
    return data


def circuit_suggestions(
    g: Graph,
    circuit: bool | Circuit,
    node_threshold: float,
    edge_threshold: float,
    features_dir: str | Path | None,
) -> dict[str, Any]:
    """The ``circuit_suggestions`` block: ``circuit``'s, or (``True``) ``find_circuit``'s at
    these thresholds, built by the installed ``set_suggestions_builder`` function."""
    if not _suggestions_builder:
        raise RuntimeError(
            "circuit_suggestions needs circuitlab.circuits: `import circuitlab` installs it "
            "(or call circuitlab.graph.export.set_suggestions_builder yourself)"
        )
    return _suggestions_builder[0](g, circuit, node_threshold, edge_threshold, features_dir)


def node_ids(g: Graph) -> list[str]:
    """``node_id`` of every node ``0 .. N-1`` (unique; see the module docstring)."""
    coords = g.selected_feature_coords.tolist()
    ids = [f"{layer}_{feat}_{pos}" for layer, pos, feat in coords]
    ids += [f"{layer}_-1_{pos}" for layer in range(g.n_layers) for pos in range(g.n_pos)]
    ids += [f"E_{tok}_{pos}" for pos, tok in enumerate(g.input_tokens.tolist())]
    ids += [f"{g.n_layers + 1}_{t.vocab_idx}_{g.n_pos - 1}" for t in g.logit_targets]
    if len(set(ids)) != len(ids):
        raise ValueError("graph has two nodes with the same id (repeated logit targets?)")
    return ids


def node_record(
    g: Graph, i: int, node_id: str, influence: float, tokens: list[str], clerp: str
) -> dict[str, Any]:
    """One entry of ``nodes``."""
    kind = g.node_kind(i)
    rec: dict[str, Any] = {"node_id": node_id, "influence": influence, "activation": None}
    if kind == "feature":
        layer, pos, feat = g.selected_feature_coords[i].tolist()
        act = float(g.activation_values[int(g.selected_features[i])])
        rec.update(feature=cantor(layer, feat), layer=str(layer), ctx_idx=pos, activation=act)
        rec.update(feature_type=FEATURE_TYPE, jsNodeId=f"{layer}_{feat}-0")
    elif kind == "error":
        layer, pos = g.error_position(i)
        rec.update(feature=-1, layer=str(layer), ctx_idx=pos, feature_type=ERROR_TYPE)
        rec.update(jsNodeId=f"{layer}_-1-{pos}")
    elif kind == "token":
        pos = i - g.token_offset
        tok = int(g.input_tokens[pos])
        rec.update(feature=pos, layer="E", ctx_idx=pos, feature_type="embedding")
        rec.update(jsNodeId=f"E_{tok}-{pos}")
    else:
        k = i - g.logit_offset
        target, prob = g.logit_targets[k], float(g.logit_probabilities[k])
        pos = g.n_pos - 1
        rec.update(feature=target.vocab_idx, layer=str(g.n_layers + 1), ctx_idx=pos)
        rec.update(feature_type="logit", jsNodeId=f"L_{target.vocab_idx}-{pos}")
        rec.update(token_prob=prob, is_target_logit=k == 0)
        clerp = f'Output "{target.token_str}" (p={prob:.3f})'
    rec.setdefault("token_prob", 0.0)
    rec.setdefault("is_target_logit", False)
    rec.update(clerp=clerp, run_idx=0, reverse_ctx_idx=g.n_pos - 1 - int(rec["ctx_idx"]))
    return rec


def graph_metadata(
    g: Graph,
    slug: str,
    scan: str | None,
    tokens: list[str],
    node_threshold: float,
    edge_threshold: float,
) -> dict[str, Any]:
    """``metadata``: circuit-tracer's required keys plus Neuronpedia's optional ones."""
    from circuitlab._version import __version__

    return {
        "slug": slug,
        "scan": scan or g.transcoder_name or g.model_name,
        "transcoder_list": [],
        "prompt_tokens": tokens,
        "prompt": g.input_string,
        "node_threshold": node_threshold,
        "schema_version": SCHEMA_VERSION,
        "model_name": g.model_name,
        "transcoder_set": {
            "name": g.transcoder_name,
            "model": g.model_name,
            "fingerprint": g.transcoder_fingerprint,
        },
        "n_layers": g.n_layers,
        "pruning_settings": {"node_threshold": node_threshold, "edge_threshold": edge_threshold},
        # Neuronpedia's graph schema types these settings (max_feature_nodes: integer), so a
        # setting that was not set (None, e.g. an uncapped graph) is left out, not written null.
        "generation_settings": _json_safe({k: v for k, v in g.settings.items() if v is not None}),
        "info": {
            "generator": {"name": "circuitlab", "version": __version__},
            "create_time_ms": int(time.time() * 1000),
        },
    }


def decode_tokens(g: Graph, tokenizer: Any = None) -> list[str]:
    """The prompt's tokens as strings (``<id>`` when no tokenizer can be found)."""
    ids = g.input_tokens.tolist()
    if tokenizer is None and g.model_name:
        try:  # a folder without tokenizer files (or a placeholder tokenizer) gives None
            from circuitlab.models.loading import find_tokenizer

            tokenizer = find_tokenizer(g.model_name, local_files_only=True)
        except Exception:  # any failure means "no tokenizer"; fall back to ids
            tokenizer = None
    if tokenizer is None:
        return [f"<{t}>" for t in ids]
    return [str(tokenizer.decode([t])) for t in ids]


def feature_clerps(
    g: Graph,
    labels: Mapping[tuple[int, int], str] | None,
    features_dir: str | Path | None,
    keep: torch.Tensor,
) -> dict[int, str]:
    """Labels of kept feature nodes, by node index."""
    out: dict[int, str] = {}
    coords = g.selected_feature_coords.tolist()
    store = _labels_store(g, features_dir) if features_dir is not None else None
    for i in keep[: g.n_selected].nonzero().flatten().tolist():
        layer, _pos, feat = coords[i]
        label = (g.feature_labels or {}).get(i) or (labels or {}).get((layer, feat))
        if not label and store is not None:
            record = store.read(layer, feat)
            label = record.get("label") if record else None
        if label:
            out[i] = str(label)
    return out


def _labels_store(g: Graph, features_dir: str | Path) -> FeatureStore | None:
    """The store at ``features_dir``, unless it records another transcoder set than ``g``'s
    (then its labels would name other features: warned and skipped)."""
    from circuitlab.features.store import read_build_info

    store = FeatureStore.open(features_dir)
    if store is None:
        return None
    tset = (read_build_info(store.root) or {}).get("transcoder_set")
    fp = tset.get("fingerprint") if isinstance(tset, dict) else None
    if fp and g.transcoder_fingerprint and fp != g.transcoder_fingerprint:
        warnings.warn(
            f"the dashboards in {features_dir} describe another transcoder set ({fp}) than "
            f"the graph's ({g.transcoder_fingerprint}); their labels are not used",
            stacklevel=4,
        )
        return None
    return store


class FeatureStore:
    """Reads the compact dashboard store (``docs/formats.md``): ``index.json.gz`` maps each
    layer to ``{filename, offsets}``; feature ``f`` is bytes ``[offsets[f], offsets[f+1])`` of
    that file, a 4-byte little-endian length then zlib-compressed JSON."""

    def __init__(self, root: Path, index: dict[str, Any]):
        self.root = root
        self.index = index

    @classmethod
    def find_root(cls, features_dir: str | Path) -> Path | None:
        """The folder holding ``index.json.gz``: ``features_dir`` or ``features_dir/features``."""
        base = Path(features_dir)
        for root in (base, base / "features"):
            if (root / "index.json.gz").is_file():
                return root
        return None

    @classmethod
    def open(cls, features_dir: str | Path) -> FeatureStore | None:
        root = cls.find_root(features_dir)
        if root is None:
            return None
        index = json.loads(gzip.decompress((root / "index.json.gz").read_bytes()))
        if isinstance(index, dict) and isinstance(index.get("layers"), (dict, list)):
            index = index["layers"]
        if isinstance(index, list):
            index = {str(i): v for i, v in enumerate(index)}
        return cls(root, index)

    def read(self, layer: int, feature: int) -> dict[str, Any] | None:
        """The feature's record, or None when the store does not hold it."""
        entry = self.index.get(str(layer))
        if not entry or not 0 <= feature < len(entry["offsets"]) - 1:
            return None
        start, end = entry["offsets"][feature], entry["offsets"][feature + 1]
        if end <= start:
            return None
        path = (self.root / entry["filename"]).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"feature index names a file outside {self.root}: {path}")
        with open(path, "rb") as f:
            f.seek(start)
            blob = f.read(end - start)
        return decode_feature_record(blob)


def decode_feature_record(blob: bytes) -> dict[str, Any]:
    """Decode one record: ``<u32 little-endian length> <zlib(JSON)>``."""
    if len(blob) < 4:
        raise ValueError("feature record shorter than its 4-byte length prefix")
    (n,) = struct.unpack("<I", blob[:4])
    return json.loads(zlib.decompress(blob[4 : 4 + n]))


def upsert_graph_metadata(output_dir: Path, metadata: dict[str, Any]) -> None:
    """Replace (or add) the entry with ``metadata['slug']`` in ``graph-metadata.json``."""
    path = output_dir / "graph-metadata.json"
    with _METADATA_LOCK:
        graphs: list[dict[str, Any]] = []
        if path.is_file():
            try:
                graphs = list(json.loads(path.read_text()).get("graphs", []))
            except (ValueError, AttributeError):
                graphs = []  # unreadable: rebuilt from this graph on (nothing else to keep)
        graphs = [m for m in graphs if m.get("slug") != metadata["slug"]] + [metadata]
        write_atomic(path, json.dumps({"graphs": graphs}, indent=1, allow_nan=False).encode())


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
