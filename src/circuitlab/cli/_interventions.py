"""Flags shared by ``circuitlab intervene`` and ``circuitlab generate``: the model and the
interventions, parsed into ``circuitlab.interventions`` values."""

from __future__ import annotations

import argparse
import math
from typing import Any

from . import UsageError

INTERVENTION_HELP = """interventions (repeatable; POS is 3, -1, 2: (open-ended), 1:4 or : ;
FEAT is 12 or 12,40):
  --set L POS FEAT VALUE     set features to VALUE
  --scale L POS FEAT X       multiply features by X (e.g. -4)
  --ablate L POS FEAT        set features to 0
  --scale-error L POS X      multiply the error node(s) at (L, POS) by X
  --ablate-error L POS       zero the error node(s) at (L, POS)
  --nodes ID [ID ...]        graph node ids (12_4031_5, 3_-1_2), ablated unless
                             --node-scale X or --node-value V is given
  --graph-json FILE with --pinned and/or --supernode LABEL: nodes saved in the lab"""


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--prompt", required=True, help="the prompt text")
    p.add_argument("-t", "--transcoder_set", help="transcoders: local dir, hub id or shortcut")
    p.add_argument("-m", "--model", help="model: hub id, local dir, .gguf or 'smollm2' (packaged)")
    p.add_argument(
        "--smollm2",
        action="store_true",
        help="use the offline SmolLM2-135M example (circuitlab.examples) instead of -t/-m",
    )
    p.add_argument("--dtype", choices=["float32", "float64", "bfloat16"], default="float32")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def add_intervention_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("interventions")
    g.add_argument("--set", nargs=4, action="append", default=[], metavar=("L", "POS", "FEAT", "V"))
    g.add_argument(
        "--scale", nargs=4, action="append", default=[], metavar=("L", "POS", "FEAT", "X")
    )
    g.add_argument("--ablate", nargs=3, action="append", default=[], metavar=("L", "POS", "FEAT"))
    g.add_argument("--scale-error", nargs=3, action="append", default=[], metavar=("L", "POS", "X"))
    g.add_argument("--ablate-error", nargs=2, action="append", default=[], metavar=("L", "POS"))
    g.add_argument("--nodes", nargs="+", default=[], metavar="ID", help="graph node ids")
    g.add_argument("--node-scale", type=float, help="multiply --nodes/--supernode nodes by X")
    g.add_argument("--node-value", type=float, help="set --nodes/--supernode nodes to V")
    g.add_argument("--graph-json", help="a graph JSON saved by the lab (for --pinned/--supernode)")
    g.add_argument("--pinned", action="store_true", help="the pinned nodes of --graph-json")
    g.add_argument("--supernode", action="append", default=[], metavar="LABEL")
    m = p.add_argument_group("mode")
    m.add_argument(
        "--constrained-layers",
        metavar="A-B",
        help="freeze MLP outputs of layers A..B (inclusive) except for the changes; 'all' = "
        "direct effects",
    )
    m.add_argument(
        "--no-freeze-attention",
        dest="freeze_attention",
        action="store_false",
        help="let attention patterns react (default: frozen at the clean prompt)",
    )


def load_model(args: argparse.Namespace) -> Any:
    import torch

    if args.smollm2:
        from ..examples import smollm2_replacement_model

        return smollm2_replacement_model(dtype=getattr(torch, args.dtype))
    if not args.transcoder_set:
        raise UsageError("no model: pass -t/--transcoder_set (and -m/--model), or --smollm2")
    from ..replacement import ReplacementModel
    from ..transcoders import load_transcoders

    dtype = getattr(torch, args.dtype)
    tc = load_transcoders(args.transcoder_set, dtype=dtype)
    ref = args.model or getattr(tc, "model_name", None)
    if not ref:
        raise UsageError("the transcoders name no model_name: pass -m/--model")
    return ReplacementModel.from_pretrained(ref, tc, dtype=dtype)


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{what} must be an integer, got {text!r}") from None


def _float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{what} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise UsageError(f"{what} {text!r} is not a finite number; pass a finite value")
    return value


def parse_position(text: str) -> int | slice:
    """``3``, ``-1``, ``2:``, ``1:4`` or ``:``."""
    if ":" not in text:
        return _int(text, "POS")
    start, _, stop = text.partition(":")
    return slice(
        _int(start, "POS start") if start else None, _int(stop, "POS stop") if stop else None
    )


def parse_features(text: str) -> int | list[int]:
    parts = [_int(p, "FEAT") for p in text.split(",") if p]
    if not parts:
        raise UsageError(f"FEAT must be an index or a comma list, got {text!r}")
    return parts[0] if len(parts) == 1 else parts


def parse_layers(text: str | None, n_layers: int) -> range | None:
    if text is None:
        return None
    if text == "all":
        return range(n_layers)
    a, sep, b = text.partition("-")
    if not sep:
        return range(_int(a, "--constrained-layers"), _int(a, "--constrained-layers") + 1)
    return range(_int(a, "--constrained-layers start"), _int(b, "--constrained-layers end") + 1)


def interventions(args: argparse.Namespace) -> list[Any]:
    from ..interventions import (
        ablate_error,
        ablate_feature,
        node_interventions,
        read_qparams,
        scale_error,
        scale_feature,
        set_feature,
        supernode_members,
    )

    out: list[Any] = []
    for layer, pos, feat, value in args.set:
        out.append(
            set_feature(
                _int(layer, "L"), parse_position(pos), parse_features(feat), _float(value, "V")
            )
        )
    for layer, pos, feat, x in args.scale:
        out.append(
            scale_feature(
                _int(layer, "L"), parse_position(pos), parse_features(feat), _float(x, "X")
            )
        )
    for layer, pos, feat in args.ablate:
        out.append(ablate_feature(_int(layer, "L"), parse_position(pos), parse_features(feat)))
    for layer, pos, x in args.scale_error:
        out.append(scale_error(_int(layer, "L"), parse_position(pos), _float(x, "X")))
    for layer, pos in args.ablate_error:
        out.append(ablate_error(_int(layer, "L"), parse_position(pos)))
    nodes = list(args.nodes)
    if args.pinned or args.supernode:
        if not args.graph_json:
            raise UsageError("--pinned/--supernode read a saved graph: pass --graph-json FILE")
        pinned, supers = read_qparams(args.graph_json)
        nodes += pinned if args.pinned else []
        nodes += supernode_members(supers, args.supernode)
    if nodes:
        out += node_interventions(nodes, value=args.node_value, scale=args.node_scale)
    return out
