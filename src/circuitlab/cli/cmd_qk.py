"""``circuitlab qk``: why a head attends where it does (QK attributions).

For a head and a (query, key) pair of positions, or for the heads that attend most from the
query position, prints the (query-side node, key-side node) pairs that make up the head's
pre-softmax score in the local replacement model, each side's node totals and the bias
terms, and writes them as JSON (``--json``). See ``docs/attention.md``.
"""

from __future__ import annotations

import argparse
from typing import Any

from ._attribution import add_model_arguments, load_spec
from ._output import check_output_file

NAME = "qk"
HELP = "QK attributions: which node pairs make a head attend from one position to another"
EXAMPLES = """examples:
  circuitlab qk -p "the capital of state containing Dallas is" -t ./tc -m ./model \\
      --layer 3 --head 5 --key 5
  circuitlab qk -p "the capital of state containing Dallas is" -t ./tc --top-heads 3 --json qk.json
  circuitlab qk -g dallas.safetensors -t ./tc --layer 3 --head 5 --keys 4 --json sweep.json
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-p", "--prompt", help="the prompt text")
    src.add_argument("-g", "--graph", help="a saved graph (.safetensors): its prompt is used")
    add_model_arguments(p)
    p.add_argument("--layer", type=int, help="the attention layer (with --head)")
    p.add_argument("--head", type=int, help="the query head (with --layer)")
    p.add_argument(
        "--query", type=int, default=-1, help="query position (default -1: the last token)"
    )
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("--key", type=int, help="one key position")
    keys.add_argument(
        "--keys",
        type=int,
        metavar="N",
        help="the N keys the head attends to most (default with --layer/--head: 1)",
    )
    keys.add_argument(
        "--all-keys", action="store_true", help="every key the head can attend to (a sweep)"
    )
    p.add_argument(
        "--top-heads",
        type=int,
        default=3,
        metavar="N",
        help="without --layer/--head: the N strongest attention edges from the query position "
        "(key 0, the BOS, left out) (default 3)",
    )
    p.add_argument("--top-k", type=int, default=10, help="pairs and nodes printed (default 10)")
    p.add_argument(
        "--json-top-k",
        type=int,
        default=100,
        help="pairs written to --json per score (default 100; 0 writes all)",
    )
    p.add_argument("--json", help="write the results to this JSON file")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args: argparse.Namespace) -> int:
    from ..atomic import write_json_atomic
    from ..attention import FrozenPrompt, qk_sweep, top_attention
    from . import UsageError

    if (args.layer is None) != (args.head is None):
        raise UsageError("give --layer and --head together (or neither, for --top-heads)")
    for flag, value in (("--top-heads", args.top_heads), ("--top-k", args.top_k)):
        if value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    if args.keys is not None and args.keys < 1:
        raise UsageError(f"--keys must be at least 1, got {args.keys}")
    if args.json_top_k < 0:
        raise UsageError(f"--json-top-k must be 0 (all) or more, got {args.json_top_k}")
    check_output_file(args.json, "--json")
    source: Any = args.prompt
    if args.graph is not None:
        from ..graph import load_graph

        source = load_graph(args.graph)
    model = load_spec(args).load()
    fp = FrozenPrompt.build(model, source)
    top = args.json_top_k or None
    heads: list[tuple[int, int, Any]]
    if args.layer is None:
        heads = [
            (lay, head, [key])
            for lay, head, key, _ in top_attention(
                model, fp, query_pos=args.query, n=args.top_heads
            )
        ]
    else:
        keys: Any = [args.key] if args.key is not None else args.keys or 1
        heads = [(args.layer, args.head, None if args.all_keys else keys)]
    results = []
    for lay, head, wanted in heads:
        results += qk_sweep(model, fp, lay, head, args.query, keys=wanted, top_k=top)
    tokens = _token_strings(model, fp)
    for r in results:
        _print(r, tokens, args.top_k)
    if args.json:
        record = dict(tokens=tokens, results=[r.to_dict() for r in results])
        write_json_atomic(args.json, record, indent=1)
        print(f"wrote {args.json}")
    return 0


def _token_strings(model: Any, fp: Any) -> list[str]:
    tok = model.tokenizer
    ids = fp.ids.tolist()
    return [str(tok.decode([i])) if tok is not None else str(i) for i in ids]


def _label(node: str, tokens: list[str]) -> str:
    """A node id with its kind and position's token: ``3_1234_5`` -> ``L3 #1234 @5 'Dallas'``."""
    first, middle, pos = node.split("_")
    where = f"@{pos} {tokens[int(pos)]!r}"
    if first == "E":
        return f"token {where}"
    if middle == "-1":
        return f"error L{first} {where}"
    return f"feature L{first} #{middle} {where}"


def _print(r: Any, tokens: list[str], k: int) -> None:
    q, key = r.query_pos, r.key_pos
    cap = "" if r.softcap is None else f", soft-capped {r.logit:+.4f}"
    print(
        f"\nlayer {r.layer} head {r.head}: query @{q} {tokens[q]!r} -> key @{key} "
        f"{tokens[key]!r}: score {r.total:+.4f}{cap}, attention {r.attention:.3f}"
    )
    print("  top pairs (query-side node x key-side node):")
    for p in r.pairs[:k]:
        print(
            f"    {p.value:+10.4f}  {_label(p.query_node, tokens)}  x  {_label(p.key_node, tokens)}"
        )
    for side, marg in (("query", r.query_marginals), ("key", r.key_marginals)):
        print(f"  top {side}-side nodes (each node's total share):")
        for node, v in list(marg.items())[:k]:
            print(f"    {v:+10.4f}  {_label(node, tokens)}")
    bias = ", ".join(f"{name} {v:+.4f}" for name, v in r.bias_terms.items())
    print(f"  bias terms: {bias}")
