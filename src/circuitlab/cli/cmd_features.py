"""``circuitlab features``: build feature dashboards from a corpus, and show one feature."""

from __future__ import annotations

import argparse
import json

from ._output import check_output_dir

NAME = "features"
HELP = "build feature dashboards (top examples, logits, histograms) from a text corpus"
DESCRIPTION = """\
build: stream a corpus through a model and its transcoders and write, per feature, the top
activating examples (by activation band), top and bottom logits, an activation histogram and
frequency, into DIR/features (index.json.gz + one .bin per layer; see docs/features.md).
An interrupted build resumes from its checkpoint when rerun with the same arguments.

show: print one feature's record as JSON."""
EXAMPLES = """examples:
  circuitlab features build --model smollm2 --transcoders ./smollm2-tc --corpus wikipedia \\
      --out ./smollm2-dash --n-tokens 50000
  circuitlab features build -m ./model -t ./tc --corpus notes.jsonl:body --out ./dash
  circuitlab features show ./smollm2-dash 3 117
"""

DTYPES = ("float32", "bfloat16", "float64")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="build dashboards into OUT/features")
    b.add_argument(
        "-m",
        "--model",
        help="model: hub id, local dir, .gguf, or 'smollm2' (default: the transcoders' model_name)",
    )
    b.add_argument("-t", "--transcoders", required=True, help="transcoders: local dir or hub id")
    b.add_argument(
        "--corpus",
        required=True,
        help="wikipedia[:LANG] (offline package), FILE.txt, FILE.jsonl or FILE.jsonl:FIELD",
    )
    b.add_argument("-o", "--out", required=True, help="output dir (the store goes in OUT/features)")
    b.add_argument("--n-tokens", type=int, default=100_000, help="corpus tokens to stream")
    b.add_argument("--context", type=int, default=64, help="window length, BOS included")
    b.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    b.add_argument("--checkpoint-every", type=int, default=25, help="batches between checkpoints")
    b.add_argument("--top-k", type=int, default=10, help="top-activation examples per feature")
    b.add_argument("--n-bands", type=int, default=4, help="activation bands sampled below the top")
    b.add_argument("--per-band", type=int, default=4, help="examples sampled per band")
    b.add_argument("--dtype", choices=DTYPES, default="float32")
    b.add_argument("--overwrite", action="store_true", help="replace an existing OUT/features")
    b.add_argument("--restart", action="store_true", help="discard a checkpoint and start over")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.add_argument("--debug", action="store_true", help="show tracebacks")
    s = sub.add_parser("show", help="print one feature's record")
    s.add_argument("dir", help="the build's OUT dir (or OUT/features)")
    s.add_argument("layer", type=int)
    s.add_argument("index", type=int)
    s.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args: argparse.Namespace) -> int:
    if args.action == "show":
        from ..features.store import read_feature

        try:
            record = read_feature(args.dir, args.layer, args.index)
        except IndexError as e:
            raise ValueError(str(e)) from e
        print(json.dumps(record, indent=1, ensure_ascii=False))
        return 0
    return _build(args)


def _build(args: argparse.Namespace) -> int:
    import torch

    from ..features.build import BuildSettings, build_dashboards
    from ..features.corpus import open_corpus
    from ..features.stats import StatsConfig
    from ..replacement import ReplacementModel
    from ..transcoders import load_transcoders
    from . import UsageError, check_at_least

    check_at_least(
        ("--n-tokens", args.n_tokens, 1),
        ("--context", args.context, 2),
        ("--batch-size", args.batch_size, 1),
        ("--checkpoint-every", args.checkpoint_every, 1),
        ("--top-k", args.top_k, 1),
        ("--n-bands", args.n_bands, 0),
        ("--per-band", args.per_band, 1),
    )
    check_output_dir(args.out, "-o/--out")
    dtype = getattr(torch, args.dtype)
    texts = open_corpus(args.corpus)
    transcoders = load_transcoders(args.transcoders, dtype=dtype, lazy_decoder=False)
    model_ref = args.model or getattr(transcoders, "model_name", None)
    if not model_ref:
        raise UsageError("the transcoders name no model_name: pass -m/--model")
    model = ReplacementModel.from_pretrained(model_ref, transcoders, dtype=dtype)
    settings = BuildSettings(
        corpus=args.corpus,
        n_tokens=args.n_tokens,
        context=args.context,
        batch_size=args.batch_size,
        checkpoint_every=args.checkpoint_every,
        stats=StatsConfig(top_k=args.top_k, n_bands=args.n_bands, per_band=args.per_band),
    )
    out = build_dashboards(
        model,
        texts,
        args.out,
        settings,
        transcoder_id=str(args.transcoders),
        overwrite=args.overwrite,
        restart=args.restart,
        verbose=not args.quiet,
    )
    meta = json.loads((out / "build.json").read_text())
    secs = meta["seconds"]
    print(
        f"{meta['n_layers']} layers x {meta['d_transcoder']} features from {meta['tokens']} "
        f"tokens: streaming {secs['stream']} s, "
        f"writing {secs['write']} s"
    )
    print(f"saved {out}")
    return 0
