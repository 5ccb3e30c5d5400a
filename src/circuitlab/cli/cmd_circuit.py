"""``circuitlab circuit``: a saved graph turned into a labelled circuit of supernodes.

Writes ``{stem}.circuit.json`` (supernodes with labels and members, the reduced edges, the
scores of the reduced graph, the merge heights of the hierarchy), ``{stem}.circuit.md`` (a
markdown summary) and ``{stem}.circuit.png`` (``.svg`` with ``--svg`` or without matplotlib)
into ``--out``. With transcoders (``-t``) the grouping also uses decoder directions, and
``--validate`` ablates each supernode and reports the agreement. See ``docs/circuits.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from ._attribution import add_model_arguments, load_spec
from ._output import check_output_dir

NAME = "circuit"
HELP = "group a graph into labelled supernodes, reduce it, and check it by ablation"
EXAMPLES = """examples:
  circuitlab circuit dallas.safetensors --out circuit/
  circuitlab circuit dallas.safetensors --groups 4 --features_dir ./dashboards --out circuit/
  circuitlab circuit dallas.safetensors -t ./tc --features_dir ./dashboards --validate
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("graph", help="a saved graph (.safetensors)")
    p.add_argument(
        "--groups",
        type=int,
        help="number of supernodes (default: cut at the position term's height)",
    )
    p.add_argument("--node_threshold", type=float, default=0.8, help="node pruning share")
    p.add_argument("--edge_threshold", type=float, default=0.98, help="edge pruning share")
    p.add_argument("--features_dir", help="feature dashboards the labels are made from")
    add_model_arguments(p, transcoders_required=False)
    p.add_argument(
        "--validate",
        action="store_true",
        help="ablate each supernode and compare with the reduced graph (needs -t)",
    )
    p.add_argument("--out", default=".", help="output folder (default: here)")
    p.add_argument("--svg", action="store_true", help="write the figure as SVG, not PNG")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args: argparse.Namespace) -> int:
    from ..atomic import write_atomic, write_json_atomic
    from ..circuits import find_circuit
    from ..circuits.figure import write_circuit_figure
    from ..graph import load_graph
    from . import UsageError

    for name in ("node_threshold", "edge_threshold"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise UsageError(f"--{name} must be between 0 and 1, got {getattr(args, name)}")
    if args.groups is not None and args.groups < 1:
        raise UsageError(f"--groups must be at least 1, got {args.groups}")
    if args.validate and not args.transcoder_set:
        raise UsageError("--validate needs the graph's transcoders: pass -t/--transcoder_set")
    out = check_output_dir(args.out, "--out")
    assert out is not None
    graph = load_graph(args.graph)
    model = load_spec(args).load() if args.transcoder_set else None
    circuit = find_circuit(
        graph,
        node_threshold=args.node_threshold,
        edge_threshold=args.edge_threshold,
        model=model,
        features_dir=args.features_dir,
    )
    n = int(circuit.grouping.features.numel())
    if args.groups is not None:
        if args.groups > n:
            raise UsageError(f"--groups {args.groups}: the pruned graph has only {n} features")
        circuit = circuit.cut(args.groups)
    data = circuit.to_json()
    summary = circuit.summary()
    if args.validate:
        assert model is not None
        agreement = circuit.validate(model)
        data["validation"] = agreement.to_json()
        summary += "\n" + agreement.table() + "\n"
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.graph).name.removesuffix(".safetensors")
    json_path, md_path = out / f"{stem}.circuit.json", out / f"{stem}.circuit.md"
    png = not args.svg and importlib.util.find_spec("matplotlib") is not None
    figure = out / f"{stem}.circuit.{'png' if png else 'svg'}"
    write_json_atomic(json_path, data, indent=1)
    write_atomic(md_path, summary.encode())
    write_circuit_figure(circuit, figure)
    print(summary)
    print(f"wrote {json_path}, {md_path}, {figure}")
    return 0
