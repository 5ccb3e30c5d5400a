"""Steering from the page: set or scale graph nodes, compare next-token distributions and
greedy continuations with and without the change (``ReplacementModel.feature_intervention``).

The page offers the CLI's intervention modes (``circuitlab intervene --constrained-layers A-B``
/ ``all`` and ``--no-freeze-attention``; ``interventions/intervene.py``): iterative patching
with attention frozen (the default) or live, constrained layers, and direct effects. Every
answer names the mode it ran in (``SteerMode.public``), and the same mode gives the same
probabilities as the library and the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from circuitlab.graph.graph import Graph

MAX_NODES = 512
MAX_NEW_TOKENS = 64


def steering_prompt(graph_dir: Path, slug: str, metadata_prompt: str | None) -> Any:
    """The graph's own token ids when its ``.safetensors`` is beside it, else its prompt text."""
    saved = graph_dir / f"{slug}.safetensors"
    if saved.is_file():
        return Graph.load(saved).input_tokens
    if not metadata_prompt:
        raise ValueError(f"graph {slug!r} has no prompt to steer")
    return metadata_prompt


@dataclass(frozen=True)
class SteerMode:
    """How interventions reach the model (``interventions.feature_intervention``'s modes).

    ``constrained_layers``: None for iterative patching, else the layers whose MLP outputs are
    frozen (all of them: direct effects); ``freeze_attention``: attention patterns of the clean
    prompt (ignored for direct effects, which freeze them anyway).
    """

    constrained_layers: tuple[int, ...] | None
    freeze_attention: bool
    n_layers: int

    @classmethod
    def parse(cls, constrained_layers: Any, freeze_attention: Any, n_layers: int) -> SteerMode:
        """From a request: ``constrained_layers`` None, ``"A-B"``, ``"A"``, ``"all"`` or a list
        of layers (as ``--constrained-layers``); ``freeze_attention`` a boolean."""
        if not isinstance(freeze_attention, bool):
            raise ValueError("freeze_attention must be true or false")
        layers = _layers(constrained_layers, n_layers)
        return cls(layers, freeze_attention, n_layers)

    @property
    def name(self) -> str:
        if self.constrained_layers is None:
            return "iterative"
        return "direct" if len(self.constrained_layers) == self.n_layers else "constrained"

    @property
    def label(self) -> str:
        attention = "attention frozen" if self.freeze_attention else "attention live"
        if self.name == "iterative":
            return f"iterative patching, {attention}"
        if self.name == "direct":
            return "direct effects (every layer's MLP, norm and attention frozen)"
        return f"constrained to {_span(self.constrained_layers or ())}, {attention}"

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``feature_intervention`` for this mode."""
        layers = self.constrained_layers
        return {
            "constrained_layers": None if layers is None else list(layers),
            "freeze_attention": self.freeze_attention,
        }

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "constrained_layers": None
            if self.constrained_layers is None
            else list(self.constrained_layers),
            "freeze_attention": self.freeze_attention,
        }


def _layers(spec: Any, n_layers: int) -> tuple[int, ...] | None:
    if spec is None or spec == "":
        return None
    if isinstance(spec, str):
        text = spec.strip()
        if text == "all":
            return tuple(range(n_layers))
        a, sep, b = text.partition("-")
        if not (a.strip().isdigit() and (not sep or b.strip().isdigit())):
            raise ValueError(
                f'constrained_layers {spec!r}: give "A-B", "A", "all" or a list of layers'
            )
        start, stop = int(a), int(b) if sep else int(a)
        if stop < start:
            raise ValueError(f"constrained_layers {spec!r}: the range is empty")
        layers = tuple(range(start, stop + 1))
    elif (
        isinstance(spec, list)
        and spec
        and all(isinstance(i, int) and not isinstance(i, bool) for i in spec)
    ):
        layers = tuple(sorted(set(spec)))
    else:
        raise ValueError('constrained_layers must be "A-B", "A", "all" or a list of layers')
    bad = [i for i in layers if not 0 <= i < n_layers]
    if bad:
        raise ValueError(
            f"constrained_layers names layer {bad[0]}; the model has layers 0-{n_layers - 1}"
        )
    return layers


def _span(layers: tuple[int, ...]) -> str:
    """``layer 3``, ``layers 0-1`` or ``layers 0, 2``."""
    if len(layers) == 1:
        return f"layer {layers[0]}"
    if list(layers) == list(range(layers[0], layers[-1] + 1)):
        return f"layers {layers[0]}-{layers[-1]}"
    return "layers " + ", ".join(map(str, layers))


def steer(
    model: Any,
    prompt: Any,
    node_ids: list[str],
    *,
    value: float | None = None,
    scale: float | None = None,
    max_new_tokens: int = 12,
    top_k: int = 8,
    constrained_layers: Any = None,
    freeze_attention: Any = True,
) -> dict[str, Any]:
    """Top next tokens and a greedy continuation, original and steered.

    ``node_ids`` are feature (``{layer}_{feature}_{pos}``) or error (``{layer}_-1_{pos}``) node
    ids; ``value`` sets them, ``scale`` multiplies them (neither: ablate). ``constrained_layers``
    and ``freeze_attention`` choose the mode (``SteerMode.parse``); the answer's ``mode`` names it.
    """
    from circuitlab.interventions import node_interventions

    if not node_ids or len(node_ids) > MAX_NODES:
        raise ValueError(f"steer 1 to {MAX_NODES} feature or error nodes")
    if not 0 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise ValueError(f"max_new_tokens must be between 0 and {MAX_NEW_TOKENS}")
    n_layers = model.n_layers
    mode = SteerMode.parse(constrained_layers, freeze_attention, n_layers)
    for node_id in node_ids:
        layer = node_id.split("_")[0]
        if layer == "E" or (layer.isdigit() and int(layer) >= n_layers):
            raise ValueError(f"{node_id!r} is a token or logit node; steer features or errors")
    interventions = node_interventions(node_ids, value=value, scale=scale)
    tokenizer = model.tokenizer

    def run(ivs: list[Any]) -> dict[str, Any]:
        result = model.feature_intervention(prompt, ivs, return_activations=False, **mode.kwargs())
        logits = result.logits[-1]
        probs = torch.softmax(logits.float(), -1)
        p, idx = probs.topk(min(top_k, probs.shape[-1]))
        top = [
            {"token": _decode(tokenizer, int(i)), "id": int(i), "prob": float(q)}
            for q, i in zip(p.tolist(), idx.tolist(), strict=True)
        ]
        completion = ""
        if max_new_tokens:
            gen = model.feature_intervention_generate(
                prompt, ivs, max_new_tokens=max_new_tokens, **mode.kwargs()
            )
            completion = gen.completion
        return {"top": top, "completion": completion}

    return {
        "original": run([]),
        "steered": run(interventions),
        "n_interventions": len(interventions),
        "mode": mode.public(),
    }


def _decode(tokenizer: Any, token_id: int) -> str:
    return str(tokenizer.decode([token_id])) if tokenizer is not None else f"<{token_id}>"
