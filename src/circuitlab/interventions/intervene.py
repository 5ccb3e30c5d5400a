"""``feature_intervention``: change features or error nodes and see the logits react.

Three modes, as in circuit-tracer:

* **iterative patching** (``constrained_layers=None``, the default): the model runs normally
  with the intervention changes added to the MLP outputs; every later transcoder reads the
  changed residual stream, so downstream features react. With ``freeze_attention=True`` the
  attention patterns are those of the clean prompt.
* **constrained** (``constrained_layers=range(a, b)``): the MLP outputs of those layers are
  frozen at their clean values plus the intervention changes (only the linear skip path stays
  live), and cross-layer features write their change only into those layers. Layers outside
  the range run live.
* **direct effects** (``constrained_layers`` covering every layer): attention patterns, every
  norm scale and every MLP output are frozen, so a change reaches each feature and logit only
  directly, through the residual stream. Setting a feature to twice its value then changes every
  target by exactly that feature's column of the attribution graph.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ..models.session import Plan
from ..models.tokens import Prompt
from ..replacement import InterventionResult, ReplacementModel
from .patcher import Clean, Patcher
from .spec import InterventionLike, Limits, Resolved, resolve


@dataclass
class Setup:
    """Everything one intervened run needs: the patcher and the plan of the prompt forward."""

    patcher: Patcher
    plan: Plan
    n_prompt: int


def constrained_set(
    constrained_layers: Iterable[int] | None, n_layers: int
) -> frozenset[int] | None:
    """``constrained_layers`` checked and as a set (None: iterative patching)."""
    if constrained_layers is None:
        return None
    layers = frozenset(int(i) for i in constrained_layers)
    if not layers:
        raise ValueError(
            "constrained_layers is empty: pass e.g. range(a, b), or None for iterative patching."
        )
    bad = sorted(i for i in layers if not 0 <= i < n_layers)
    if bad:
        raise ValueError(
            f"constrained_layers contains layer {bad[0]}, but the model has {n_layers} layers "
            f"(0..{n_layers - 1})."
        )
    return layers


def _check_reach(items: list[Resolved], constrained: frozenset[int], model: ReplacementModel):
    tc = model.transcoders
    for item in items:
        if item.features is None:
            reach = {item.layer}
        else:
            reach = set(range(item.layer, tc.n_layers if tc.is_cross_layer else item.layer + 1))
        if not reach & constrained:
            raise ValueError(
                f"the intervention at layer {item.layer} writes only to layers {sorted(reach)}, "
                f"none of them in constrained_layers ({min(constrained)}..{max(constrained)}): "
                "it would have no effect. Include its layer in constrained_layers, or pass "
                "constrained_layers=None for iterative patching."
            )


def prepare(
    model: ReplacementModel,
    ids: torch.Tensor,
    interventions: Iterable[InterventionLike],
    *,
    constrained_layers: Iterable[int] | None,
    freeze_attention: bool,
    apply_activation_function: bool,
    record: bool,
    allow_open_past_prompt: bool = False,
) -> Setup:
    """Checks the interventions, runs the clean prompt if anything is frozen, builds the plan."""
    tc = model.transcoders
    n_layers, n_pos = model.n_layers, int(ids.shape[0])
    limits = Limits(n_layers, tc.d_transcoder, tc.d_model, n_pos, allow_open_past_prompt)
    items = resolve(interventions, limits, model.dtype)
    constrained = constrained_set(constrained_layers, n_layers)
    if constrained is not None:
        _check_reach(items, constrained, model)
    direct = constrained is not None and len(constrained) == n_layers
    clean = None
    if freeze_attention or constrained is not None:
        _, cap = model.run(ids[None], Plan(record=True))
        assert cap is not None
        clean = Clean.from_capture(tc, cap, apply_activation_function)
    patcher = Patcher(
        tc,
        items,
        clean=clean,
        constrained=constrained,
        apply_fn=apply_activation_function,
        record=record,
        zero_positions=model.zero_positions,
    )
    plan = Plan(
        attention="replay" if (freeze_attention or direct) else "live",
        norms="replay" if direct else "live",
        frozen=clean.capture if clean is not None else None,
        mlp_out=patcher,
    )
    return Setup(patcher, plan, n_pos)


@torch.no_grad()
def feature_intervention(
    model: ReplacementModel,
    prompt: Prompt,
    interventions: Iterable[InterventionLike],
    *,
    constrained_layers: Iterable[int] | None = None,
    freeze_attention: bool = True,
    apply_activation_function: bool = True,
    sparse: bool = False,
    return_activations: bool = True,
) -> InterventionResult:
    """Runs ``prompt`` with ``interventions`` applied (modes in the module docstring).

    ``interventions``: ``(layer, position, feature, value)`` tuples or ``Intervention`` values
    (``set_feature``, ``scale_feature``, ``set_error``, ``scale_error``, ...). With
    ``apply_activation_function=False`` values and returned activations are pre-activations.
    """
    ids = model.ensure_tokenized(prompt)
    setup = prepare(
        model,
        ids,
        interventions,
        constrained_layers=constrained_layers,
        freeze_attention=freeze_attention,
        apply_activation_function=apply_activation_function,
        record=return_activations,
    )
    setup.patcher.begin(0, setup.n_prompt)
    logits, _ = model.run(ids[None], setup.plan)
    acts = setup.patcher.activations(sparse) if return_activations else None
    return InterventionResult(logits[0], acts)
