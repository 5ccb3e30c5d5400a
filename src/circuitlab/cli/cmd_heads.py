"""``circuitlab heads``: the attention-head lab on the command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ._output import check_output_file

NAME = "heads"
HELP = "head classes, direct logit attribution, logit lens and patching sweeps"
DESCRIPTION = """Analyses the attention heads of a model on a prompt: the class of each head
(previous-token, duplicate-token, induction, sink, diffuse), direct logit attribution of every
head and MLP to the predicted token or a logit difference, and the logit lens. With a corrupted
prompt (or a preset) it also runs activation-patching sweeps and reports the normalised
recovery of the logit difference; --path-patch runs path patching from every head to the logits
or to chosen heads' queries, keys or values. Formulas and thresholds: docs/heads.md."""
EXAMPLES = """examples:
  circuitlab heads -m smollm2 -p "The capital of France is"
  circuitlab heads -m smollm2 --preset ioi --patch head,resid
  circuitlab heads -m smollm2 --preset ioi --path-patch logits
  circuitlab heads -m smollm2 --preset ioi --path-patch 23.3,29.1 --path-inputs q
  circuitlab heads -m ./my-model -p "When Mary and John went to the store, John gave a drink to" \\
      --corrupted "When Mary and John went to the store, Mary gave a drink to" \\
      --answer " Mary" --wrong " John" --patch head --json ioi.jsonl
  circuitlab heads --list-presets
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", help="hub id, local dir, .gguf, or 'smollm2' (packaged)")
    p.add_argument("-p", "--prompt", help="the (clean) prompt")
    p.add_argument("--preset", help="a preset experiment (see --list-presets)")
    p.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    p.add_argument("--corrupted", help="corrupted prompt for patching (same token length)")
    p.add_argument("--answer", help="target token (default: the top prediction)")
    p.add_argument("--wrong", help="second token: the target becomes logit(answer) - logit(wrong)")
    p.add_argument("--pos", type=int, default=-1, help="position analysed (default: last)")
    p.add_argument(
        "--patch",
        default=None,
        help="comma-separated sweeps: head, resid, mlp (default with a corrupted prompt: head)",
    )
    p.add_argument(
        "--path-patch",
        metavar="RECEIVERS",
        help="path patching from every head to 'logits' or to heads LAYER.HEAD,LAYER.HEAD,...",
    )
    p.add_argument(
        "--path-inputs",
        metavar="LETTERS",
        help="which inputs of the --path-patch heads carry the path: q, k, v (default: qkv)",
    )
    p.add_argument("--batch-size", type=int, default=256, help="patched rows per forward")
    p.add_argument("--top", type=int, default=8, help="rows shown per table")
    p.add_argument("--json", help="also write every streamed event as JSON lines to this file")
    p.add_argument("--dtype", choices=["float32", "float64", "bfloat16"], default="float32")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args: argparse.Namespace) -> int:
    from . import UsageError

    if args.list_presets:
        _list_presets()
        return 0
    if not args.model:
        raise UsageError("pass -m/--model (hub id, local dir, .gguf, or 'smollm2')")
    if bool(args.prompt) == bool(args.preset):
        raise UsageError("pass exactly one of -p/--prompt and --preset")
    kinds: list[Any] = _kinds(args.patch)
    receivers = _receivers(args.path_patch)
    if args.path_inputs is not None and not isinstance(receivers, list):
        raise UsageError("--path-inputs needs receiver heads: --path-patch LAYER.HEAD,...")

    import torch

    from ..heads import (
        LabModel,
        Target,
        check_receivers,
        get_preset,
        stream_analysis,
        stream_patching,
    )

    check_output_file(args.json, "--json")
    lab = LabModel.load(args.model, dtype=getattr(torch, args.dtype))
    prompt, corrupted, answer, wrong = args.prompt, args.corrupted, args.answer, args.wrong
    if args.preset:
        pp = get_preset(args.preset).build(lab.tokenizer)
        prompt, corrupted = pp.clean, corrupted or pp.corrupted
        answer, wrong = answer or pp.answer, wrong or pp.wrong
        kinds = kinds or ([] if receivers else ["head"])
    if (kinds or receivers) and not corrupted:
        raise UsageError("patching needs --corrupted PROMPT (or a --preset)")
    if corrupted and not kinds and not receivers:
        kinds = ["head"]
    if receivers:
        check_receivers(lab, receivers, args.path_inputs or "qkv")  # fail before the analysis
    target = Target(answer, wrong)
    out = open(args.json, "w") if args.json else None  # noqa: SIM115
    try:
        t = time.perf_counter()
        events = list(stream_analysis(lab, prompt, target, pos=args.pos, top_k=3))
        _write(out, events)
        _print_analysis(events, args.top, time.perf_counter() - t)
        if kinds:
            t = time.perf_counter()
            events = list(
                stream_patching(
                    lab, prompt, corrupted, target, kinds=kinds, pos=args.pos,
                    batch_size=args.batch_size,
                )
            )  # fmt: skip
            _write(out, events)
            _print_patching(events, args.top, time.perf_counter() - t)
        if receivers:
            t = time.perf_counter()
            event = _path_patch(lab, prompt, corrupted, target, receivers, args)
            _write(out, [event])
            _print_path(event, args.top, time.perf_counter() - t)
    finally:
        if out is not None:
            out.close()
    if args.json:
        print(f"wrote {args.json}")
    return 0


def _kinds(text: str | None) -> list[Any]:
    from ..heads import KINDS

    if not text:
        return []
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"unknown --patch kind {bad[0]!r}; use a comma list of {', '.join(KINDS)}")
    return kinds


def _receivers(text: str | None) -> Any:
    """``None``, ``"logits"`` or ``[(layer, head), ...]`` from ``--path-patch``."""
    from . import UsageError

    if text is None:
        return None
    if text.strip() == "logits":
        return "logits"
    heads = []
    for item in (t.strip() for t in text.split(",")):
        layer, _, head = item.partition(".")
        if not (layer.isdigit() and head.isdigit()):
            raise UsageError(
                f"--path-patch {text!r}: use 'logits' or a comma list of LAYER.HEAD (e.g. 9.6,9.9)"
            )
        heads.append((int(layer), int(head)))
    return heads


def _path_patch(lab: Any, prompt: str, corrupted: str, target: Any, receivers: Any, args: Any):
    """Runs path patching and returns it as one JSON-able ``path`` event."""
    from ..heads import path_patch

    res = path_patch(
        lab, prompt, corrupted, target, receivers=receivers, inputs=args.path_inputs or "qkv",
        pos=args.pos, batch_size=args.batch_size,
    )  # fmt: skip
    return {
        "event": "path",
        "receivers": res.receivers.label(),
        "target": res.target.label(lab),
        "pos": res.pos,
        "clean_metric": round(res.clean_metric, 4),
        "corrupted_metric": round(res.corrupted_metric, 4),
        "recovery": [[round(v, 4) for v in row] for row in res.recovery.tolist()],
    }


def _print_path(event: dict[str, Any], top: int, seconds: float) -> None:
    w = sys.stdout.write
    w(f"\npath patching every head -> {event['receivers']}, {event['target']}: clean "
      f"{event['clean_metric']:+.3f}, corrupted {event['corrupted_metric']:+.3f}  "
      f"[{seconds:.1f} s]\n")  # fmt: skip
    rows = [(layer, h, v) for layer, row in enumerate(event["recovery"])
            for h, v in enumerate(row)]  # fmt: skip
    rows.sort(key=lambda r: -abs(r[2]))
    w("  top recoveries (sender head)\n")
    for layer, h, v in rows[:top]:
        w(f"    {f'L{layer}H{h}':14} {v:+.3f}\n")


def _list_presets() -> None:
    from ..heads import PRESETS

    for p in PRESETS.values():
        pp = p.build(None)
        print(f"{p.name:13s} {p.title}: {pp.clean!r} -> {pp.answer!r} vs {pp.wrong!r}")
        print(f"{'':13s} expected: {p.circuit}")


def _write(out: Any, events: list[dict[str, Any]]) -> None:
    if out is not None:
        for e in events:
            out.write(json.dumps(e) + "\n")


def _print_analysis(events: list[dict[str, Any]], top: int, seconds: float) -> None:
    start, layers, done = events[0], events[1:-1], events[-1]
    w = sys.stdout.write
    w(f"{len(start['tokens'])} tokens: {''.join(start['tokens'])!r}\n")
    w(f"target {start['target']['label']} at position {start['pos']}: {done['logit']:+.3f} "
      f"(pre-softcap)  [{seconds:.1f} s]\n")  # fmt: skip
    counts: dict[str, int] = {}
    for ev in layers:
        for h in ev["heads"]:
            counts[h["class"]] = counts.get(h["class"], 0) + 1
    w("head classes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + "\n")
    w("\ndirect logit attribution (top heads):\n")
    for h in done["top_heads"][:top]:
        info = layers[h["layer"]]["heads"][h["head"]]
        w(f"  L{h['layer']:>2}H{h['head']:<3} {h['dla']:+8.3f}  {info['class']}\n")
    mlps = sorted(layers, key=lambda e: -abs(e["mlp_dla"] or 0))[:top]
    w("direct logit attribution (top MLPs): ")
    w(", ".join(f"L{e['layer']} {e['mlp_dla']:+.3f}" for e in mlps) + "\n")
    w(f"embeddings {done['dla_embed']:+.3f}, biases {done['dla_const']:+.3f}\n")
    w("\nlogit lens (layer: top token, target rank):\n")
    rows = [done["lens_embed"], *(e["lens"] for e in layers)]
    for r in rows:
        t = r["top"][0]
        w(f"  {r['layer']:>3}: {t['token']!r:14} {t['prob']:.3f}   rank {r['target_rank']}\n")


def _print_patching(events: list[dict[str, Any]], top: int, seconds: float) -> None:
    start = events[0]
    w = sys.stdout.write
    w(f"\npatching {start['target']}: clean {start['clean_metric']:+.3f}, corrupted "
      f"{start['corrupted_metric']:+.3f}  [{seconds:.1f} s]\n")  # fmt: skip
    patches = [e for e in events if e["event"] == "patch"]
    for kind in start["kinds"]:
        rows = [(e["layer"], i, v) for e in patches if e["kind"] == kind
                for i, v in enumerate(e["values"])]  # fmt: skip
        rows.sort(key=lambda r: -abs(r[2]))
        label = "head" if kind == "head" else "pos"
        w(f"  {kind}: top recoveries ({label} per layer)\n")
        for layer, i, v in rows[:top]:
            where = f"L{layer}H{i}" if kind == "head" else f"L{layer} pos {i}"
            tok = "" if kind == "head" else f" {start['clean_tokens'][i]!r}"
            w(f"    {where:14}{tok:14} {v:+.3f}\n")
