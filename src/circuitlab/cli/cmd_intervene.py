"""``circuitlab intervene``: change features and see the next-token distribution move."""

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

NAME = "intervene"
HELP = "set, scale or ablate features and show how the top next tokens change"
DESCRIPTION = (
    "Runs the prompt with and without the interventions (in the same mode) and prints the\n"
    "target token's logit and probability and the top-k next tokens before and after.\n\n"
    + INTERVENTION_HELP
)
EXAMPLES = """examples:
  circuitlab intervene --smollm2 -p "The capital of France is" --target " Paris" \\
      --constrained-layers all --nodes 29_1786_5 29_533_5 2_527_1 29_890_5 25_1195_5
  circuitlab intervene -t ./tc -m ./model -p "Fact: the capital of the state containing Dallas is" \\
      --scale 10 8 5000,5001 -4 --constrained-layers 16-21
  circuitlab intervene -t ./tc -m ./model -p "..." --graph-json graphs/dallas.json \\
      --supernode Texas --node-scale -2
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    add_intervention_arguments(p)
    p.add_argument("--target", help="the token to follow (default: the clean top token)")
    p.add_argument("--top-k", type=int, default=10)


def run(args: argparse.Namespace) -> int:
    from ..interventions import check_interventions
    from . import UsageError

    ivs = interventions(args)
    if not ivs:
        raise UsageError("no interventions given: use --set, --scale, --ablate or --nodes")
    model = load_model(args)
    check = check_interventions(
        model,
        args.prompt,
        ivs,
        target=args.target,
        k=args.top_k,
        constrained_layers=parse_layers(args.constrained_layers, model.n_layers),
        freeze_attention=args.freeze_attention,
    )
    print(f"prompt: {args.prompt!r}; {len(ivs)} intervention(s)")
    print(check.report())
    return 0
