"""Full head-patching sweep on a GPT-2-small-sized random GPT-2 (12 layers x 12 heads, d 768).

Prints the batched sweep's time next to a one-site-per-forward sweep (the naive loop) and their
ratio. Run: ``python benchmarks/heads_patching.py [--batch-size 256] [--naive-sites 24]``.
The naive loop is timed on ``--naive-sites`` sites and scaled to the full sweep.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from circuitlab.heads import LabModel, Target, patch_sweep
from circuitlab.heads.patching import make_pair, run_batch, sweep_sites

# "When Mary and John went to the store, John gave a drink to" is 15 GPT-2 tokens (with BOS);
# a random model has no tokenizer, so stand-in ids with the IOI structure (one name swapped).
MARY, JOHN = 5335, 1757
CLEAN = [50256, 2215, MARY, 290, JOHN, 1816, 284, 262, 3650, 11, JOHN, 2921, 257, 4144, 284]
CORRUPTED = [*CLEAN[:10], MARY, *CLEAN[11:]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--naive-sites", type=int, default=24)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=12, n_head=12, n_embd=768)).eval()
    lab = LabModel.wrap(hf)
    target = Target(MARY, JOHN)
    print(
        f"GPT-2-small-sized random model, {len(CLEAN)}-token IOI-shaped prompt, "
        f"{args.threads} threads, {lab.n_layers * lab.n_heads} heads"
    )

    patch_sweep(lab, CLEAN, CORRUPTED, target, kind="head", batch_size=8)  # warm-up
    t = time.perf_counter()
    res = patch_sweep(lab, CLEAN, CORRUPTED, target, kind="head", batch_size=args.batch_size)
    batched = time.perf_counter() - t
    print(
        f"batched head sweep (batch {args.batch_size}): {batched:.2f} s "
        f"({res.recovery.numel()} heads; recovery range "
        f"{float(res.recovery.min()):+.3f}..{float(res.recovery.max()):+.3f})"
    )

    pair = make_pair(lab, CLEAN, CORRUPTED, target)
    sites = sweep_sites(lab, "head", len(CLEAN), per_position=False)[: args.naive_sites]
    t = time.perf_counter()
    for s in sites:
        run_batch(lab, pair, [s])
    naive = (time.perf_counter() - t) / len(sites) * lab.n_layers * lab.n_heads
    print(f"one site per forward (scaled from {len(sites)} sites): {naive:.2f} s")
    print(f"speed-up: {naive / batched:.1f}x")

    t = time.perf_counter()
    patch_sweep(lab, CLEAN, CORRUPTED, target, kind="resid", batch_size=args.batch_size)
    patch_sweep(lab, CLEAN, CORRUPTED, target, kind="mlp", batch_size=args.batch_size)
    print(
        f"resid + mlp sweeps (layer x position, {2 * 12 * len(CLEAN)} sites): "
        f"{time.perf_counter() - t:.2f} s"
    )


if __name__ == "__main__":
    main()
