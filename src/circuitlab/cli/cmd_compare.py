"""``circuitlab compare``: diff two graphs, or aggregate three or more."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import UsageError
from ._output import check_output_dir, check_output_file

NAME = "compare"
HELP = "compare graphs: overlap, spectral distance, shared/only-A/only-B nodes; aggregate sets"
DESCRIPTION = (
    "With two graphs: influence-weighted node and edge overlap, spectral distance of the pruned\n"
    "graphs, and the features shared or only in one (aligned by decoder cosine when the\n"
    "transcoder bases differ). With --graph_file_dir the lab's diff file\n"
    "{slugA}__vs__{slugB}.diff.json is written there (and the graph files if missing).\n"
    "With three or more graphs: recurring features and edges ranked, and the prompts clustered.\n"
    "Definitions: docs/validation.md."
)
EXAMPLES = """examples:
  circuitlab compare dallas.safetensors oakland.safetensors --graph_file_dir ./graphs
  circuitlab compare a.safetensors b.safetensors --position-aware --json diff.json
  circuitlab compare base.safetensors tuned.safetensors --transcoders-a ./tc_base --transcoders-b ./tc_tuned
  circuitlab compare g1.safetensors g2.safetensors g3.safetensors g4.safetensors --json agg.json
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "graphs", nargs="+", metavar="GRAPH", help="graphs saved by circuitlab attribute -o"
    )
    p.add_argument(
        "--slugs", nargs="+", metavar="SLUG", help="names of the graphs (default: file names)"
    )
    p.add_argument("--node_threshold", type=float, default=0.8, help="node pruning share")
    p.add_argument("--edge_threshold", type=float, default=0.98, help="edge pruning share")
    p.add_argument("--position-aware", action="store_true",
                   help="features at different positions differ (same prompt, two models)")  # fmt: skip
    a = p.add_argument_group("different transcoder bases")
    a.add_argument("--transcoders-a", metavar="T", help="transcoders of graph A (for alignment)")
    a.add_argument("--transcoders-b", metavar="T", help="transcoders of graph B (for alignment)")
    a.add_argument("--align", choices=["auto", "yes", "no"], default="auto",
                   help="align features by decoder cosine (auto: when the bases differ)")  # fmt: skip
    a.add_argument("--align-threshold", type=float, default=0.7, help="minimum decoder cosine")
    p.add_argument("--cluster-threshold", type=float, default=0.5,
                   help="aggregate: merge clusters while their mean overlap is at least this")  # fmt: skip
    p.add_argument("--graph_file_dir", help="lab folder for the diff file")
    p.add_argument("--json", help="write the diff (or aggregate) to this JSON file")
    p.add_argument("--top", type=int, default=10, help="features listed in the summary")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args: argparse.Namespace) -> int:
    from ..graph import Graph
    from ..graph.export import check_slug

    if len(args.graphs) < 2:
        raise UsageError("give at least two graphs to compare (three or more are aggregated)")
    for name in ("node_threshold", "edge_threshold", "align_threshold", "cluster_threshold"):
        value = getattr(args, name)
        if not 0.0 <= value <= 1.0:
            raise UsageError(f"--{name.replace('_', '-')} must be between 0 and 1, got {value}")
    if args.slugs is not None and len(args.slugs) != len(args.graphs):
        raise UsageError(f"--slugs gives {len(args.slugs)} names for {len(args.graphs)} graphs")
    slugs = [check_slug(s) for s in (args.slugs or [_stem(g) for g in args.graphs])]
    if len(set(slugs)) != len(slugs):
        raise UsageError(f"two graphs share the name {slugs}: pass distinct --slugs")
    if len(args.graphs) > 2 and args.graph_file_dir and not args.json:
        raise UsageError("an aggregate is not a lab file: write it with --json FILE")
    check_output_file(args.json, "--json")
    check_output_dir(args.graph_file_dir, "--graph_file_dir")
    graphs = [Graph.load(path) for path in args.graphs]
    if len(graphs) == 2:
        return _diff(args, graphs, slugs)
    return _aggregate(args, graphs, slugs)


def _stem(path: str) -> str:
    name = Path(path).name
    return name.split(".")[0] or name


def _diff(args: argparse.Namespace, graphs: list[Any], slugs: list[str]) -> int:
    from ..graph.export import create_graph_files
    from ..transcoders import load_transcoders
    from ..validation import compare_graphs

    align = {"auto": None, "yes": True, "no": False}[args.align]
    tc_a = load_transcoders(args.transcoders_a) if args.transcoders_a else None
    tc_b = load_transcoders(args.transcoders_b) if args.transcoders_b else None
    diff = compare_graphs(
        graphs[0],
        graphs[1],
        node_threshold=args.node_threshold,
        edge_threshold=args.edge_threshold,
        position_aware=args.position_aware,
        transcoders_a=tc_a,
        transcoders_b=tc_b,
        align=align,
        align_threshold=args.align_threshold,
        slug_a=slugs[0],
        slug_b=slugs[1],
    )
    print(diff.summary(args.top))
    if args.json:
        print(f"wrote {diff.save(args.json)}")
    if args.graph_file_dir:
        out = Path(args.graph_file_dir)
        out.mkdir(parents=True, exist_ok=True)
        for graph, slug in zip(graphs, slugs, strict=True):
            if not (out / f"{slug}.json").is_file():
                path = create_graph_files(
                    graph, slug, out, args.node_threshold, args.edge_threshold
                )
                print(f"wrote {path}")
        print(f"wrote {diff.save(out / diff.file_name())}")
    return 0


def _aggregate(args: argparse.Namespace, graphs: list[Any], slugs: list[str]) -> int:
    from ..validation import aggregate_graphs

    if args.transcoders_a or args.transcoders_b or args.align == "yes":
        raise UsageError("alignment compares two graphs; aggregate graphs of one transcoder basis")
    result = aggregate_graphs(
        graphs,
        node_threshold=args.node_threshold,
        edge_threshold=args.edge_threshold,
        position_aware=args.position_aware,
        cluster_threshold=args.cluster_threshold,
        slugs=slugs,
    )
    print(result.summary(args.top))
    if args.json:
        print(f"wrote {result.save(args.json)}")
    return 0
