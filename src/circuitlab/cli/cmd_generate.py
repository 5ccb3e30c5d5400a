"""``circuitlab generate``: a continuation with and without interventions, side by side."""

from __future__ import annotations

import argparse

from ._interventions import (
    INTERVENTION_HELP,
    add_intervention_arguments,
    add_model_arguments,
    interventions,
    load_model,
    parse_layers,
)

NAME = "generate"
HELP = "generate with interventions in force (steering), beside the plain continuation"
DESCRIPTION = (
    "Generates from the prompt twice, plainly and with the interventions (KV cache). An\n"
    "open-ended position such as 1: also acts on every generated token.\n\n" + INTERVENTION_HELP
)
EXAMPLES = """examples:
  circuitlab generate --smollm2 -p "The capital of France is" -n 8 \\
      --constrained-layers all --nodes 29_1786_5 29_533_5 2_527_1 29_890_5 25_1195_5
  circuitlab generate -t ./tc -m ./model -p "Hecho: Michael Jordan juega al" \\
      --graph-json graphs/jordan.json --supernode Spanish --node-scale -2 --sample --seed 0
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    add_intervention_arguments(p)
    p.add_argument("-n", "--max-new-tokens", type=int, default=20)
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)


def run(args: argparse.Namespace) -> int:
    from ..interventions import feature_intervention_generate

    ivs = interventions(args)
    model = load_model(args)
    layers = parse_layers(args.constrained_layers, model.n_layers)

    def generate(items: list) -> str:
        return feature_intervention_generate(
            model,
            args.prompt,
            items,
            max_new_tokens=args.max_new_tokens,
            do_sample=args.sample,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
            constrained_layers=layers,
            freeze_attention=args.freeze_attention,
        ).completion

    print(f"prompt:   {args.prompt!r}")
    print(f"plain:    {generate([])!r}")
    if ivs:
        print(f"steered:  {generate(ivs)!r}  ({len(ivs)} intervention(s))")
    return 0
