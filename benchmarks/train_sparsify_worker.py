"""EleutherAI sparsify's transcoders trained on cached activations (the peer half of
``train_vs_sparsify.py``; run with the python of a separate venv holding ``eai-sparsify``).

    /work/sparsify-venv/bin/python benchmarks/train_sparsify_worker.py WORK --k 32 \
        --width 4096 --batch 1024 --threads 2

Reads ``WORK/x_train.npy``, ``WORK/y_train.npy`` (``[layers, tokens, d]`` float32) and
``WORK/order.npy`` (the token index of every step's batch, shared with circuitlab's run) and
trains one ``sparsify.SparseCoder`` per layer with sparsify's own parts and defaults: a TopK
transcoder (``TranscoderConfig``: zero-initialised decoder, no decoder normalisation), the
FVU loss of ``SparseCoder.forward`` with the batch's total variance, the first-step bias
initialisation of ``sparsify.Trainer`` (``b_enc = −mean(x) · W_encᵀ``, ``b_dec = mean(y)``),
its default optimiser (``SignSGD`` in ``schedulefree.ScheduleFreeWrapper``, momentum 0.95,
``lr = 5e-3 / sqrt(width / 2**14)``) and AuxK off (its default ``auxk_alpha = 0``). Only the
data feed differs from ``sparsify.Trainer.fit``: cached activations instead of model
forwards, so both tools see the same tokens in the same order. Writes ``WORK/sparsify.pt``
(per layer ``W_enc [F, d]``, ``b_enc [F]``, ``W_dec [F, d]``, ``b_dec [d]``) and
``WORK/sparsify.json`` (wall and process CPU time of the training loop, settings, the
training FVU every 20 steps: the mean of the steps' batch FVUs since the last log).
"""

# pyright: reportMissingImports=false
# (runs in the sparsify venv: sparsify and schedulefree are not circuitlab dependencies)

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from schedulefree import ScheduleFreeWrapper
from sparsify import SparseCoder, TranscoderConfig
from sparsify.sign_sgd import SignSGD


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("work", type=Path)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--width", type=int, default=4096)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x_all = np.load(args.work / "x_train.npy", mmap_mode="r")
    y_all = np.load(args.work / "y_train.npy", mmap_mode="r")
    order = np.load(args.work / "order.npy")
    n_layers, _, d = x_all.shape
    steps = len(order) // args.batch
    torch.manual_seed(0)
    cfg = TranscoderConfig(k=args.k, num_latents=args.width)
    saes = [SparseCoder(d, cfg, "cpu", dtype=torch.float32) for _ in range(n_layers)]
    lr = 5e-3 / (args.width / 2**14) ** 0.5  # sparsify.Trainer's default for signum
    opt = ScheduleFreeWrapper(
        SignSGD([dict(params=s.parameters(), lr=lr) for s in saes]), momentum=0.95
    )
    opt.train()
    fvus = [0.0] * n_layers
    history, fvu_sums, logged = [], [0.0] * n_layers, 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for step in range(steps):
        idx = np.sort(order[step * args.batch : (step + 1) * args.batch])
        xb = torch.from_numpy(x_all[:, idx])
        yb = torch.from_numpy(y_all[:, idx])
        for layer, sae in enumerate(saes):
            x, y = xb[layer], yb[layer]
            if step == 0:  # sparsify.Trainer's initialisation on its first batch
                sae.encoder.bias.data = -x.mean(0) @ sae.encoder.weight.data.T
                sae.b_dec.data = y.mean(0)
            total_variance = (y - y.mean(0)).pow(2).sum()
            out = sae(x=x, y=y, dead_mask=None, total_variance=total_variance)
            out.fvu.backward()
            fvus[layer] = float(out.fvu.detach())
            fvu_sums[layer] += fvus[layer]
        opt.step()
        opt.zero_grad()
        if step % 20 == 0 or step == steps - 1:  # mean over the steps since the last log
            mean = [f / (step + 1 - logged) for f in fvu_sums]
            history.append({"step": step + 1, "fvu": mean})
            fvu_sums, logged = [0.0] * n_layers, step + 1
            print(f"step {step + 1}/{steps}: fvu {[round(f, 4) for f in mean]}", flush=True)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    opt.eval()  # schedule-free: the evaluation weights are the averaged iterate
    state = {
        f"{layer}.{name}": t.detach().clone()
        for layer, sae in enumerate(saes)
        for name, t in (
            ("W_enc", sae.encoder.weight),
            ("b_enc", sae.encoder.bias),
            ("W_dec", sae.W_dec),
            ("b_dec", sae.b_dec),
        )
        if t is not None
    }
    torch.save(state, args.work / "sparsify.pt")
    info = {
        "tool": f"eai-sparsify {_version()}",
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "steps": steps,
        "tokens": steps * args.batch,
        "lr": lr,
        "optimizer": "SignSGD + ScheduleFreeWrapper(momentum 0.95) (sparsify default)",
        "auxk_alpha": 0.0,
        "train_fvu_last_batch": fvus,
        "threads": args.threads,
        "history": history,
    }
    (args.work / "sparsify.json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info))


def _version() -> str:
    from importlib.metadata import version

    return version("eai-sparsify")


if __name__ == "__main__":
    main()
