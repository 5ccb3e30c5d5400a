"""``circuitlab train``: train per-layer or cross-layer transcoders on a corpus."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ._output import check_output_dir

NAME = "train"
HELP = "train per-layer (plt) or cross-layer (clt) transcoders on a text corpus"
DESCRIPTION = """\
Streams a corpus through the model (a shuffling buffer of activations, never a full dump),
trains transcoders for every layer jointly and writes OUT/transcoders (circuit-tracer's
layout: use it with `circuitlab attribute -t OUT/transcoders`), OUT/metrics.json (per-layer
FVU, L0, dead features over training) and OUT/checkpoint.pt (every --checkpoint-every steps,
on SIGTERM/Ctrl-C, and at the end): rerun the same command to resume an interrupted run, add
--extend with a larger --tokens to train a finished one further, or write any checkpoint as
transcoders with --export CKPT -o DIR. Under torchrun (--nproc_per_node N, with
--cache-activations) N processes share each batch: see docs/training.md."""
EXAMPLES = """examples:
  circuitlab train --model smollm2 --corpus wikipedia --out ./smollm2-plt \\
      --kind plt --activation jump_relu --d-transcoder 2048 --tokens 200000
  circuitlab train -m ./model --corpus notes.txt --out ./clt --kind clt --activation topk --k 16
  circuitlab train --export ./clt/checkpoint.pt -o ./clt-so-far
  torchrun --standalone --nproc_per_node 2 -m circuitlab train -m smollm2 --corpus wikipedia \\
      --out ./plt --activation batchtopk --k 16 --cache-activations ~/.cache/cl-acts
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..transcoders.training.model import ACTIVATIONS, KINDS

    p.add_argument("-m", "--model", help="hub id, local dir, .gguf or 'smollm2' (required)")
    p.add_argument(
        "--corpus", help="wikipedia[:LANG], FILE.txt, FILE.jsonl or FILE.jsonl:FIELD (required)"
    )
    p.add_argument("-o", "--out", required=True, help="output dir")
    p.add_argument(
        "--export",
        metavar="CKPT",
        help="write the transcoders of a checkpoint (a run's checkpoint.pt or folder) to -o in "
        "circuit-tracer's layout, and train nothing",
    )
    p.add_argument("--kind", choices=KINDS, default="plt")
    p.add_argument("--activation", choices=ACTIVATIONS, default="jump_relu")
    p.add_argument(
        "--k", type=int, default=32, help="active features per token (topk; batchtopk: mean)"
    )
    p.add_argument(
        "--auxk-alpha",
        type=float,
        default=1.0,
        help="weight of the AuxK dead-feature loss (topk, batchtopk; 0: off)",
    )
    p.add_argument("--k-aux", type=int, default=0, help="dead features per token in AuxK (0: --k)")
    p.add_argument(
        "--dense-updates",
        action="store_true",
        help="topk/batchtopk: dense products instead of the sparse kernels (same result, slower)",
    )
    p.add_argument("--skip", action="store_true", help="add a linear skip connection W_skip")
    p.add_argument("--d-transcoder", type=int, default=1024, help="features per layer")
    p.add_argument("--tokens", type=int, default=200_000, help="training tokens")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam's peak learning rate")
    p.add_argument(
        "--l1",
        "--sparsity",
        dest="sparsity",
        type=float,
        default=None,
        help="sparsity coefficient λ (default: 3e-4 relu, 3e-3 jump_relu, 0 topk)",
    )
    p.add_argument("--bandwidth", type=float, default=0.1, help="JumpReLU STE kernel width")
    p.add_argument("--batch-size", type=int, default=512, help="tokens per optimiser step")
    p.add_argument("--buffer-tokens", type=int, default=8192, help="shuffling buffer size")
    p.add_argument("--context", type=int, default=64, help="window length, BOS included")
    p.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints")
    p.add_argument(
        "--dead-window",
        type=int,
        default=0,
        help="tokens without firing = dead (AuxK's mask, the log's count); 0: --tokens / 20, "
        "at least one batch, at most 10M",
    )
    p.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="steps between held-out evaluations (FVU, L0, dead); 0: none. Holds out the "
        "corpus's last documents (--eval-tokens tokens) from training",
    )
    p.add_argument("--eval-tokens", type=int, default=2048, help="held-out tokens (--eval-every)")
    p.add_argument(
        "--cache-activations",
        metavar="DIR",
        help="cache the model's activations under DIR (memory-mapped shards keyed on the "
        "model's and corpus's content) and train from them: reruns and other settings on the "
        "same model and corpus skip the model",
    )
    p.add_argument(
        "--cache-tokens",
        type=int,
        default=0,
        help="tokens to cache and train on, in epochs when --tokens is larger (default --tokens)",
    )
    p.add_argument(
        "--train-dtype",
        choices=("float32", "float64"),
        default="float32",
        help="dtype of the trained parameters and Adam's state (float64: for exactness checks; "
        "the saved transcoders are float32)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--restart", action="store_true", help="discard a checkpoint and start over")
    p.add_argument(
        "--extend",
        action="store_true",
        help="resume a checkpoint of another --tokens: train a finished run on to --tokens",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args: argparse.Namespace) -> int:
    from ..features.corpus import open_corpus
    from ..models.hub import resolve_model_ref
    from ..transcoders.training import TrainConfig, TrainingInterrupted, train_transcoders
    from . import UsageError, check_at_least

    if args.export:
        return _export(args)
    for flag, value in (("-m/--model", args.model), ("--corpus", args.corpus)):
        if not value:
            raise UsageError(f"{flag} is required (except with --export)")

    check_at_least(
        ("--d-transcoder", args.d_transcoder, 1),
        ("--tokens", args.tokens, 1),
        ("--batch-size", args.batch_size, 1),
        ("--buffer-tokens", args.buffer_tokens, 1),
        ("--context", args.context, 2),
        ("--checkpoint-every", args.checkpoint_every, 1),
        ("--k", args.k, 1),
        ("--k-aux", args.k_aux, 0),
        ("--dead-window", args.dead_window, 0),
        ("--eval-every", args.eval_every, 0),
        ("--eval-tokens", args.eval_tokens, 1),
        ("--cache-tokens", args.cache_tokens, 0),
    )
    if args.extend and args.restart:
        raise UsageError("--extend continues a checkpoint and --restart discards it: pass one")
    if args.cache_tokens and not args.cache_activations:
        raise UsageError("--cache-tokens needs --cache-activations DIR")
    if args.buffer_tokens < args.batch_size:
        raise UsageError("--buffer-tokens must be at least --batch-size")
    if args.activation in ("topk", "batchtopk") and args.k > args.d_transcoder:
        raise UsageError(f"--k {args.k} exceeds --d-transcoder {args.d_transcoder}")
    check_output_dir(args.out, "-o/--out")
    model_ref = resolve_model_ref(args.model)
    model_name = _portable_model_name(args.model, Path(args.out) / "transcoders")
    cfg = TrainConfig(
        kind=args.kind,
        activation=args.activation,
        d_transcoder=args.d_transcoder,
        k=args.k,
        auxk_alpha=args.auxk_alpha,
        k_aux=args.k_aux,
        sparse_kernels=not args.dense_updates,
        skip=args.skip,
        n_tokens=args.tokens,
        batch_size=args.batch_size,
        lr=args.lr,
        sparsity=args.sparsity,
        bandwidth=args.bandwidth,
        context=args.context,
        buffer_tokens=args.buffer_tokens,
        dead_window=args.dead_window,
        checkpoint_every=args.checkpoint_every,
        eval_every=args.eval_every,
        eval_tokens=args.eval_tokens,
        seed=args.seed,
        corpus=args.corpus,
        cache_dir=args.cache_activations,
        cache_tokens=args.cache_tokens,
        dtype=args.train_dtype,
    )
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun: rank 0 alone reports
    try:
        train_transcoders(
            model_ref,
            open_corpus(args.corpus),
            args.out,
            cfg,
            model_name=model_name,
            restart=args.restart,
            extend=args.extend,
            verbose=not args.quiet,
        )
    except TrainingInterrupted as e:
        if main_rank:
            print(f"circuitlab train: {e}", file=sys.stderr)
        return 128 + e.signum  # the shell's code for a process ended by that signal
    if not main_rank:
        return 0
    out = Path(args.out)
    metrics = json.loads((out / "metrics.json").read_text())
    final = metrics["final"]
    print(f"{metrics['steps']} steps, {metrics['tokens']} tokens in {metrics['seconds']} s")
    if final:
        print("layer  fvu     l0      dead")
        for layer, (fvu, l0, dead) in enumerate(
            zip(final["fvu"], final["l0"], final["dead"], strict=True)
        ):
            print(f"{layer:>5}  {fvu:.4f}  {l0:6.1f}  {dead}")
    held = metrics.get("final_held_out")
    if held:
        print(f"held-out ({args.eval_tokens} tokens from the corpus's last documents):")
        print("layer  fvu     l0      dead")
        for layer, (fvu, l0, dead) in enumerate(
            zip(held["fvu"], held["l0"], held["dead"], strict=True)
        ):
            print(f"{layer:>5}  {fvu:.4f}  {l0:6.1f}  {dead}")
    if metrics["corpus_exhausted"]:
        print("note: the corpus ran out before --tokens were reached")
    print(f"saved {out / 'transcoders'} and {out / 'metrics.json'}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from ..transcoders.training import export_checkpoint
    from ..transcoders.training.trainer import CHECKPOINT_NAME
    from . import UsageError

    ckpt = Path(args.export)
    if not (ckpt / CHECKPOINT_NAME if ckpt.is_dir() else ckpt).is_file():
        raise UsageError(
            f"--export {ckpt}: no such checkpoint; pass a run's checkpoint.pt or folder"
        )
    check_output_dir(args.out, "-o/--out")
    tc = export_checkpoint(args.export, args.out)
    print(f"saved {args.out} ({type(tc).__name__}, model_name {getattr(tc, 'model_name', None)})")
    return 0


def _portable_model_name(model: str, transcoder_dir: Path) -> str:
    """``model_name`` for config.yaml: a hub id or packaged name as given; a local folder or
    file as a path relative to the transcoders' folder (``../../model``), which loaders resolve
    against config.yaml, so the run keeps working when it is moved together with the model
    (an absolute path only where no relative one exists, e.g. another Windows drive)."""
    local = Path(model).expanduser()
    if not local.exists():
        return model
    target = local.resolve()
    try:
        rel = os.path.relpath(target, transcoder_dir.expanduser().resolve())
    except ValueError:
        return str(target)
    return rel if rel.startswith(".") else f"./{rel}"
