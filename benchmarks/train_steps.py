"""Training steps per second, dense products against the sparse kernels (TopK kinds).

    python benchmarks/train_steps.py [--d-model 576] [--features 4096] [--k 32] \
        [--batch 4096] [--layers 1] [--steps 5] [--activation topk]

One optimiser step of ``trainer._step`` (forward, AuxK off, backward, gradient projection,
Adam) on random normalised activations, timed after one warm-up step; both variants in one
run, so their ratio is comparable on a busy machine.
"""

from __future__ import annotations

import argparse
import time

import torch

from circuitlab.transcoders.training import TrainableTranscoders, TrainConfig
from circuitlab.transcoders.training import trainer as trainer_mod


def steps_per_second(args: argparse.Namespace, sparse: bool) -> float:
    L, d, F = args.layers, args.d_model, args.features
    cfg = TrainConfig(
        activation=args.activation,
        d_transcoder=F,
        k=args.k,
        sparse_kernels=sparse,
        auxk_alpha=0.0,
    )
    tc = TrainableTranscoders(L, d, F, activation=args.activation, k=args.k)
    opt = torch.optim.Adam(tc.parameters(), lr=1e-3)
    prog, metrics = trainer_mod.Progress(), trainer_mod._Metrics(L, F)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(L, args.batch, d, generator=g)
    y = torch.randn(L, args.batch, d, generator=g)
    total = args.steps + 1
    trainer_mod._step(tc, opt, cfg, prog, metrics, x, y, total)  # warm-up
    start = time.perf_counter()
    for _ in range(args.steps):
        trainer_mod._step(tc, opt, cfg, prog, metrics, x, y, total)
    return args.steps / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--d-model", type=int, default=576)
    p.add_argument("--features", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--activation", default="topk", choices=["topk", "batchtopk"])
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {vars(args)}")
    dense = steps_per_second(args, sparse=False)
    sparse = steps_per_second(args, sparse=True)
    print(f"dense  {dense:.3f} steps/s ({1 / dense:.2f} s/step)")
    print(f"sparse {sparse:.3f} steps/s ({1 / sparse:.2f} s/step)")
    print(f"speed-up {sparse / dense:.2f}x")


if __name__ == "__main__":
    main()
