"""``circuitlab attribute``: trace a prompt and save its attribution graph.

Flags follow circuit-tracer's ``attribute`` command (same names and defaults) plus targets.
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "attribute"
HELP = "build the attribution graph of a prompt"
EXAMPLES = """examples:
  circuitlab attribute -p "The capital of France is" -t ./my-transcoders -m ./my-model -o france.safetensors
  circuitlab attribute -p "Fact: the capital of the state containing Dallas is" -t llama \\
      --target " Austin" --logit-diff " Austin" " Dallas" -o dallas.safetensors --verbose
  circuitlab attribute -p "The capital of France is" -t ./my-transcoders --slug france \
      --graph_file_dir ./graphs --server
"""

DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "float64": "float64",
    "fp64": "float64",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--prompt", required=True, help="the prompt text")
    p.add_argument(
        "-t",
        "--transcoder_set",
        required=True,
        help="transcoders: local dir, hub id, or shortcut (gemma, llama)",
    )
    p.add_argument(
        "-m",
        "--model",
        help="model: hub id, local dir or .gguf (default: the transcoders' model_name)",
    )
    p.add_argument("-o", "--graph_output_path", help="where to save the graph (.safetensors)")
    p.add_argument("--max_n_logits", type=int, default=10)
    p.add_argument("--desired_logit_prob", type=float, default=0.95)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--max_feature_nodes", type=int, default=7500)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--offload", choices=["cpu", "disk"], default=None)
    p.add_argument("--lazy-encoder", action="store_true", help="read encoder rows on demand")
    p.add_argument(
        "--no-lazy-decoder",
        dest="lazy_decoder",
        action="store_false",
        help="load whole decoders instead of reading active rows on demand",
    )
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="TOKEN",
        help="a logit target (one token, e.g. ' Austin'); repeatable",
    )
    p.add_argument(
        "--logit-diff",
        nargs=2,
        action="append",
        default=[],
        metavar=("POS", "NEG"),
        help="a logit-difference target logit(POS) - logit(NEG); repeatable",
    )
    g = p.add_argument_group("graph files for the web lab (as in circuit-tracer)")
    g.add_argument("--slug", help="name of the graph in the lab (file {slug}.json)")
    g.add_argument("--graph_file_dir", help="folder for the lab's graph files")
    g.add_argument("--node_threshold", type=float, default=0.8, help="node pruning share")
    g.add_argument("--edge_threshold", type=float, default=0.98, help="edge pruning share")
    g.add_argument("--server", action="store_true", help="serve the lab afterwards")
    g.add_argument("--port", type=int, default=8041, help="port for --server")
    g.add_argument("--features_dir", help="dashboard store for --server and feature labels")
    p.add_argument("--verbose", action="store_true", help="progress bar and phase timings")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..attribution import LogitDiff, attribute
    from ..graph import compute_graph_scores
    from ..replacement import ReplacementModel
    from ..transcoders import load_transcoders
    from . import UsageError

    out = args.graph_output_path
    files = check_graph_file_flags(args)
    if out is None and not files:
        raise UsageError(
            "nothing would be saved: pass -o/--graph_output_path GRAPH.safetensors "
            "and/or --slug NAME --graph_file_dir DIR"
        )
    if out is not None and Path(out).suffix == ".pt":
        raise UsageError(
            "circuitlab saves graphs as safetensors, never pickles: use -o NAME.safetensors "
            "(circuit-tracer .pt graphs can be imported with circuitlab.import_circuit_tracer_pt)"
        )
    dtype = getattr(torch, DTYPES[args.dtype])
    transcoders = load_transcoders(
        args.transcoder_set,
        dtype=dtype,
        lazy_encoder=args.lazy_encoder,
        lazy_decoder=args.lazy_decoder,
    )
    model_ref = args.model or getattr(transcoders, "model_name", None)
    if not model_ref:
        raise UsageError("the transcoders name no model_name: pass -m/--model")
    model = ReplacementModel.from_pretrained(model_ref, transcoders, dtype=dtype)
    targets = [*args.target, *(LogitDiff(a, b) for a, b in args.logit_diff)] or None
    graph = attribute(
        model,
        args.prompt,
        attribution_targets=targets,
        max_n_logits=args.max_n_logits,
        desired_logit_prob=args.desired_logit_prob,
        batch_size=args.batch_size,
        max_feature_nodes=args.max_feature_nodes,
        offload=args.offload,
        verbose=args.verbose,
    )
    if out is not None:
        graph.save(out)
    scores = compute_graph_scores(graph)
    print(f"{graph.n_selected} features of {graph.n_active} active, {graph.n_nodes} nodes")
    print(
        "targets: "
        + ", ".join(
            f"{t.token_str!r} ({p:.3f})"
            for t, p in zip(graph.logit_targets, graph.logit_probabilities.tolist(), strict=True)
        )
    )
    print(f"replacement score {scores.replacement:.3f}, completeness {scores.completeness:.3f}")
    if out is not None:
        print(f"saved {out}")
    if files:
        write_graph_files(args, graph, model.tokenizer)
    return 0


def check_graph_file_flags(args: argparse.Namespace) -> bool:
    """circuit-tracer's rules: both --slug and --graph_file_dir make files; --server needs both."""
    import sys

    from ..graph.export import check_slug
    from . import UsageError

    if args.server and not (args.slug and args.graph_file_dir):
        raise UsageError("--server needs --slug and --graph_file_dir (the graph to serve)")
    if bool(args.slug) != bool(args.graph_file_dir):
        print(
            "circuitlab attribute: warning: graph files need both --slug and --graph_file_dir; "
            "none will be written",
            file=sys.stderr,
        )
        return False
    if args.slug:
        check_slug(args.slug)
        for name in ("node_threshold", "edge_threshold"):
            if not 0.0 <= getattr(args, name) <= 1.0:
                raise UsageError(f"--{name} must be between 0 and 1, got {getattr(args, name)}")
    return bool(args.slug)


def write_graph_files(args: argparse.Namespace, graph: object, tokenizer: object) -> None:
    from ..graph.export import create_graph_files

    path = create_graph_files(
        graph,  # type: ignore[arg-type]
        args.slug,
        args.graph_file_dir,
        args.node_threshold,
        args.edge_threshold,
        tokenizer=tokenizer,
        features_dir=args.features_dir,
    )
    print(f"wrote {path}")
    if args.server:
        from ..server import serve

        print(f"circuitlab lab on http://127.0.0.1:{args.port}/?slug={args.slug} (Ctrl+C stops it)")
        serve(args.graph_file_dir, args.features_dir, port=args.port)
