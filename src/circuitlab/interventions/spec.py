"""Intervention values: what to change, where, and how; checked against a model and a prompt.

An intervention targets a transcoder feature or an error node at ``(layer, position)`` and
either *sets* it to a value or *scales* its current value:

* ``(layer, position, feature, value)`` tuples, as in circuit-tracer, set features;
* ``set_feature`` / ``scale_feature`` / ``ablate_feature`` build feature interventions;
* ``set_error`` / ``scale_error`` / ``ablate_error`` build error-node interventions (the error
  node at ``(layer, pos)`` is the MLP output minus the transcoder reconstruction there).

``position`` is an ``int`` (negative counts from the end of the prompt), a ``slice`` or a 1-D
integer tensor/list of positions. An open-ended slice (``slice(k, None)``) also covers tokens
generated after the prompt. ``feature`` is an ``int`` or a 1-D integer tensor/list. A feature
``value`` broadcasts to ``[n_positions, n_features]``; an error ``value`` is a scalar or
broadcasts to ``[n_positions, d_model]`` (set) / ``[n_positions, 1]`` (scale).

Values are in the units of the activations being read: activations, or pre-activations when
``apply_activation_function=False``. NaN and infinite values are refused when an intervention
is built.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

Position = int | slice | torch.Tensor | Sequence[int]
FeatureIndex = int | torch.Tensor | Sequence[int]
Value = float | int | torch.Tensor
Op = Literal["set", "scale"]


@dataclass(frozen=True)
class Intervention:
    """Set or scale a feature (``feature`` given) or an error node (``feature is None``)."""

    layer: int
    position: Position
    feature: FeatureIndex | None
    value: Value
    op: Op = "set"

    def __post_init__(self) -> None:
        _check_finite(self.value, f"the intervention at layer {self.layer}")

    @property
    def on_error(self) -> bool:
        return self.feature is None


def _check_finite(value: object, where: str) -> None:
    """Refuses NaN and infinite values (they would print NaN probabilities, not an error)."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        finite = math.isfinite(value)
    elif isinstance(value, torch.Tensor) and value.is_floating_point():
        finite = bool(torch.isfinite(value).all())
    else:
        return  # other types are refused, with their own message, when resolved
    if not finite:
        shown = value if isinstance(value, (int, float)) else "a tensor holding NaN or inf"
        raise ValueError(f"{where}: value {shown} is not a finite number; pass a finite value.")


InterventionLike = Intervention | tuple


def set_feature(
    layer: int, position: Position, feature: FeatureIndex, value: Value
) -> Intervention:
    """Feature(s) take ``value`` (circuit-tracer's ``(layer, position, feature, value)``)."""
    return Intervention(layer, position, feature, value, "set")


def scale_feature(
    layer: int, position: Position, feature: FeatureIndex, factor: Value
) -> Intervention:
    """Feature(s) take ``factor`` times their current value (e.g. ``-4`` to invert and boost)."""
    return Intervention(layer, position, feature, factor, "scale")


def ablate_feature(layer: int, position: Position, feature: FeatureIndex) -> Intervention:
    """Feature(s) set to zero."""
    return Intervention(layer, position, feature, 0.0, "set")


def set_error(layer: int, position: Position, value: Value) -> Intervention:
    """The error vector at ``(layer, position)`` becomes ``value`` (``[d_model]`` or scalar)."""
    return Intervention(layer, position, None, value, "set")


def scale_error(layer: int, position: Position, factor: Value) -> Intervention:
    """The error vector at ``(layer, position)`` is multiplied by ``factor``."""
    return Intervention(layer, position, None, factor, "scale")


def ablate_error(layer: int, position: Position) -> Intervention:
    """The error vector at ``(layer, position)`` set to zero (the MLP output becomes the
    transcoder reconstruction there)."""
    return Intervention(layer, position, None, 0.0, "set")


# ---- resolution against a model and a prompt ----------------------------------------------


@dataclass(frozen=True)
class Resolved:
    """A checked intervention in tensor form.

    ``positions[k]`` are absolute positions, or None for an open-ended slice starting at
    ``open_start`` with step ``open_step``; ``features[m]`` (None for an error node);
    ``value`` is ``[k or 1, m]`` (features), ``[k or 1, d_model or 1]`` (error set) or
    ``[k or 1, 1]`` (error scale).
    """

    layer: int
    positions: torch.Tensor | None
    open_start: int
    open_step: int
    features: torch.Tensor | None
    value: torch.Tensor
    op: Op

    def select(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of the forward over absolute positions ``[start, stop)`` this acts on.

        Returns local row indices ``[r]`` and the value rows ``[r, ...]`` for them.
        """
        if self.positions is None:
            first = max(start, self.open_start)
            first += (self.open_start - first) % self.open_step
            absolute = torch.arange(first, stop, self.open_step)
            value = self.value.expand(len(absolute), *self.value.shape[1:])
            return absolute - start, value
        inside = (self.positions >= start) & (self.positions < stop)
        value = self.value if self.value.shape[0] > 1 else self.value.expand(len(inside), -1)
        return self.positions[inside] - start, value[inside]


@dataclass(frozen=True)
class Limits:
    """What an intervention is checked against."""

    n_layers: int
    d_transcoder: int
    d_model: int
    n_pos: int
    allow_open_past_prompt: bool = False


def resolve(
    interventions: Iterable[InterventionLike], limits: Limits, dtype: torch.dtype
) -> list[Resolved]:
    """Checks every intervention; raises ``ValueError`` naming the problem and the fix."""
    if isinstance(interventions, (Intervention, tuple)) and _looks_single(interventions):
        raise ValueError(
            "interventions must be a list of interventions; wrap the single one in a list: "
            "[(layer, position, feature, value)]"
        )
    return [_resolve_one(_as_intervention(item), limits, dtype) for item in interventions]


def _looks_single(x: object) -> bool:
    return isinstance(x, Intervention) or (
        isinstance(x, tuple) and len(x) == 4 and isinstance(x[0], int)
    )


def _as_intervention(item: object) -> Intervention:
    if isinstance(item, Intervention):
        return item
    if isinstance(item, (tuple, list)) and len(item) == 4:
        return Intervention(item[0], item[1], item[2], item[3], "set")
    raise ValueError(
        f"Cannot read intervention {item!r}: use a (layer, position, feature, value) tuple or "
        "circuitlab.interventions.set_feature/scale_feature/set_error/scale_error."
    )


def _resolve_one(iv: Intervention, lim: Limits, dtype: torch.dtype) -> Resolved:
    layer = _layer(iv.layer, lim.n_layers)
    positions, open_start, open_step = _positions(iv.position, lim)
    where = f"the intervention at layer {layer}, position {_show(iv.position)}"
    if iv.op not in ("set", "scale"):
        raise ValueError(f"{where} has op {iv.op!r}; use 'set' or 'scale'.")
    k = 1 if positions is None else len(positions)
    if iv.feature is None:
        features = None
        width = lim.d_model if iv.op == "set" else 1
        value = _value(iv.value, (k, width), dtype, where, positions is None, "d_model")
    else:
        features = _features(iv.feature, layer, lim.d_transcoder)
        value = _value(iv.value, (k, len(features)), dtype, where, positions is None, "features")
    return Resolved(layer, positions, open_start, open_step, features, value, iv.op)


def _show(position: object) -> str:
    if isinstance(position, torch.Tensor):
        return f"tensor{tuple(position.tolist())}"
    return repr(position)


def _as_int(x: object, what: str) -> int:
    if isinstance(x, torch.Tensor) and x.numel() == 1 and not x.is_floating_point():
        return int(x.item())
    if isinstance(x, bool) or not isinstance(x, int):
        raise ValueError(f"{what} must be an int, got {x!r} ({type(x).__name__}).")
    return x


def _layer(layer: object, n_layers: int) -> int:
    value = _as_int(layer, "layer")
    if not 0 <= value < n_layers:
        raise ValueError(
            f"layer {value} does not exist: the model has {n_layers} layers (0..{n_layers - 1})."
        )
    return value


def _positions(position: object, lim: Limits) -> tuple[torch.Tensor | None, int, int]:
    n = lim.n_pos
    span = f"the prompt has {n} tokens (positions 0..{n - 1}, or -{n}..-1 from the end)"
    if isinstance(position, slice):
        step = 1 if position.step is None else _as_int(position.step, "slice step")
        if step < 1:
            raise ValueError(f"position slice step must be positive, got {step}.")
        if position.stop is None:
            start = 0 if position.start is None else _as_int(position.start, "slice start")
            start = start + n if start < 0 else start
            if start < 0 or (start >= n and not lim.allow_open_past_prompt):
                raise ValueError(f"position slice {_show(position)} selects no token: {span}.")
            return None, start, step
        idx = torch.arange(n)[position]
        if len(idx) == 0:
            raise ValueError(f"position slice {_show(position)} selects no token: {span}.")
        return idx, 0, 1
    if isinstance(position, (torch.Tensor, list, tuple)):
        idx = torch.as_tensor(position)
        if idx.dtype == torch.bool or idx.is_floating_point() or idx.ndim > 1:
            raise ValueError(
                f"positions must be an int, a slice or a 1-D list/tensor of ints; got "
                f"{_show(position)} (dtype {idx.dtype}). Use e.g. torch.tensor([1, 2])."
            )
        idx = idx.reshape(-1).long().cpu()
        if len(idx) == 0:
            raise ValueError("positions are empty: give at least one position.")
    else:
        idx = torch.tensor([_as_int(position, "position")])
    bad = (idx >= n) | (idx < -n)
    if bad.any():
        raise ValueError(f"position {int(idx[bad][0])} is past the end of the prompt: {span}.")
    return torch.where(idx < 0, idx + n, idx), 0, 1


def _features(feature: object, layer: int, d_t: int) -> torch.Tensor:
    if isinstance(feature, (torch.Tensor, list, tuple)):
        idx = torch.as_tensor(feature)
        if idx.dtype == torch.bool or idx.is_floating_point() or idx.ndim > 1:
            raise ValueError(
                f"feature indices must be an int or a 1-D list/tensor of ints; got dtype "
                f"{idx.dtype}, shape {tuple(idx.shape)}. Use e.g. torch.tensor([3, 7])."
            )
        idx = idx.reshape(-1).long().cpu()
        if len(idx) == 0:
            raise ValueError("feature indices are empty: give at least one feature.")
    else:
        idx = torch.tensor([_as_int(feature, "feature index")])
    bad = (idx < 0) | (idx >= d_t)
    if bad.any():
        raise ValueError(
            f"feature {int(idx[bad][0])} does not exist at layer {layer}: the transcoders have "
            f"{d_t} features per layer (0..{d_t - 1})."
        )
    return idx


def _value(
    value: object,
    shape: tuple[int, int],
    dtype: torch.dtype,
    where: str,
    open_ended: bool,
    axis: str,
) -> torch.Tensor:
    if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
        raise ValueError(f"{where}: value must be a number or a float tensor, got {value!r}.")
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise ValueError(
                f"{where}: value has dtype {value.dtype}; pass a floating-point tensor "
                "(e.g. value.float())."
            )
        t = value.detach().to(dtype)
    else:
        t = torch.tensor(float(value), dtype=dtype)
    t = t.cpu()
    k, m = shape
    if open_ended and t.ndim == 2 and t.shape[0] > 1:
        raise ValueError(
            f"{where}: an open-ended position slice covers generated tokens too, so its value "
            f"cannot vary by position; pass a scalar or shape [{axis}={m}]."
        )
    if t.ndim == 1 and k > 1 and m == 1 and t.shape[0] == k:  # one value per position
        t = t[:, None]
    try:
        if t.ndim > 2:
            raise RuntimeError("too many axes")
        out = torch.broadcast_to(t, (k, m)).clone()
    except RuntimeError:
        raise ValueError(
            f"{where}: value of shape {tuple(t.shape)} does not broadcast to "
            f"[positions={k}, {axis}={m}]; pass a scalar or a tensor of that shape."
        ) from None
    return out
