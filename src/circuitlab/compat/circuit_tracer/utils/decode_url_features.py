"""``decode_url_features``: the pinned nodes and supernodes of a Neuronpedia graph URL.

Node ids in such URLs read ``{layer}_{feature}_{pos}`` (``E_{token}_{pos}`` for embeddings,
returned with layer -1); supernodes are ``[name, id, id, ...]`` lists in the ``supernodes``
parameter. Repeated supernode names get `` (2)``, `` (3)``, ... appended.
"""

from __future__ import annotations

import json
from typing import NamedTuple
from urllib.parse import parse_qs, unquote, urlparse


class Feature(NamedTuple):
    """One node of the URL: ``layer`` (-1 for an embedding), ``pos``, ``feature_idx``."""

    layer: int
    pos: int
    feature_idx: int


def decode_url_features(url: str) -> tuple[dict[str, list[Feature]], list[Feature]]:
    """``(supernodes: name -> features, pinned features)`` of a graph URL."""
    query = parse_qs(urlparse(unquote(url)).query)
    supernodes: dict[str, list[Feature]] = {}
    seen: dict[str, int] = {}
    for name, *ids in json.loads(query.get("supernodes", ["[]"])[0]):
        seen[name] = seen.get(name, 0) + 1
        key = name if seen[name] == 1 else f"{name} ({seen[name]})"
        supernodes[key] = [_feature(i) for i in ids]
    pinned = [p for p in query.get("pinnedIds", [""])[0].split(",") if p]
    singles = [f for f in (_pinned(p) for p in pinned) if f is not None]
    return supernodes, singles


def _feature(node_id: str) -> Feature:
    layer, feature, pos = (int(x) for x in node_id.split("_"))
    return Feature(layer, pos, feature)


def _pinned(node_id: str) -> Feature | None:
    parts = node_id.split("_")
    if parts[0] == "E" and len(parts) == 3:
        return Feature(-1, int(parts[2]), int(parts[1]))
    if len(parts) == 3 and all(p.lstrip("-").isdigit() for p in parts):
        return _feature(node_id)
    return None  # other node kinds (logits, errors) name no feature
