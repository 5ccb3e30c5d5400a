"""``circuitlab attribute``: trace a prompt and save its attribution graph.

Flags follow circuit-tracer's ``attribute`` command (same names and defaults; ``--backend``
accepted, ``-o NAME.pt`` writes circuit-tracer's ``.pt`` graph) plus targets.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ._attribution import (
    add_attribution_arguments,
    add_memory_check_argument,
    add_model_arguments,
    attribution_kwargs,
    check_attribution_arguments,
    load_spec,
)
from ._output import check_output_dir, check_output_file

if TYPE_CHECKING:
    from ..graph import Graph
    from ..replacement import ReplacementModel

NAME = "attribute"
HELP = "build the attribution graph of a prompt"
EXAMPLES = """examples:
  circuitlab attribute -p "The capital of France is" -t ./my-transcoders -m ./my-model -o france.safetensors
  circuitlab attribute -p "Fact: the capital of the state containing Dallas is" -t llama \\
      --target " Austin" --logit-diff " Austin" " Dallas" -o dallas.safetensors --verbose
  circuitlab attribute -p "The capital of France is" -t ./my-transcoders --slug france \\
      --graph_file_dir ./graphs --server
  circuitlab attribute -p "The capital of France is" -t ./my-transcoders -o france.pt  # circuit-tracer's .pt
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--prompt", required=True, help="the prompt text")
    add_model_arguments(p)
    p.add_argument(
        "-o",
        "--graph_output_path",
        help="where to save the graph: NAME.safetensors (circuitlab's format), or NAME.pt "
        "(circuit-tracer's, readable by its Graph.from_pt; holds a dense [N, N] matrix)",
    )
    add_attribution_arguments(p)
    add_memory_check_argument(p)
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
    g.add_argument(
        "--suggestions",
        action="store_true",
        help="add the automatic supernodes and labels (find_circuit) as the page's editable "
        "suggestions (costs seconds on big graphs)",
    )
    g.add_argument(
        "--attention",
        action="store_true",
        help="precompute head loadings of the strongest edges and QK pairs of the strongest "
        "attention flows into the file, so the page shows them without a model",
    )
    p.add_argument("--verbose", action="store_true", help="progress bar and phase timings")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args: argparse.Namespace) -> int:
    from ..attribution import LogitDiff, attribute
    from ..graph import compute_graph_scores
    from . import UsageError

    out = args.graph_output_path
    files = check_graph_file_flags(args)
    if out is None and not files:
        raise UsageError(
            "nothing would be saved: pass -o/--graph_output_path GRAPH.safetensors "
            "and/or --slug NAME --graph_file_dir DIR"
        )
    check_attribution_arguments(args)
    check_output_file(out, "-o/--graph_output_path")
    if files:
        check_output_dir(args.graph_file_dir, "--graph_file_dir")
    model = load_spec(args).load()
    targets = [*args.target, *(LogitDiff(a, b) for a, b in args.logit_diff)] or None
    graph = attribute(
        model,
        args.prompt,
        attribution_targets=targets,
        verbose=args.verbose,
        **attribution_kwargs(args),
    )
    if out is not None:
        save_graph(graph, model, out)
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
        write_graph_files(args, graph, model.tokenizer, model)
    return 0


def save_graph(graph: Graph, model: ReplacementModel, out: str) -> None:
    """``-o``: circuit-tracer's ``.pt`` (through the compatibility layer's ``Graph.to_pt``, with
    ``cfg`` from ``model``) for a ``.pt`` name, circuitlab's safetensors otherwise."""
    if Path(out).suffix == ".pt":
        from ..compat.circuit_tracer.graph import Graph as CircuitTracerGraph

        CircuitTracerGraph.from_native(graph, model).to_pt(out)
    else:
        graph.save(out)


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


def write_graph_files(
    args: argparse.Namespace, graph: object, tokenizer: object, model: object = None
) -> None:
    """The lab's graph files (``--slug``/``--graph_file_dir``), with ``--suggestions`` and,
    given the ``model`` that traced ``graph``, ``--attention`` results."""
    from ..graph.export import create_graph_files

    path = create_graph_files(
        graph,  # type: ignore[arg-type]
        args.slug,
        args.graph_file_dir,
        args.node_threshold,
        args.edge_threshold,
        tokenizer=tokenizer,
        features_dir=args.features_dir,
        suggestions=bool(getattr(args, "suggestions", False)),
    )
    if getattr(args, "attention", False) and model is not None:
        from ..attention.records import add_attention_results

        add_attention_results(model, graph, path)  # type: ignore[arg-type]
    print(f"wrote {path}")
    if args.server:
        from ..server import serve

        serve(args.graph_file_dir, args.features_dir, port=args.port, slug=args.slug)
