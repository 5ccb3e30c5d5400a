"""Aligning features of two transcoder bases by decoder cosine.

Graphs made with different transcoders (another training run, another model or checkpoint)
number their features independently, so feature ``(12, 4031)`` of one means nothing in the
other. We match features by what they write: the cosine of their decoder rows at their own
layer (``decoder_rows(layer, f)[:, 0]``, the output to the feature's layer for cross-layer
transcoders too).

Only the features of the two circuits are matched (not whole dictionaries), layer by layer
(same layer index), one to one, greedily by descending cosine, keeping pairs with
``cosine >= threshold``. Both bases must write to residual streams of the same width.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from circuitlab.transcoders.base import Transcoders


@dataclass(frozen=True)
class FeatureMatch:
    """Feature ``feature_b`` of basis B at ``layer`` matched to ``feature_a`` of basis A."""

    layer: int
    feature_a: int
    feature_b: int
    cosine: float


def decoder_directions(transcoders: Transcoders, layer: int, features: list[int]) -> torch.Tensor:
    """Unit decoder rows ``[n, d_model]`` (float64) of ``features`` at ``layer``, own layer."""
    idx = torch.tensor(features, dtype=torch.long)
    rows = transcoders.decoder_rows(layer, idx)[:, 0].detach().double().cpu()
    return rows / rows.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def align_features(
    features_a: Iterable[tuple[int, int]],
    features_b: Iterable[tuple[int, int]],
    transcoders_a: Transcoders,
    transcoders_b: Transcoders,
    threshold: float = 0.7,
) -> list[FeatureMatch]:
    """Match ``(layer, feature)`` pairs of basis B to basis A by decoder cosine (module docs).

    Returns the matches sorted by layer then descending cosine.

    Raises:
        ValueError: when the bases write to residual streams of different widths, or a
            feature's layer does not exist in its transcoders.
    """
    if transcoders_a.d_model != transcoders_b.d_model:
        raise ValueError(
            f"cannot align features by decoder cosine: transcoders A write d_model="
            f"{transcoders_a.d_model} but B write d_model={transcoders_b.d_model}; compare "
            "without alignment (align=False) instead"
        )
    by_layer_a = _by_layer(features_a, transcoders_a, "A")
    by_layer_b = _by_layer(features_b, transcoders_b, "B")
    matches: list[FeatureMatch] = []
    for layer in sorted(set(by_layer_a) & set(by_layer_b)):
        fa, fb = by_layer_a[layer], by_layer_b[layer]
        cos = (
            decoder_directions(transcoders_b, layer, fb)
            @ decoder_directions(transcoders_a, layer, fa).T
        )  # [n_b, n_a]
        matches += _greedy(layer, cos, fa, fb, threshold)
    return matches


def _by_layer(
    features: Iterable[tuple[int, int]], transcoders: Transcoders, name: str
) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for layer, feat in sorted(set(features)):
        if not 0 <= layer < transcoders.n_layers:
            raise ValueError(
                f"feature ({layer}, {feat}) of graph {name} is at a layer its transcoders do not "
                f"have ({transcoders.n_layers} layers): pass the transcoders the graph was made with"
            )
        out.setdefault(layer, []).append(feat)
    return out


def _greedy(
    layer: int, cos: torch.Tensor, fa: list[int], fb: list[int], threshold: float
) -> list[FeatureMatch]:
    """One-to-one matches by descending cosine ``cos[n_b, n_a]``; ties by index (deterministic)."""
    values, order = cos.flatten().sort(descending=True, stable=True)
    used_a: set[int] = set()
    used_b: set[int] = set()
    out: list[FeatureMatch] = []
    n_a = cos.shape[1]
    for value, k in zip(values.tolist(), order.tolist(), strict=True):
        if value < threshold:
            break
        ib, ia = divmod(k, n_a)
        if ia in used_a or ib in used_b:
            continue
        used_a.add(ia)
        used_b.add(ib)
        out.append(FeatureMatch(layer, fa[ia], fb[ib], value))
    return out
