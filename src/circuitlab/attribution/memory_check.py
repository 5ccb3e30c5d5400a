"""Refusing an attribution that will not fit, before it runs, with settings that would.

``attribute`` calls ``check_attribution_memory`` twice:

1. before the forward pass, for the forward's activations and capture (the prompt length is
   all it needs);
2. once the active features are counted (after the ``sources`` phase, before any edge row),
   for the sweep, the graph and its scores, with the exact number of active features. When
   ``batch_size`` rows per backward sweep do not fit but fewer do, the largest halving that
   fits is used instead (``check_before_sweep``; only the speed changes, the graph does not).

Each compares the memory still to be allocated at that point (``attribution.memory``'s
estimate minus what is already alive: the loaded model, then also the capture and sources) with
the memory available (``available_memory``):

* RAM: ``MemAvailable`` of ``/proc/meminfo``, lowered to the room left under the process's
  cgroup limit (v2 ``memory.max - memory.current`` of its cgroup and every parent; v1
  ``memory.limit_in_bytes - memory.usage_in_bytes``);
* CUDA: the device's free memory plus what torch's allocator holds unused; the parts the engine
  keeps on the host (edge rows, influence, graph rows, scores) are checked against RAM;
* the environment variable ``CIRCUITLAB_AVAILABLE_MEMORY`` (bytes, or ``8GiB``, ``500MB``)
  replaces every measured amount, for machines whose limits cannot be read and for tests.

A refusal (``NotEnoughMemoryError``) names both numbers and the settings that would fit, found
with the same estimator (each allowed a smaller sweep batch): a ``max_feature_nodes`` cap,
``offload="disk"``, half precision or a shorter prompt. ``attribute(check_memory=False)`` (CLI
``--no-memory-check``) skips the check. The estimate's documented accuracy is a factor
``memory.TOLERANCE`` either way; the check takes it at face value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .memory import (
    MemoryEstimate,
    ModelShapes,
    TranscoderShapes,
    estimate_memory,
    human,
    phases_of,
    shapes_from_config,
)

if TYPE_CHECKING:
    from ..replacement import ReplacementModel

#: Replaces the measured available memory (every pool) when set: bytes or ``8GiB``/``500MB``.
AVAILABLE_MEMORY_ENV = "CIRCUITLAB_AVAILABLE_MEMORY"
#: Parts the engine keeps in RAM even when the model is on a GPU.
HOST_PARTS = ("edge rows", "influence", "graph rows", "scores / pruning")
_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_HALF = "bfloat16"
#: The phases each stage of the check covers.
_STAGES = {
    "forward": ("forward",),
    "sweep": ("sweep", "graph", "scores"),
    "all": ("load", "forward", "sweep", "graph", "scores"),
}


@dataclass(frozen=True)
class Available:
    """Memory available in one pool (``"ram"`` or ``"cuda"``) and where the number came from."""

    bytes: int
    source: str


class NotEnoughMemoryError(MemoryError):
    """The attribution's estimate exceeds the available memory; nothing was computed.

    ``needed``/``available``: bytes still to allocate and bytes free in ``pool``;
    ``suggestions``: setting changes that fit (each a dict of ``attribute`` keyword arguments,
    ``dtype`` and ``n_tokens`` included); ``message(cli=True)`` words them as CLI flags.
    """

    def __init__(
        self,
        *,
        pool: str,
        needed: int,
        available: Available,
        phase: str,
        context: str,
        suggestions: list[dict[str, Any]],
    ):
        self.pool, self.needed, self.available = pool, needed, available
        self.phase, self.context, self.suggestions = phase, context, suggestions
        super().__init__(self.message())

    def message(self, *, cli: bool = False) -> str:
        where = "GPU memory" if self.pool == "cuda" else "RAM"
        text = (
            f"not enough memory for this attribution: its {self.phase} phase needs about "
            f"{human(self.needed)} more {where} ({self.context}) but "
            f"{human(self.available.bytes)} is available ({self.available.source})."
        )
        if self.suggestions:
            options = " or ".join(_describe(s, cli) for s in self.suggestions)
            text += f" It would fit with {options}."
        else:
            text += " No setting fits: use a shorter prompt or a machine with more memory."
        hatch = "--no-memory-check" if cli else "check_memory=False"
        return (
            f"{text} To run anyway: {hatch} (or set {AVAILABLE_MEMORY_ENV} to the bytes "
            "you can spare)."
        )


def _describe(change: Mapping[str, Any], cli: bool) -> str:
    words = []
    for key, value in change.items():
        if key == "n_tokens":
            words.append(f"a prompt of at most {value} tokens")
        elif key == "dtype":
            words.append(
                f"--dtype {value}" if cli else f"the model loaded with dtype=torch.{value}"
            )
        elif cli:
            words.append(f"--{key} {value}")
        else:
            words.append(f"{key}={value!r}")
    return " + ".join(words)


# ---- what is available -----------------------------------------------------------------------
def parse_bytes(text: str, name: str = AVAILABLE_MEMORY_ENV) -> int:
    """``"8GiB"``, ``"8G"``, ``"500MB"``, ``"1048576"`` -> bytes (binary units); ``name``: the
    setting the text came from, for the error."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", text.lower())
    if not m:
        raise ValueError(f"{name}={text!r}: give bytes or a size such as 8GiB or 500MB")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def available_memory(
    device: torch.device | str = "cpu",
    *,
    meminfo: str | Path = "/proc/meminfo",
    cgroup_root: str | Path = "/sys/fs/cgroup",
    proc_cgroup: str | Path = "/proc/self/cgroup",
) -> dict[str, Available]:
    """Available memory per pool that ``device`` uses (an unmeasurable pool is left out)."""
    override = os.environ.get(AVAILABLE_MEMORY_ENV)
    device = torch.device(device)
    pools = ["ram", "cuda"] if device.type == "cuda" else ["ram"]
    if override:
        n = parse_bytes(override)
        return {p: Available(n, f"{AVAILABLE_MEMORY_ENV}={override}") for p in pools}
    out: dict[str, Available] = {}
    ram = _ram(Path(meminfo), Path(cgroup_root), Path(proc_cgroup))
    if ram is not None:
        out["ram"] = ram
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        out["cuda"] = Available(int(free + cached), f"free on {device}")
    return out


def _ram(meminfo: Path, cgroup_root: Path, proc_cgroup: Path) -> Available | None:
    found: list[Available] = []
    try:
        m = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo.read_text(), re.M)
        if m:
            found.append(Available(int(m.group(1)) * 1024, "MemAvailable"))
    except OSError:
        pass
    room = _cgroup_room(cgroup_root, proc_cgroup)
    if room is not None:
        found.append(Available(room, "under the cgroup memory limit"))
    return min(found, key=lambda a: a.bytes) if found else None


def _cgroup_room(root: Path, proc_cgroup: Path) -> int | None:
    """Bytes left under the tightest cgroup memory limit of this process (None: no limit)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    rooms: list[int] = []
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if controllers == "":  # v2: the process's group and each parent up to the root
            d = root / rel.lstrip("/")
            while True:
                room = _room(d / "memory.max", d / "memory.current")
                if room is not None:
                    rooms.append(room)
                if d == root or root not in d.parents:
                    break
                d = d.parent
        elif "memory" in controllers.split(","):  # v1
            for d in (root / "memory" / rel.lstrip("/"), root / "memory"):
                room = _room(d / "memory.limit_in_bytes", d / "memory.usage_in_bytes")
                if room is not None:
                    rooms.append(room)
                    break
    return min(rooms) if rooms else None


def _room(limit_file: Path, usage_file: Path) -> int | None:
    try:
        limit = limit_file.read_text().strip()
        usage = int(usage_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if not limit.isdigit() or int(limit) >= 2**60:  # "max", or v1's "no limit"
        return None
    return max(0, int(limit) - usage)


# ---- the check ---------------------------------------------------------------------------------
@dataclass
class AttributionPlan:
    """What the estimate needs: the loaded model's shapes and ``attribute``'s settings."""

    model: ModelShapes
    transcoders: TranscoderShapes
    n_tokens: int
    settings: dict[str, Any] = field(default_factory=dict)  # estimate_memory's keywords
    n_active: int | None = None  # known after the sources phase

    @classmethod
    def of(cls, model: ReplacementModel, n_tokens: int, **settings: Any) -> AttributionPlan:
        m, tc, loading = loaded_shapes(model)
        return cls(m, tc, n_tokens, {**loading, **settings})

    def estimate(self, **changes: Any) -> MemoryEstimate:
        settings = {**self.settings, **changes}
        n_tokens = settings.pop("n_tokens", self.n_tokens)
        return estimate_memory(
            self.model, self.transcoders, n_tokens, n_active=self.n_active, **settings
        )


def loaded_shapes(model: ReplacementModel) -> tuple[ModelShapes, TranscoderShapes, dict[str, Any]]:
    """Shapes of a loaded model and its transcoders, and how they were loaded (dtype, lazy)."""
    config: Any = model.model.config
    cfg = config.to_dict()
    n_params = sum(p.numel() for p in model.model.parameters())
    tc = model.transcoders
    names = [n.rsplit(".", 1)[-1] for n, _ in tc.named_parameters()]
    k = next((getattr(a, "k", None) for a in _activations(tc) if hasattr(a, "k")), None)
    shapes = TranscoderShapes(
        "clt" if tc.is_cross_layer else "plt",
        tc.n_layers,
        tc.d_model,
        tc.d_transcoder,
        tc.has_skip,
        k,
    )
    loading = {
        "dtype": str(model.dtype).removeprefix("torch."),
        "lazy_decoder": not any(n.startswith("W_dec") for n in names),
        "lazy_encoder": not tc.is_cross_layer and "W_enc_data" not in names,
    }
    return shapes_from_config(cfg, n_params), shapes, loading


def _activations(tc: Any) -> Iterable[Any]:
    if hasattr(tc, "activations"):
        return list(tc.activations)
    return [layer.activation for layer in getattr(tc, "layers", [])]


def check_attribution_memory(
    plan: AttributionPlan,
    device: torch.device | str,
    *,
    stage: str,
    available: Mapping[str, Available] | None = None,
) -> None:
    """Raises ``NotEnoughMemoryError`` when ``plan`` will not fit (see the module docstring).

    ``stage``: ``"forward"`` (before the forward pass), ``"sweep"`` (active features known) or
    ``"all"`` (nothing loaded yet: the whole peak less the runtime, as ``estimate-memory``
    checks it).
    ``available`` defaults to ``available_memory(device)``.
    """
    if stage not in _STAGES:
        raise ValueError(f"stage must be one of {', '.join(_STAGES)}; got {stage!r}")
    avail = dict(available_memory(device) if available is None else available)
    cuda = torch.device(device).type == "cuda"
    short = _shortfall(plan.estimate(), stage, cuda, avail)
    if short is None:
        return
    pool, phase, needed = short
    est = plan.estimate()
    a = est.assumptions
    context = f"{a['n_tokens']} tokens"
    if stage != "forward":
        context += f", {a['n_active']:,} active features, {a['feature_rows']:,} feature rows"
    raise NotEnoughMemoryError(
        pool=pool,
        needed=needed,
        available=avail[pool],
        phase=phase,
        context=context + f", batch_size {a['batch_size']}, {a['dtype']}",
        suggestions=suggest(plan, stage, cuda, avail),
    )


def _needs(est: MemoryEstimate, stage: str, cuda: bool) -> dict[str, tuple[str, int]]:
    """Per pool: the phase that needs most and the bytes still to allocate for it."""
    parts = est.parts
    pools = {"ram": parts}
    if cuda:  # the host keeps the edge rows, the graph and its scores
        pools = {
            "cuda": {k: (0 if k in HOST_PARTS else v) for k, v in parts.items()},
            "ram": {k: v for k, v in parts.items() if k in HOST_PARTS},
        }
    out = {}
    for pool, pp in pools.items():
        phases = phases_of(pp)
        # Alive already: this process's runtime, and the loaded model unless stage is "all".
        alive = pp.get("runtime", 0) if stage == "all" else phases["load"]
        if stage == "sweep":
            alive += pp.get("attention patterns", 0)
            alive += pp.get("capture (reads, writes, errors)", 0)
            alive += pp.get("sources (decoder + encoder rows)", 0)
        phase = max(_STAGES[stage], key=lambda k: phases[k])
        out[pool] = (phase, max(0, phases[phase] - alive))
    return out


def _shortfall(
    est: MemoryEstimate, stage: str, cuda: bool, avail: Mapping[str, Available]
) -> tuple[str, str, int] | None:
    for pool, (phase, needed) in _needs(est, stage, cuda).items():
        if pool in avail and needed > avail[pool].bytes:
            return pool, phase, needed
    return None


def suggest(
    plan: AttributionPlan, stage: str, cuda: bool, avail: Mapping[str, Available]
) -> list[dict[str, Any]]:
    """Setting changes that fit, each checked with the estimator (the simplest ones first).

    From the sweep on, a change fits when it does with ``batch_size`` or one of its halvings
    (``check_before_sweep`` takes the largest that fits), so a smaller batch is never
    suggested alone."""
    s = plan.settings

    def fits(**changes: Any) -> bool:
        batch = changes.pop("batch_size", s.get("batch_size", 256))
        batches = [batch] if stage == "forward" else [batch, *_halvings(batch)]
        return any(
            _shortfall(plan.estimate(**changes, batch_size=b), stage, cuda, avail) is None
            for b in batches
        )

    out: list[dict[str, Any]] = []
    half = s.get("dtype", "float32") in ("float32", "float64")
    if stage == "forward":  # only the prompt length and the precision matter here
        if half and fits(dtype=_HALF):
            out.append({"dtype": _HALF})
        n = _largest(1, plan.n_tokens - 1, lambda n: fits(n_tokens=n))
        if n is not None:
            out.append({"n_tokens": n})
        return out
    rows = plan.estimate().assumptions["feature_rows"]
    cap = _largest(1, rows - 1, lambda c: fits(max_feature_nodes=c))
    if cap is not None:
        out.append({"max_feature_nodes": _round_down(cap)})
    if s.get("offload") != "disk" and fits(offload="disk"):
        out.append({"offload": "disk"})
    if half and fits(dtype=_HALF):
        out.append({"dtype": _HALF})
    if out:
        return out
    # Nothing alone fits: everything that saves memory at once, and the cap that then fits.
    combo: dict[str, Any] = {"offload": "disk"}
    if half:
        combo["dtype"] = _HALF
    cap = _largest(1, rows, lambda c: fits(**combo, max_feature_nodes=c))
    return [] if cap is None else [{**combo, "max_feature_nodes": _round_down(cap)}]


def _largest(lo: int, hi: int, ok: Any) -> int | None:
    """The largest ``n`` in ``[lo, hi]`` with ``ok(n)`` (``ok`` decreasing in ``n``)."""
    if hi < lo or not ok(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    return lo


def _halvings(n: int) -> list[int]:
    out = []
    while n > 1:
        n //= 2
        out.append(n)
    return out


def _round_down(n: int) -> int:
    """To two significant digits (4093 -> 4000), easier to type; never below 1."""
    if n < 100:
        return n
    step = 10 ** (len(str(n)) - 2)
    return n // step * step


# ---- the two calls in ``attribute`` ------------------------------------------------------------
def check_before_forward(model: ReplacementModel, prompt: Any, **settings: Any) -> AttributionPlan:
    """Stage 1 (see the module docstring); returns the plan for ``check_before_sweep``."""
    plan = AttributionPlan.of(model, int(model.ensure_tokenized(prompt).numel()), **settings)
    check_attribution_memory(plan, model.device, stage="forward")
    return plan


def check_before_sweep(
    plan: AttributionPlan,
    device: torch.device,
    n_active: int,
    n_logits: int,
    available: Mapping[str, Available] | None = None,
) -> int:
    """Stage 2: with the counted active features and logit targets. Returns the rows per
    backward sweep: ``batch_size``, or the largest of its halvings whose buffers fit when it
    does not (``attribute`` still re-ranks features every ``update_interval * batch_size`` rows,
    so the graph is the same); raises when none fits."""
    plan.n_active = n_active
    plan.settings["max_n_logits"] = n_logits
    avail = dict(available_memory(device) if available is None else available)
    cuda = torch.device(device).type == "cuda"
    batch = plan.settings.get("batch_size", 256)
    for smaller in [batch, *_halvings(batch)]:
        if _shortfall(plan.estimate(batch_size=smaller), "sweep", cuda, avail) is None:
            return smaller
    plan.settings["batch_size"] = 1  # the refusal names what even one row per sweep needs
    check_attribution_memory(plan, device, stage="sweep", available=avail)  # raises
    return batch
