"""One forward pass of a Hugging Face model with circuitlab's hooks.

``run(model, adapter, input_ids, plan, read_hook, write_hook)`` installs hooks for the
duration of one call and removes them afterwards, so the model stays a plain transformers model.
A ``Plan`` says what to record and what to freeze:

* attention patterns and norm scales are ``live`` (normal), ``detach`` (their value is kept but
  gradients do not pass through them) or ``replay`` (taken from an earlier ``Capture``; a
  forward longer than the capture, e.g. a prompt plus generated tokens, replays the captured
  positions and runs the rest live);
* ``mlp_out`` replaces the value at the transcoders' output point of each layer (the local
  replacement model writes reconstruction + error there);
* ``embed`` edits the embedding output (token nodes).

Transcoder hook names are TransformerLens names relative to a block: ``hook_resid_mid`` (the
residual before the pre-MLP norm), ``ln2.hook_normalized`` / ``mlp.hook_in`` (the MLP's input,
after that norm), ``mlp.hook_out`` (the MLP module's output) and ``hook_mlp_out`` (what the
block adds to the residual: after Gemma's post-feedforward norm).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from . import attention
from .adapters import Adapter, get_module
from .norms import norm_apply, norm_scale

Mode = Literal["live", "detach", "replay"]
NORM_SLOTS = ("ln1", "post_attn_norm", "ln2", "post_mlp_norm")

READ_POINTS = {
    "hook_resid_mid": "resid_mid",
    "ln2.hook_normalized": "mlp_in",
    "mlp.hook_in": "mlp_in",
}
WRITE_POINTS = {"mlp.hook_out": "mlp_out", "hook_mlp_out": "block_mlp_out"}


def check_hook_names(input_hook: str, output_hook: str) -> None:
    """Refuses transcoder hook names circuitlab cannot map to a model."""
    if input_hook not in READ_POINTS:
        raise ValueError(
            f"Unsupported transcoder input hook {input_hook!r}; use one of {sorted(READ_POINTS)}."
        )
    if output_hook not in WRITE_POINTS:
        raise ValueError(
            f"Unsupported transcoder output hook {output_hook!r}; use one of {sorted(WRITE_POINTS)}."
        )


@dataclass
class Capture:
    """Values recorded in one forward (batch axis first).

    ``embed [b, pos, d]`` embedding output (token vectors); ``patterns[layer] [b, heads, q, k]``;
    ``scales[slot][layer] [b, pos, 1]`` per norm slot (``ln1``, ``post_attn_norm``, ``ln2``,
    ``post_mlp_norm``) and ``final_scale [b, pos, 1]``; ``reads[layer]`` / ``writes[layer]``
    ``[b, pos, d]`` the transcoders' input and output points; ``final [b, pos, d]`` the final
    norm's output; ``logits [b, pos, vocab]`` the model's logits (after any softcap).
    """

    embed: torch.Tensor | None = None
    patterns: dict[int, torch.Tensor] = field(default_factory=dict)
    scales: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)
    final_scale: torch.Tensor | None = None
    reads: dict[int, torch.Tensor] = field(default_factory=dict)
    writes: dict[int, torch.Tensor] = field(default_factory=dict)
    final: torch.Tensor | None = None
    logits: torch.Tensor | None = None

    def stacked_reads(self) -> torch.Tensor:
        """``[n_layers, pos, d]`` for batch row 0."""
        return torch.stack([self.reads[i][0] for i in sorted(self.reads)])

    def stacked_writes(self) -> torch.Tensor:
        """``[n_layers, pos, d]`` for batch row 0."""
        return torch.stack([self.writes[i][0] for i in sorted(self.writes)])


WriteHook = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Plan:
    """What one forward records, freezes and replaces (see the module docstring)."""

    record: bool = False
    attention: Mode = "live"
    norms: Mode = "live"
    frozen: Capture | None = None
    mlp_out: WriteHook | None = None
    embed: Callable[[torch.Tensor], torch.Tensor] | None = None
    frozen_layers: frozenset[int] | None = None  # None: every layer follows the modes above
    # With ``record``: where each layer's pattern goes as soon as it is computed (e.g. a
    # mapped file, so a long prompt never holds every layer's pattern in memory at once).
    pattern_sink: Callable[[int, torch.Tensor], torch.Tensor] | None = None

    def layer_mode(self, mode: Mode, layer: int) -> Mode:
        if self.frozen_layers is None or layer in self.frozen_layers:
            return mode
        return "live"


def _replayed(capture: Capture | None, value: torch.Tensor | None, what: str) -> torch.Tensor:
    if capture is None or value is None:
        raise ValueError(f"Replaying {what} needs a Capture recorded from the same prompt.")
    return value


def _replay_prefix(frozen: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """Replays the rows of ``pattern [b, h, q, k]`` whose query position the capture covers.

    Queries are the last ``q`` of ``k`` positions (as with a KV cache); rows past the captured
    prompt keep their live values, captured rows get zeros beyond the captured keys (causal).
    """
    q, k = pattern.shape[-2:]
    start = k - q
    n = max(0, min(frozen.shape[-2] - start, q))
    if n == 0:
        return pattern
    rows = frozen[..., start : start + n, : min(k, frozen.shape[-1])]
    out = pattern.clone()
    out[..., :n, :] = 0
    out[..., :n, : rows.shape[-1]] = rows.expand(*pattern.shape[:2], n, rows.shape[-1])
    return out


class _Hooks:
    def __init__(self, adapter: Adapter, plan: Plan, input_hook: str, output_hook: str):
        self.adapter, self.plan = adapter, plan
        self.read_point = READ_POINTS[input_hook]
        self.write_point = WRITE_POINTS[output_hook]
        self.capture = Capture() if plan.record else None
        self.current_reads: dict[int, torch.Tensor] = {}

    # -- norms --------------------------------------------------------------------------
    def norm(self, slot: str, layer: int) -> Callable[..., torch.Tensor | None]:
        plan, kind = self.plan, self.adapter.norm

        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor):
            mode = plan.norms if layer < 0 else plan.layer_mode(plan.norms, layer)
            if mode == "live" and self.capture is None:
                return None
            x = args[0]
            if mode == "replay":
                src = plan.frozen
                scale = (
                    _replayed(src, src.final_scale if src else None, "the final norm")
                    if layer < 0
                    else _replayed(src, src.scales.get(slot, {}).get(layer) if src else None, slot)
                )
                n = scale.shape[1]
                if x.shape[1] > n:  # positions past the capture run live
                    live = norm_scale(kind, module, x[:, n:]).to(scale.dtype)
                    scale = torch.cat([scale, live], dim=1)
                    if self.capture is not None:
                        self._record_scale(slot, layer, scale)
                    out = output.clone()
                    out[:, :n] = norm_apply(kind, module, x[:, :n], scale[:, :n].detach())
                    return out
                scale = scale[:, : x.shape[1]]
            else:
                scale = norm_scale(kind, module, x)
            if self.capture is not None:
                self._record_scale(slot, layer, scale)
            if mode == "live":
                return None
            return norm_apply(kind, module, x, scale.detach())

        return hook

    def _record_scale(self, slot: str, layer: int, scale: torch.Tensor) -> None:
        assert self.capture is not None
        if layer < 0:
            self.capture.final_scale = scale.detach()
        else:
            self.capture.scales.setdefault(slot, {})[layer] = scale.detach()

    # -- attention ----------------------------------------------------------------------
    def pattern(self, layer: int, pattern: torch.Tensor) -> torch.Tensor:
        mode = self.plan.layer_mode(self.plan.attention, layer)
        if self.capture is not None:
            sink = self.plan.pattern_sink
            kept = pattern.detach()
            self.capture.patterns[layer] = kept if sink is None else sink(layer, kept)
        if mode == "detach":
            return pattern.detach()
        if mode == "replay":
            src = self.plan.frozen
            frozen = _replayed(src, src.patterns.get(layer) if src else None, "attention")
            q, k = pattern.shape[-2:]
            if k - q == 0 and q <= frozen.shape[-2]:
                return frozen[..., :q, :k].expand_as(pattern).to(pattern.dtype)
            return _replay_prefix(frozen, pattern)
        return pattern

    # -- transcoder points --------------------------------------------------------------
    def read(self, layer: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            self.current_reads[layer] = args[0]
            if self.capture is not None:
                self.capture.reads[layer] = args[0].detach()

        return hook

    def read_after_norm(self, layer: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            self.current_reads[layer] = output
            if self.capture is not None:
                self.capture.reads[layer] = output.detach()

        return hook

    def write(self, layer: int) -> Callable[..., torch.Tensor]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor):
            if self.plan.mlp_out is not None:
                output = self.plan.mlp_out(layer, self.current_reads[layer], output)
            if self.capture is not None:
                self.capture.writes[layer] = output.detach()
            return output

        return hook

    def embed(self, module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor):
        if self.plan.embed is not None:
            output = self.plan.embed(output)
        if self.capture is not None:
            self.capture.embed = output.detach()
        return output

    def final(
        self, module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> None:
        if self.capture is not None:
            self.capture.final = output.detach()


@contextmanager
def hooked(
    model: nn.Module, adapter: Adapter, plan: Plan, input_hook: str, output_hook: str
) -> Iterator[Capture | None]:
    """Installs the plan's hooks on ``model`` for the duration of the block."""
    h = _Hooks(adapter, plan, input_hook, output_hook)
    handles = []
    blocks = get_module(model, adapter.blocks)
    attn_modules = []
    try:
        # Norm hooks first: a later hook on the same module sees the frozen output.
        for layer, block in enumerate(blocks):  # type: ignore[arg-type]
            for slot in NORM_SLOTS:
                name = getattr(adapter, slot)
                if name is not None:
                    handles.append(
                        get_module(block, name).register_forward_hook(h.norm(slot, layer))
                    )
        final_norm = get_module(model, adapter.final_norm)
        handles.append(final_norm.register_forward_hook(h.norm("final", -1)))
        handles.append(final_norm.register_forward_hook(h.final))
        handles.append(get_module(model, adapter.embed).register_forward_hook(h.embed))
        for layer, block in enumerate(blocks):  # type: ignore[arg-type]
            ln2, mlp = get_module(block, adapter.ln2), get_module(block, adapter.mlp)
            if h.read_point == "resid_mid":
                handles.append(ln2.register_forward_pre_hook(h.read(layer)))
            else:
                handles.append(ln2.register_forward_hook(h.read_after_norm(layer)))
            if h.write_point == "block_mlp_out" and adapter.post_mlp_norm is not None:
                target = get_module(block, adapter.post_mlp_norm)
            else:
                target = mlp
            handles.append(target.register_forward_hook(h.write(layer)))
            attn = get_module(block, adapter.attn)
            attn._circuitlab_attn = (h.pattern, layer)  # type: ignore[attr-defined]
            attn_modules.append(attn)
        yield h.capture
    finally:
        for handle in handles:
            handle.remove()
        for attn in attn_modules:
            if hasattr(attn, "_circuitlab_attn"):
                del attn._circuitlab_attn


def ensure_circuitlab_attention(model: nn.Module) -> None:
    """Switches a transformers model to the ``circuitlab`` attention implementation."""
    attention.register()
    setter = getattr(model, "set_attn_implementation", None)
    if callable(setter):
        setter(attention.IMPLEMENTATION)
    else:  # older transformers
        model.config._attn_implementation = attention.IMPLEMENTATION  # type: ignore[union-attr]
