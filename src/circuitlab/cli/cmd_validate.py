"""``circuitlab validate``: necessity and sufficiency curves of a graph's circuit."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import UsageError
from ._output import check_output_dir, check_output_file

NAME = "validate"
HELP = "faithfulness of a graph: necessity/sufficiency curves over pruning thresholds"
DESCRIPTION = (
    "For each node threshold, prunes the graph and ablates its circuit (necessity) or everything\n"
    "outside it (sufficiency) on the graph's prompt, and reports the target logit and probability\n"
    "with the pruned circuit's replacement and completeness scores. Pinned nodes (given, or saved\n"
    "in the lab's {slug}.json) get the same measurements. --mean-ablation REF sets ablated nodes to\n"
    "their mean over reference prompts instead of 0. Definitions: docs/validation.md."
)
EXAMPLES = """examples:
  circuitlab validate dallas.safetensors -t ./tc -m ./model --thresholds 0.5 0.7 0.9 0.99 \\
      --plot dallas.svg --json dallas.faithfulness.json
  circuitlab validate dallas.safetensors -t ./tc --graph_file_dir ./graphs --slug dallas
  circuitlab validate france.safetensors --smollm2 --pinned 29_1786_5 29_533_5 --constrained-layers all
  circuitlab validate dallas.safetensors -t ./tc --mean-ablation prompts.txt --save-means means.safetensors
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "graph", metavar="GRAPH", help="a graph saved by circuitlab attribute -o (.safetensors)"
    )
    p.add_argument("-t", "--transcoders", "--transcoder_set", dest="transcoder_set",
                   help="transcoders: local dir, hub id or shortcut")  # fmt: skip
    p.add_argument(
        "-m", "--model", help="model (default: the transcoders' model_name, else the graph's)"
    )
    p.add_argument(
        "--smollm2", action="store_true", help="use the offline SmolLM2-135M example model"
    )
    p.add_argument("--dtype", choices=["float32", "float64", "bfloat16"], default="float32")
    p.add_argument("--thresholds", type=float, nargs="+", metavar="T",
                   help="node thresholds (default 0.5 0.6 0.7 0.8 0.9 0.95 0.99)")  # fmt: skip
    p.add_argument("--edge_threshold", type=float, default=0.98, help="edge pruning share")
    p.add_argument("--target", help="the token to follow (default: the graph's first logit target)")
    p.add_argument(
        "--pinned", nargs="+", default=[], metavar="ID", help="pinned node ids to measure"
    )
    p.add_argument("--no-saved-pins", dest="saved_pins", action="store_false",
                   help="ignore pinned nodes saved in {graph_file_dir}/{slug}.json")  # fmt: skip
    p.add_argument("--keep-errors", dest="errors", action="store_false",
                   help="sufficiency ablates features only, not error nodes outside the circuit")  # fmt: skip
    p.add_argument("--constrained-layers", metavar="A-B",
                   help="intervention mode: freeze MLP outputs of layers A..B; 'all' = direct effects")  # fmt: skip
    p.add_argument("--no-freeze-attention", dest="freeze_attention", action="store_false")
    p.add_argument("--mean-ablation", metavar="REF",
                   help="mean-ablate: reference prompts (text file, one per line; .jsonl[:FIELD]) "
                        "or saved means (.safetensors)")  # fmt: skip
    p.add_argument("--save-means", metavar="FILE",
                   help="write the means computed from --mean-ablation prompts (.safetensors)")  # fmt: skip
    g = p.add_argument_group("output")
    g.add_argument("--graph_file_dir", help="lab folder: writes {slug}.faithfulness.json there")
    g.add_argument("--slug", help="graph name in the lab (default: GRAPH's file name)")
    g.add_argument("--json", help="also write the result to this JSON file")
    g.add_argument("--plot", help="write the curves to this .svg (or .png, needs matplotlib)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args: argparse.Namespace) -> int:
    from ..graph import Graph
    from ..graph.export import check_slug, create_graph_files
    from ..validation import faithfulness, plot_faithfulness
    from ..validation.faithfulness import DEFAULT_THRESHOLDS
    from ._interventions import parse_layers

    graph_path = Path(args.graph)
    if graph_path.suffix == ".json":
        raise UsageError(
            f"{graph_path.name} is a lab file holding only the pruned graph: validate the full "
            "graph saved with circuitlab attribute -o NAME.safetensors"
        )
    if args.slug and not args.graph_file_dir:
        raise UsageError("--slug names the graph in a lab folder: pass --graph_file_dir DIR too")
    if args.plot and Path(args.plot).suffix.lower() not in (".svg", ".png"):
        raise UsageError(f"--plot {args.plot}: use a .svg or .png file name")
    for t in [*(args.thresholds or []), args.edge_threshold]:
        if not 0.0 <= t <= 1.0:
            raise UsageError(f"thresholds are shares of influence between 0 and 1, got {t}")
    if args.save_means and not args.mean_ablation:
        raise UsageError(
            "--save-means writes means computed from --mean-ablation PROMPTS: pass both"
        )
    if args.save_means and Path(args.save_means).suffix != ".safetensors":
        raise UsageError(f"--save-means {args.save_means}: use a .safetensors file name")
    if args.mean_ablation:
        _means_source(args.mean_ablation)
    for flag, path in (
        ("--json", args.json),
        ("--plot", args.plot),
        ("--save-means", args.save_means),
    ):
        check_output_file(path, flag)
    check_output_dir(args.graph_file_dir, "--graph_file_dir")
    slug = check_slug(args.slug or graph_path.stem) if args.graph_file_dir else graph_path.stem
    graph = Graph.load(graph_path)
    pinned = list(args.pinned) or _saved_pins(args, slug)
    model = load_model(args, graph.model_name)
    means = load_means(args.mean_ablation, model) if args.mean_ablation else None
    if args.save_means and means is not None:
        print(f"wrote {means.save(args.save_means)}")
    result = faithfulness(
        model,
        graph,
        args.thresholds or DEFAULT_THRESHOLDS,
        edge_threshold=args.edge_threshold,
        pinned=pinned or None,
        target=args.target,
        constrained_layers=parse_layers(args.constrained_layers, model.n_layers),
        freeze_attention=args.freeze_attention,
        errors=args.errors,
        means=means,
        slug=slug,
    )
    print(result.table())
    if args.json:
        print(f"wrote {result.save(args.json)}")
    if args.plot:
        print(f"wrote {plot_faithfulness(result, args.plot)}")
    if args.graph_file_dir:
        out = Path(args.graph_file_dir)
        out.mkdir(parents=True, exist_ok=True)
        if not (out / f"{slug}.json").is_file():
            print(f"wrote {create_graph_files(graph, slug, out, tokenizer=model.tokenizer)}")
        print(f"wrote {result.save(out / f'{slug}.faithfulness.json')}")
    return 0


def load_means(ref: str, model: Any) -> Any:
    """``AblationMeans`` from a saved means file, or computed from a file of reference prompts."""
    from ..features.corpus import open_corpus
    from ..interventions import AblationMeans, ablation_means

    flag = f"--mean-ablation {ref}"
    path = _means_source(ref)
    try:
        if path.suffix == ".safetensors":
            means = AblationMeans.load(path)
            means.check(model)
            return means
        if path.suffix == ".jsonl":
            prompts = list(open_corpus(ref))
        else:
            prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        prompts = [p for p in prompts if p.strip()]
        if not prompts:
            raise ValueError(
                "the file holds no prompts: write one prompt per line (or a 'text' field per "
                ".jsonl line)"
            )
        return ablation_means(model, prompts)
    except (ValueError, OSError) as e:
        raise UsageError(f"{flag}: {' '.join(str(e).split())}") from None


def _means_source(ref: str) -> Path:
    """The file ``--mean-ablation`` names (``FILE.jsonl:FIELD`` names ``FILE.jsonl``)."""
    head, sep, field = ref.rpartition(":")
    path = Path(head) if sep and head.endswith(".jsonl") and field else Path(ref)
    if not path.is_file():
        raise UsageError(
            f"--mean-ablation {ref}: no such file; pass reference prompts (a text file with one "
            "prompt per line, or .jsonl[:FIELD]) or a means file saved with --save-means "
            "(.safetensors)"
        )
    return path


def _saved_pins(args: argparse.Namespace, slug: str) -> list[str]:
    """Pinned ids saved by the lab in ``{graph_file_dir}/{slug}.json`` (if any and wanted)."""
    from ..interventions import read_qparams

    if not (args.graph_file_dir and args.saved_pins):
        return []
    path = Path(args.graph_file_dir) / f"{slug}.json"
    if not path.is_file():
        return []
    try:
        pinned, _ = read_qparams(path)
    except (ValueError, AttributeError):
        return []
    if pinned:
        print(f"pinned nodes saved in {path}: {len(pinned)}")
    return pinned


def load_model(args: argparse.Namespace, graph_model: str) -> Any:
    """The model from ``--smollm2`` or ``-t``/``-m`` (model default: the transcoders', the graph's)."""
    import torch

    dtype = getattr(torch, args.dtype)
    if args.smollm2:
        from ..examples import smollm2_replacement_model

        return smollm2_replacement_model(dtype=dtype)
    if not args.transcoder_set:
        raise UsageError("no model: pass -t/--transcoders (and -m/--model), or --smollm2")
    from ..replacement import ReplacementModel
    from ..transcoders import load_transcoders

    tc = load_transcoders(args.transcoder_set, dtype=dtype)
    ref = args.model or getattr(tc, "model_name", None) or graph_model
    try:
        return ReplacementModel.from_pretrained(ref, tc, dtype=dtype)
    except OSError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"cannot load model {ref!r} ({first}): pass -m/--model") from None
