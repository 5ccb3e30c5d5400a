"""Run circuitlab's ``attribute`` in a fresh process and report time and memory.

The twin of ``ct_runner.py`` for our side, so both tools are measured the same way: a
subprocess, ``perf_counter`` and ``process_time`` around ``attribute`` only, weights read once
before it, the kernel's peak-RSS mark reset just before it and read after. Writes the graph
(``Graph.save``) plus a JSON sidecar.

    python benchmarks/cl_runner.py --model DIR --transcoders DIR --prompt-ids '[1, 2, 3]' \\
        --batch-size 64 --max-feature-nodes 1024 --out /tmp/ours.safetensors
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from ct_runner import current_rss_bytes, hwm_bytes, reset_peak_rss, touch_weights


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--transcoders", required=True)
    p.add_argument("--prompt-ids", required=True)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-feature-nodes", type=int, default=None)
    p.add_argument("--max-n-logits", type=int, default=10)
    p.add_argument("--desired-logit-prob", type=float, default=0.95)
    p.add_argument("--update-interval", type=int, default=4)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--offload", default=None)
    p.add_argument("--edge-dtype", default=None)
    p.add_argument("--post", action="store_true", help="also time prune + scores + page JSON")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True)
    a = p.parse_args()

    import torch

    from circuitlab import ReplacementModel, attribute

    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    model = ReplacementModel.from_pretrained(a.model, a.transcoders, dtype=getattr(torch, a.dtype))
    load = time.perf_counter() - t0
    ids = json.loads(a.prompt_ids)
    touch_weights(model.model)
    touch_weights(model.transcoders)  # eager encoders are memory-mapped until first read
    rss_before = current_rss_bytes()
    hwm_reset = reset_peak_rss()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    graph = attribute(
        model,
        ids,
        max_n_logits=a.max_n_logits,
        desired_logit_prob=a.desired_logit_prob,
        max_feature_nodes=a.max_feature_nodes,
        batch_size=a.batch_size,
        update_interval=a.update_interval,
        offload=a.offload,
        **({"edge_dtype": a.edge_dtype} if a.edge_dtype else {}),
    )
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    peak = hwm_bytes() if hwm_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    graph.save(a.out)
    meta = {
        "attribute_seconds": seconds,
        "attribute_cpu_seconds": cpu,
        "load_seconds": load,
        "phases": graph.settings.get("timings", {}),
        "rss_before_attribute": rss_before,
        "peak_rss": peak,
        "attribute_peak_increment": max(peak - rss_before, 0),
        "n_active": graph.n_active,
        "n_selected": graph.n_selected,
        "n_nodes": graph.n_nodes,
    }
    if a.post:
        meta.update(_post(graph))
    Path(a.out + ".json").write_text(json.dumps(meta, indent=2))


def _post(graph) -> dict:
    """Time and peak-RSS increase of what the lab does with a fresh graph: prune, scores, page."""
    from circuitlab.graph import compute_graph_scores, prune_graph
    from circuitlab.graph.export import graph_json

    rss_before = current_rss_bytes()
    hwm_reset = reset_peak_rss()
    t0 = time.perf_counter()
    prune_graph(graph)
    compute_graph_scores(graph)
    graph_json(graph, "bench")
    seconds = time.perf_counter() - t0
    peak = hwm_bytes() if hwm_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"post_seconds": seconds, "post_peak_increment": max(peak - rss_before, 0)}


if __name__ == "__main__":
    main()
