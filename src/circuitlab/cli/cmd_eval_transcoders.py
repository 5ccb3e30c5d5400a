"""``circuitlab eval-transcoders``: held-out FVU, L0, dead features and loss recovered."""

from __future__ import annotations

import argparse

from ._output import check_output_file

NAME = "eval-transcoders"
HELP = "evaluate transcoders on held-out text: FVU, L0, dead features, loss recovered"
DESCRIPTION = """\
Runs held-out corpus windows through the model and its transcoders and reports, per layer:
FVU and normalised MSE of the reconstructed MLP output, L0, dead features (never active on
these tokens), next-token loss with that layer's MLP replaced by its transcoder and with it
zeroed, and loss recovered = (L_zero - L_replaced) / (L_zero - L_clean); then the same with
every layer replaced at once, and the replacement score of a few prompts' attribution graphs.
BOS positions are excluded.

Held out: the windows come from the corpus's LAST documents, which `circuitlab train` (which
streams from the first document) reaches only if it used up the corpus, and which
`train --eval-every` holds out itself. --from-start reads from the first document instead
(for a corpus file kept apart for evaluation). See docs/training.md."""
EXAMPLES = """examples:
  circuitlab eval-transcoders -t ./smollm2-plt/transcoders -m smollm2 --corpus wikipedia \\
      --n-tokens 4096 --json eval.json --plot eval.png
  circuitlab eval-transcoders -t ./tc --corpus held_out.txt --from-start --score-prompts 0
"""

DTYPES = ("float32", "float64", "bfloat16")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--transcoders", required=True, help="transcoders: local dir or hub id")
    p.add_argument(
        "-m",
        "--model",
        help="model: hub id, local dir, .gguf, or 'smollm2' (default: the transcoders' model_name)",
    )
    p.add_argument(
        "--corpus",
        required=True,
        help="wikipedia[:LANG] (offline package), FILE.txt, FILE.jsonl or FILE.jsonl:FIELD",
    )
    p.add_argument("--n-tokens", type=int, default=8192, help="held-out tokens (BOS excluded)")
    p.add_argument("--context", type=int, default=64, help="window length, BOS included")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    p.add_argument(
        "--from-start", action="store_true", help="read windows from the corpus's first document"
    )
    p.add_argument(
        "--no-losses",
        action="store_true",
        help="skip the next-token losses (2 x layers + 2 extra forwards per batch)",
    )
    p.add_argument(
        "--score-prompts",
        type=int,
        default=2,
        help="attribute this many held-out prompts for the replacement score (0: skip)",
    )
    p.add_argument("--score-length", type=int, default=16, help="tokens per scored prompt")
    p.add_argument(
        "--max-feature-nodes", type=int, default=512, help="feature cap of the scored graphs"
    )
    p.add_argument("--json", help="write the figures as JSON to this file")
    p.add_argument("--plot", help="write a PNG plot to this file (needs circuitlab[plots])")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args: argparse.Namespace) -> int:
    import itertools

    import torch

    from ..atomic import write_json_atomic
    from ..features.corpus import open_corpus, token_windows
    from ..replacement import ReplacementModel
    from ..transcoders import load_transcoders
    from ..transcoders.evaluation import evaluate_windows, held_out_split
    from . import UsageError, check_at_least

    check_at_least(
        ("--n-tokens", args.n_tokens, 1),
        ("--context", args.context, 3),
        ("--batch-size", args.batch_size, 1),
        ("--score-prompts", args.score_prompts, 0),
        ("--score-length", args.score_length, 2),
        ("--max-feature-nodes", args.max_feature_nodes, 1),
    )
    json_path = check_output_file(args.json, "--json")
    plot_path = check_output_file(args.plot, "--plot")
    if plot_path is not None:
        from ..transcoders.eval_plot import require_matplotlib

        require_matplotlib()
    dtype = getattr(torch, args.dtype)
    texts = open_corpus(args.corpus)
    transcoders = load_transcoders(args.transcoders, dtype=dtype, lazy_decoder=False)
    model_ref = args.model or getattr(transcoders, "model_name", None)
    if not model_ref:
        raise UsageError("the transcoders name no model_name: pass -m/--model")
    model = ReplacementModel.from_pretrained(model_ref, transcoders, dtype=dtype)
    if model.tokenizer is None:
        raise UsageError("the model has no tokenizer, so the corpus cannot be read")
    if args.from_start:
        n_windows = -(-args.n_tokens // (args.context - 1))
        found = list(
            itertools.islice(token_windows(texts, model.tokenizer, args.context), n_windows)
        )
        if not found:
            raise UsageError(f"--corpus {args.corpus} holds fewer than --context tokens")
        windows = torch.stack(found)
    else:
        _, windows = held_out_split(texts, model.tokenizer, args.context, args.n_tokens)
    ev = evaluate_windows(
        model,
        windows,
        batch_size=args.batch_size,
        score_prompts=args.score_prompts,
        score_length=args.score_length,
        losses=not args.no_losses,
        max_feature_nodes=args.max_feature_nodes,
        verbose=not args.quiet,
    )
    print(ev.table())
    if json_path is not None:
        record = {
            "transcoders": str(args.transcoders),
            "model": str(model_ref),
            "corpus": args.corpus,
            "held_out": "first documents" if args.from_start else "last documents",
            "context": args.context,
            **ev.to_dict(),
        }
        write_json_atomic(json_path, record, indent=1)
        print(f"saved {json_path}")
    if plot_path is not None:
        from ..transcoders.eval_plot import plot_eval

        plot_eval(ev, plot_path, title=f"{args.transcoders} on {ev.n_tokens} held-out tokens")
        print(f"saved {plot_path}")
    return 0
