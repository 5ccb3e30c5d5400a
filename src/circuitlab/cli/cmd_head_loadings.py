"""``circuitlab head-loadings``: which attention heads carry an edge of a saved graph.

Prints, for one edge (or the sum of several ``--edge`` pairs), each layer's split into the
heads' parts and the bypass (the part that skips that layer's attention), and writes it as
JSON (``--json``). See ``docs/attention.md``.
"""

from __future__ import annotations

import argparse

from ._attribution import add_model_arguments, load_spec
from ._output import check_output_file

NAME = "head-loadings"
HELP = "head loadings: how much of a graph edge each attention head carries"
EXAMPLES = """examples:
  circuitlab head-loadings -g dallas.safetensors -t ./tc --edge 0_58_9 2_23_10
  circuitlab head-loadings -g dallas.safetensors -t ./tc -m ./model --edge 0_58_9 5_18_10 \\
      --edge 0_67_9 5_18_10 --layer 1 --json loadings.json
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-g", "--graph", required=True, help="a saved graph (.safetensors)")
    add_model_arguments(p)
    p.add_argument(
        "--edge",
        nargs=2,
        action="append",
        required=True,
        metavar=("SOURCE", "TARGET"),
        help="an edge by the lab's node ids (e.g. 0_58_9 2_23_10); repeat to sum several edges",
    )
    p.add_argument("--layer", type=int, help="one attention layer (default: every layer)")
    p.add_argument("--top", type=int, default=3, help="heads shown per layer (default 3)")
    p.add_argument("--json", help="write the loadings to this JSON file")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args: argparse.Namespace) -> int:
    from ..atomic import write_json_atomic
    from ..attention import head_loadings
    from ..graph import load_graph
    from . import UsageError

    if args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    check_output_file(args.json, "--json")
    graph = load_graph(args.graph)
    model = load_spec(args).load()
    edges = [(s, t) for s, t in args.edge]
    result = head_loadings(model, graph, edges, layer=args.layer)
    what = " + ".join(f"{s} -> {t}" for s, t in edges)
    print(f"edge {what}: {result.edge:+.4f}")
    print(f"  {'layer':>5}  {'bypass':>9}  top heads (head: loading)")
    for i, layer in enumerate(result.layers):
        row = result.heads[i]
        order = row.abs().argsort(descending=True)[: args.top].tolist()
        heads = ", ".join(f"H{h}: {float(row[h]):+.4f}" for h in order if row[h] != 0)
        print(f"  {layer:>5}  {float(result.bypass[i]):+9.4f}  {heads or '-'}")
    if args.json:
        write_json_atomic(args.json, result.to_dict(), indent=1)
        print(f"wrote {args.json}")
    return 0
