"""Grouping and labelling a large pruned graph (issue 18 target: 7,500 features under 10 s on
a 2-core machine).

    python benchmarks/circuits.py [--features 7500] [--layers 12] [--positions 24] [--threads N]

``--features 15000`` gives the issue's size: pruning keeps about 7,400 of them.

Builds a random causal graph in code (``EdgeBlocks``: each feature reads a sparse random set
of features and errors of lower layers at positions up to its own, and its position's token),
a dashboard store with a record for every feature, and times ``find_circuit`` with pruning
thresholds 1.0 (every feature with influence kept): pruning, grouping (distances + dendrogram),
then labels and the reduced graph, twice (the first run pays for first-touch allocations); wall and CPU time (the
machine may be shared: CPU time is the steadier figure).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from circuitlab.circuits import find_circuit
from circuitlab.circuits.circuit import _assemble, _read_records
from circuitlab.circuits.grouping import group_features
from circuitlab.features.store import write_store
from circuitlab.graph import Graph, LogitTarget, prune_graph
from circuitlab.graph.edges import EdgeBlock, EdgeBlocks


def random_graph(n_features: int, n_layers: int, n_pos: int, fan_in: int, seed: int = 0) -> Graph:
    gen = torch.Generator().manual_seed(seed)
    per_layer = n_features // n_layers
    coords = torch.tensor(
        [
            [layer, int(p), f]
            for layer in range(n_layers)
            for f, p in enumerate(torch.randint(1, n_pos, (per_layer,), generator=gen))
        ]
    )
    order = sorted(range(len(coords)), key=lambda i: tuple(coords[i].tolist()))
    coords = coords[order]
    n_sel, n_logits = len(coords), 5
    n_err = n_layers * n_pos
    n_nodes = n_sel + n_err + n_pos + n_logits
    node_layer = torch.cat([coords[:, 0], torch.arange(n_layers).repeat_interleave(n_pos)])
    node_pos = torch.cat([coords[:, 1], torch.arange(n_pos).repeat(n_layers)])
    err = n_sel + torch.arange(n_err)
    blocks = []
    for layer in range(n_layers + 1):
        if layer < n_layers:
            targets = (coords[:, 0] == layer).nonzero().flatten()
        else:
            targets = torch.arange(n_sel + n_err + n_pos, n_nodes)
        sources = torch.cat(
            [(node_layer[:n_sel] < layer).nonzero().flatten(), err[node_layer[n_sel:] < layer]]
        )
        sources = torch.cat([sources, n_sel + n_err + torch.arange(n_pos)])
        src_pos = torch.cat([node_pos[sources[:-n_pos]], torch.arange(n_pos)])
        tgt_pos = coords[targets, 1] if layer < n_layers else torch.full((n_logits,), n_pos - 1)
        density = min(1.0, fan_in / max(len(sources), 1))
        mask = torch.rand(len(targets), len(sources), generator=gen) < density
        mask &= src_pos[None, :] <= tgt_pos[:, None]
        values = torch.randn(len(targets), len(sources), generator=gen) * mask
        blocks.append(EdgeBlock(targets, sources, values, layer))
    return Graph(
        input_string="random",
        input_tokens=torch.arange(n_pos),
        logit_targets=[LogitTarget(f"t{i}", i) for i in range(n_logits)],
        logit_probabilities=torch.full((n_logits,), 0.18),
        vocab_size=1000,
        active_features=coords,
        activation_values=torch.rand(n_sel, generator=gen) + 0.5,
        selected_features=torch.arange(n_sel),
        n_layers=n_layers,
        model_name="",
        edge_blocks=EdgeBlocks(blocks, n_nodes, torch.float32),
    )


def dashboards(root: Path, graph: Graph) -> Path:
    per_layer: dict[int, int] = {}
    for layer, _, f in graph.active_features.tolist():
        per_layer[layer] = max(per_layer.get(layer, 0), f + 1)
    ex = {"tokens": ["a", "b", "c"], "tokens_acts_list": [0.0, 2.0, 1.0]}
    layers = [
        [
            {
                "examples_quantiles": [{"examples": [ex] * 5}],
                "top_logits": [f"up{f % 7}"],
                "bottom_logits": [f"down{f % 5}"],
            }
            for f in range(per_layer.get(layer, 0))
        ]
        for layer in range(graph.n_layers)
    ]
    return write_store(root / "features", layers)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--features", type=int, default=7500)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--positions", type=int, default=24)
    ap.add_argument("--fan-in", type=int, default=40)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's own, one per core); on a machine shared with "
        "other busy processes 1 avoids threads waiting on each other",
    )
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}")
    graph = random_graph(args.features, args.layers, args.positions, args.fan_in)
    with tempfile.TemporaryDirectory() as tmp:
        store = dashboards(Path(tmp), graph)
        for run in ("first run", "second run"):
            t0, c0 = time.perf_counter(), time.process_time()
            pruned = prune_graph(graph, 1.0, 1.0)
            c1 = time.process_time()
            t1 = time.perf_counter()
            grouping = group_features(graph, pruned)
            t2 = time.perf_counter()
            records = _read_records(graph, grouping.features, store)
            circuit = _assemble(graph, pruned, grouping, None, records)
            t3, c3 = time.perf_counter(), time.process_time()
            n = int(grouping.features.numel())
            print(f"{run}: {graph.n_selected} features, {pruned.n_edges} kept edges, {n} grouped")
            print(
                f"  prune {t1 - t0:.2f} s, group {t2 - t1:.2f} s, labels + reduce {t3 - t2:.2f} s"
            )
            print(
                f"  grouping and labelling: {t3 - t1:.2f} s wall, {c3 - c1:.2f} s CPU (all threads)"
            )
            print(f"  with pruning: {t3 - t0:.2f} s wall, {c3 - c0:.2f} s CPU")
            print(f"  default cut: {circuit.n_groups} groups; scores {circuit.scores}")
        t4 = time.perf_counter()
        find_circuit(graph, node_threshold=1.0, edge_threshold=1.0, features_dir=store)
        print(f"find_circuit (the same in one call): {time.perf_counter() - t4:.2f} s")


if __name__ == "__main__":
    main()
