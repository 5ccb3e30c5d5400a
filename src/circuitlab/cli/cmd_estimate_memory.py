"""``circuitlab estimate-memory``: predicted peak memory, CPU time and file size of an attribution,
without running it."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ._attribution import (
    DTYPES,
    add_attribution_arguments,
    add_model_arguments,
    check_attribution_arguments,
    check_model_ref,
    check_transcoder_ref,
)

NAME = "estimate-memory"
HELP = "predict the peak memory, time and file size of `attribute` (nothing is loaded)"
DESCRIPTION = """\
Reads the model's config.json (and safetensors headers) and the transcoders' config.yaml and
layer-file headers, and prints the predicted peak memory with its parts (runtime, model
weights, transcoders eager or lazy, forward activations and capture, sources, edge rows, the
sweep's batch, graph rows, scores/pruning, offload savings) and the total of each phase.
Also predicts the CPU time per phase and the graph file's size: the backward sweeps are
scheduled as `attribute` runs them and their work (dense projections, the transposed attention
pattern, the projection onto the sources, the copies of the rows) is divided by this machine's
rates: measured once by --calibrate (a few seconds, one torch thread, saved in the user cache
and used by every later estimate on this machine), else the 2-core reference machine's;
--gflops scales the reference rates to another machine's matmul speed instead.
Takes the same flags as `circuitlab attribute`. The number of active features is l0 per layer
and token: TopK's k, else --l0 (default 64): a number, or the JSON that
`circuitlab eval-transcoders --json` wrote (its mean l0 over layers).
When the peak exceeds the memory available now (RAM, within any cgroup limit;
CIRCUITLAB_AVAILABLE_MEMORY overrides it) a warning names both and the settings that would fit:
`attribute` would refuse these settings. Measured accuracy: docs/cli.md."""
EXAMPLES = """examples:
  circuitlab estimate-memory -t ./my-transcoders -m ./my-model --n-tokens 64
  circuitlab estimate-memory -t ./tc -p "The capital of France is" --max_feature_nodes 4096 \\
      --batch_size 64 --offload disk --l0 20
  circuitlab estimate-memory -t ./tc --n-tokens 256 --dtype bfloat16 --json
  circuitlab estimate-memory -t ./tc --n-tokens 2048 --l0 eval.json --calibrate
  circuitlab estimate-memory -t ./tc --n-tokens 2048 --l0 eval.json --gflops 2000
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("-p", "--prompt", help="the prompt (counted with the model's tokenizer)")
    g.add_argument("--n-tokens", type=int, help="prompt length in tokens, BOS included")
    add_attribution_arguments(p)
    p.add_argument(
        "--l0",
        default=None,
        help="active features per layer and token: a number, or an eval-transcoders --json file",
    )
    rates = p.add_mutually_exclusive_group()
    rates.add_argument(
        "--calibrate",
        action="store_true",
        help="measure this machine's rates for the time prediction (a few seconds, one torch "
        "thread), save them in the user cache for later estimates, and use them",
    )
    rates.add_argument(
        "--gflops",
        type=float,
        default=None,
        help="matmul GFLOP/s of the machine that will run `attribute`: the reference rates "
        "scaled to it (default: this machine's calibrated rates, else the 2-core reference "
        "machine's; see docs/cli.md)",
    )
    p.add_argument("--json", action="store_true", help="print the estimate as JSON")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args: argparse.Namespace) -> int:
    from ..attribution.cost import estimate_cost
    from ..attribution.cost_rates import REFERENCE, calibrate, load_rates, save_rates
    from ..attribution.memory import estimate_memory, model_shapes, transcoder_shapes
    from . import UsageError

    check_attribution_arguments(args)
    check_transcoder_ref(args.transcoder_set)
    check_model_ref(args.model)
    if args.n_tokens is not None and args.n_tokens < 1:
        raise UsageError(f"--n-tokens must be at least 1, got {args.n_tokens}")
    args.l0 = _l0(args.l0)
    if args.gflops is not None and args.gflops <= 0:
        raise UsageError(f"--gflops must be positive, got {args.gflops}")
    tc, model_name = transcoder_shapes(args.transcoder_set)
    model_ref = args.model or model_name
    if not model_ref:
        raise UsageError("the transcoders name no model_name: pass -m/--model")
    model = model_shapes(model_ref)
    if (tc.n_layers, tc.d_model) != (model.n_layers, model.d_model):
        raise UsageError(
            f"transcoders have {tc.n_layers} layers of width {tc.d_model} but the model has "
            f"{model.n_layers} of width {model.d_model}: pass the matching -m/--model"
        )
    n_tokens = args.n_tokens or _count_tokens(model_ref, args.prompt, model.vocab_size)
    if args.calibrate:
        rates = calibrate()
        saved = save_rates(rates)
        print(f"calibrated rates saved to {saved}", file=sys.stderr)
    elif args.gflops is not None:
        rates = REFERENCE.scaled_to(args.gflops * 1e9)
    else:
        rates = load_rates()
    est = estimate_memory(model, tc, n_tokens, **_settings(args))
    warning, fits, sweep_batch = _check_available(model, tc, n_tokens, args)
    cost = estimate_cost(
        model,
        tc,
        n_tokens,
        max_feature_nodes=args.max_feature_nodes,
        max_n_logits=args.max_n_logits,
        batch_size=args.batch_size,
        sweep_batch=sweep_batch,
        l0=args.l0,
        edge_dtype=args.edge_dtype or ("float64" if args.dtype == "float64" else "float32"),
        rates=rates,
    )
    spill_line, spill_fields, spill_warning = _spill(est, args.offload)
    if args.json:
        print(json.dumps({**est.to_json(), **cost.to_json(), **fits, **spill_fields}, indent=1))
    else:
        print(est.report())
        print(cost.report())
        if spill_line:
            print(spill_line)
    for text in (warning, spill_warning):
        if text:
            print(f"circuitlab estimate-memory: warning: {text}", file=sys.stderr)
    return 0


def _spill(est: Any, offload: str | None) -> tuple[str | None, dict[str, Any], str | None]:
    """With ``--offload disk``: ``(report line, JSON fields, warning or None)`` for the spill
    file against the free space of the temporary folder (``attribution.spill_space``)."""
    from ..attribution.memory import human
    from ..attribution.memory_check import available_memory
    from ..attribution.spill_space import STAGE_PARTS, spill_room

    if offload != "disk":
        return None, {}, None
    needed = sum(est.parts.get(part, 0) for part in STAGE_PARTS.values())
    room = spill_room()
    line = (
        f"spill file (offload disk): {human(needed)} in {room.directory}, "
        f"{human(room.bytes)} free ({room.source})"
    )
    fields = {
        "spill_bytes": needed,
        "spill_room_bytes": room.bytes,
        "spill_dir": str(room.directory),
    }
    # The sweep reads every layer's pattern once per batch of rows: from the page cache if the
    # patterns fit in the memory the run leaves free, else from the disk again each time.
    patterns = est.parts.get(STAGE_PARTS["forward"], 0)
    ram = available_memory("cpu").get("ram")
    cache = None if ram is None else max(0, ram.bytes - est.peak)
    fields["spill_patterns_reread"] = cache is not None and patterns > cache
    if fields["spill_patterns_reread"]:
        line += (
            f"\n  its patterns ({human(patterns)}) exceed the memory left for the page cache "
            f"beside the run (~{human(cache or 0)}): each sweep reads them back from disk, system "
            "time the CPU prediction leaves out (4,096 tokens on SmolLM2: ~14% of the run, "
            "benchmarks/README.md)"
        )
    if needed <= room.bytes:
        return line, fields, None
    warning = (
        f"the spill file needs about {human(needed)} in {room.directory} but {human(room.bytes)} "
        "is free: `attribute` would refuse (set TMPDIR to a folder on a disk with more room)"
    )
    return line, fields, warning


def _check_available(
    model: Any, tc: Any, n_tokens: int, args: argparse.Namespace
) -> tuple[str | None, dict[str, Any], int]:
    """``(warning or None, JSON fields, rows per sweep)``: the whole peak against the RAM
    available now, and the rows per backward sweep ``attribute`` would pick there
    (``--batch_size`` or the largest halving whose buffers fit)."""
    import torch

    from ..attribution.memory_check import (
        AttributionPlan,
        NotEnoughMemoryError,
        available_memory,
        check_attribution_memory,
        check_before_sweep,
    )

    available = available_memory("cpu")
    if "ram" not in available:
        return None, {"available_bytes": None, "fits": None}, args.batch_size
    plan = AttributionPlan(model, tc, n_tokens, _settings(args))
    n_active = plan.estimate().assumptions["n_active"]
    try:
        sweep = AttributionPlan(model, tc, n_tokens, _settings(args))
        sweep_batch = check_before_sweep(
            sweep, torch.device("cpu"), n_active, args.max_n_logits, available
        )
    except NotEnoughMemoryError:
        sweep_batch = args.batch_size
    fields: dict[str, Any] = {"available_bytes": available["ram"].bytes, "fits": True}
    try:
        check_attribution_memory(plan, "cpu", stage="all", available=available)
    except NotEnoughMemoryError as e:
        fields.update(fits=False, suggestions=e.suggestions)
        message = "`attribute` would refuse these settings: " + e.message(cli=True)
        return message, fields, sweep_batch
    return None, fields, sweep_batch


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return dict(
        dtype=DTYPES[args.dtype],
        batch_size=args.batch_size,
        max_feature_nodes=args.max_feature_nodes,
        max_n_logits=args.max_n_logits,
        offload=args.offload,
        edge_dtype=args.edge_dtype,
        lazy_encoder=args.lazy_encoder,
        lazy_decoder=args.lazy_decoder,
        l0=args.l0,
    )


def _l0(value: str | None) -> float | None:
    """``--l0``: a positive number, or the mean per-layer ``l0`` of an eval-transcoders JSON."""
    from pathlib import Path

    from . import UsageError

    if value is None:
        return None
    try:
        l0 = float(value)
    except ValueError:
        path = Path(value)
        if not path.is_file():
            raise UsageError(
                f"--l0 {value!r} is neither a number nor a file; pass active features per layer "
                "and token, or the JSON of `circuitlab eval-transcoders --json`"
            ) from None
        try:
            per_layer = json.loads(path.read_text())["l0"]
            l0 = sum(map(float, per_layer)) / len(per_layer)
        except (ValueError, KeyError, TypeError, ZeroDivisionError):
            raise UsageError(
                f"--l0 {value}: no per-layer 'l0' list in it; pass the JSON that "
                "`circuitlab eval-transcoders --json` writes, or a number"
            ) from None
    if l0 <= 0:
        raise UsageError(f"--l0 must be positive, got {value}")
    return l0


def _count_tokens(model_ref: str, prompt: str, vocab_size: int) -> int:
    """Tokens of ``prompt`` as ``attribute`` sees them (the BOS added when the tokenizer has one)."""
    from ..models.loading import find_tokenizer
    from ..models.tokens import tokenize
    from . import UsageError

    try:
        tok = find_tokenizer(model_ref)
    except (OSError, ValueError) as e:
        raise UsageError(
            f"could not load the tokenizer of {model_ref} to count -p ({type(e).__name__}); "
            "pass --n-tokens instead"
        ) from None
    if tok is None:
        raise UsageError(
            f"{model_ref} has no tokenizer files, so -p cannot be counted; pass --n-tokens instead"
        )
    return int(tokenize(prompt, tok, vocab_size).numel())
