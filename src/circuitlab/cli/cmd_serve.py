"""``circuitlab serve``: the web lab over a folder of graph files."""

from __future__ import annotations

import argparse

NAME = "serve"
HELP = "serve the web lab over a folder of graph files"
DESCRIPTION = """Serves the lab page, the graph files in --graph_file_dir (written by `circuitlab
attribute --slug ... --graph_file_dir ...` or by circuit-tracer), feature dashboards from
--features_dir, and saves annotations into the graph files. With --model and --transcoders the
page can also trace new prompts and open the heads view (attention-head analysis and patching)
of that model; with --model alone, the heads view only. Binds to 127.0.0.1 unless --host says
otherwise; beyond loopback the lab needs a token (made at start and printed in the URL to open,
or given with --token / $CIRCUITLAB_TOKEN) and answers only the Host names of the bound address
and --allow-host. See docs/security.md."""
EXAMPLES = """examples:
  circuitlab serve --graph_file_dir ./graphs
  circuitlab serve --graph_file_dir ./graphs --features_dir ./my-transcoders --port 8041
  circuitlab serve --graph_file_dir ./graphs --features_dir ./organism --features_dir ./smollm2
  circuitlab serve --graph_file_dir ./graphs --model ./my-model --transcoders ./my-transcoders
  circuitlab serve --graph_file_dir ./graphs --model smollm2      # heads view only
  circuitlab serve --graph_file_dir ./graphs --host 0.0.0.0 --allow-host lab.example.org
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--graph_file_dir", required=True, help="folder of graph JSON files")
    p.add_argument(
        "--features_dir",
        action="append",
        help="dashboard store (holds index.json.gz or features/), or a folder of stores; "
        "repeatable: each graph gets the store of its own transcoder set",
    )
    p.add_argument("--port", type=int, default=8041)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument(
        "--token",
        default=None,
        help="secret every request must carry (default beyond loopback: $CIRCUITLAB_TOKEN or a "
        "new one, printed in the URL; '' is refused there)",
    )
    p.add_argument(
        "--allow-host",
        "--allow_host",
        dest="allow_hosts",
        action="append",
        default=[],
        metavar="NAME",
        help="another Host name the lab answers to beyond loopback (e.g. the machine's DNS name)",
    )
    p.add_argument(
        "-m",
        "--model",
        help="model to trace with (hub id, local dir, .gguf or smollm2); alone: heads view only",
    )
    p.add_argument(
        "-t", "--transcoders", "--transcoder_set", dest="transcoders", help="transcoders"
    )
    p.add_argument("--max_feature_nodes", type=int, default=None)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--node_threshold", type=float, default=0.8)
    p.add_argument("--edge_threshold", type=float, default=0.98)
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..server import serve
    from ..server.running import lab_token
    from . import UsageError

    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be 1-65535, got {args.port}")
    try:
        token = lab_token(args.host, args.token)
    except ValueError as e:
        raise UsageError(f"--token: {e}") from None
    if not Path(args.graph_file_dir).is_dir():
        raise UsageError(f"--graph_file_dir {args.graph_file_dir} is not a folder")
    models = heads_models = None
    if args.model and not args.transcoders:
        from ..heads import LabModel
        from ..models.packaged import PACKAGES

        if not (args.model in PACKAGES or Path(args.model).exists() or "/" in args.model):
            raise UsageError(
                f"--model {args.model}: no such folder or file (give a local dir, .gguf, "
                "hub id or smollm2; add --transcoders to trace prompts)"
            )
        heads_models = {Path(args.model).name or args.model: LabModel.load(args.model)}
    if args.transcoders:
        from ..replacement import ReplacementModel
        from ..transcoders import load_transcoders

        transcoders = load_transcoders(args.transcoders)
        model_ref = args.model or getattr(transcoders, "model_name", None)
        if not model_ref:
            raise UsageError("the transcoders name no model_name: pass -m/--model")
        model = ReplacementModel.from_pretrained(model_ref, transcoders)
        models = {Path(str(model_ref)).name or str(model_ref): model}
    serve(
        args.graph_file_dir,
        args.features_dir,
        port=args.port,
        host=args.host,
        token=token,
        allow_hosts=args.allow_hosts,
        models=models,
        heads_models=heads_models,
        attribute_kwargs={
            "max_feature_nodes": args.max_feature_nodes,
            "batch_size": args.batch_size,
        },
        node_threshold=args.node_threshold,
        edge_threshold=args.edge_threshold,
    )
    return 0
