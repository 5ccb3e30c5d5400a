"""circuitlab's transcoder training against EleutherAI's sparsify, same data, width and k.

    python benchmarks/train_vs_sparsify.py --work /tmp/tvs [--layers 4 12 20] \
        [--train-tokens 65536] [--steps 192] [--batch 1024] [--width 4096] [--k 32] \
        [--threads 1] [--sparsify-python /work/sparsify-venv/bin/python] [--plot tvs.png] \
        [--k-aux 0] [--skip circuitlab|sparsify]

1. *prepare* (once; reused when ``WORK`` has it): SmolLM2-135M-Instruct
   (``packaged_model_dir('smollm2')``) runs over the offline Wikipedia text
   (``circuitlab.features.corpus``; windows of 64 tokens, BOS dropped) and the MLP inputs
   (``mlp.hook_in``) and outputs (``hook_mlp_out``) of ``--layers`` are cached as
   ``[layers, tokens, d]`` float32 ``.npy`` files: ``--train-tokens`` from the first documents,
   ``--heldout-tokens`` from the last ones (``evaluation.held_out_split``), and the held-out
   token windows; ``order.npy`` fixes every step's batch (random epochs over the training
   tokens), so both tools see the same tokens in the same order.
2. *circuitlab*: TopK PLTs for the chosen layers, trained jointly by the step of
   ``circuitlab train`` (``trainer._step``: fused Adam from ``trainer.new_optimizer``, warm-up
   and decay, unit-norm decoders, AuxK, sparse kernels; normalisation from the first 8,192
   tokens) with its defaults.
3. *sparsify*: ``train_sparsify_worker.py`` in the other venv (its own defaults; see there).
4. *evaluate* both on the held-out tokens, with the same code: FVU
   (``Σ‖y − ŷ‖² / Σ‖y − ȳ‖²``), L0, features never active, and the next-token loss with each
   layer's MLP output replaced by the reconstruction (the BOS position kept), against zeroing
   it: loss recovered ``(L_zero − L_replaced) / (L_zero − L_clean)``. Process CPU time and
   wall time of the training loop alone (data reads included for both); both tools run with
   ``--threads`` torch threads (default 1), one after the other. CPU time is the figure to
   compare on a shared machine: others' load stretches wall time, not CPU time.

``--skip TOOL`` reuses that tool's weights and timing from an earlier run in ``WORK`` (the
cached activations are always reused when their settings match), e.g. to rerun circuitlab's
side alone against a sparsify result.

Prints a table and writes ``WORK/results.json`` and ``--plot``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

DEFAULT_SPARSIFY_PYTHON = "/work/sparsify-venv/bin/python"
CONTEXT = 64


def prepare(work: Path, layers: list[int], train_tokens: int, heldout_tokens: int) -> None:
    """Caches the chosen layers' MLP inputs and outputs (module docstring, step 1)."""
    from circuitlab.features.corpus import token_windows, wikipedia
    from circuitlab.models.loading import load_model
    from circuitlab.models.packaged import packaged_model_dir
    from circuitlab.transcoders.evaluation import held_out_split
    from circuitlab.transcoders.training.activations import mlp_io

    meta_path = work / "meta.json"
    want = {"layers": layers, "train_tokens": train_tokens, "heldout_tokens": heldout_tokens}
    if meta_path.is_file() and json.loads(meta_path.read_text())["settings"] == want:
        return
    work.mkdir(parents=True, exist_ok=True)
    model, tok, adapter = load_model(str(packaged_model_dir("smollm2")))
    assert tok is not None
    texts, held = held_out_split(list(wikipedia()), tok, CONTEXT, heldout_tokens)
    start = time.perf_counter()
    train = torch.stack(_take_windows(token_windows(texts, tok, CONTEXT), train_tokens))
    for name, windows in (("train", train), ("heldout", held)):
        xs, ys = [], []
        for chunk in windows.split(16):
            x, y = mlp_io(model, adapter, chunk, "mlp.hook_in", "hook_mlp_out")
            xs.append(x[layers, :, 1:].flatten(1, 2).float())
            ys.append(y[layers, :, 1:].flatten(1, 2).float())
        np.save(work / f"x_{name}.npy", torch.cat(xs, 1).numpy())
        np.save(work / f"y_{name}.npy", torch.cat(ys, 1).numpy())
    np.save(work / "heldout_ids.npy", held.numpy())
    info = {"settings": want, "model": "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised)"}
    info["seconds"] = round(time.perf_counter() - start, 1)
    info["train_tokens"] = int(train[:, 1:].numel())
    info["heldout_tokens"] = int(held[:, 1:].numel())
    meta_path.write_text(json.dumps(info, indent=2))


def _take_windows(windows: Any, tokens: int) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for w in windows:
        if len(out) * (CONTEXT - 1) >= tokens:
            break
        out.append(w)
    return out


def write_order(work: Path, steps: int, batch: int) -> None:
    """``order.npy``: the training-token index of every step's batch, random epochs."""
    n = np.load(work / "x_train.npy", mmap_mode="r").shape[1]
    need, parts, epoch = steps * batch, [], 0
    while sum(len(p) for p in parts) < need:
        parts.append(torch.randperm(n, generator=torch.Generator().manual_seed(epoch)).numpy())
        epoch += 1
    np.save(work / "order.npy", np.concatenate(parts)[:need])


def train_circuitlab(work: Path, width: int, k: int, batch: int, k_aux: int = 0) -> dict[str, Any]:
    """circuitlab's TopK PLTs (module docstring, step 2); returns weights and timing.
    ``k_aux``: ``TrainConfig.k_aux`` (``circuitlab train --k-aux``; 0: the default, k)."""
    from circuitlab.transcoders.training import trainer as T

    x_all = np.load(work / "x_train.npy", mmap_mode="r")
    y_all = np.load(work / "y_train.npy", mmap_mode="r")
    order = np.load(work / "order.npy")
    n_layers, _, d = x_all.shape
    steps = len(order) // batch
    cfg = T.TrainConfig(
        activation="topk",
        d_transcoder=width,
        k=k,
        batch_size=batch,
        n_tokens=steps * batch,
        k_aux=k_aux,
    )
    tc = T.new_trainable(cfg, n_layers, d)
    opt = T.new_optimizer(tc, cfg)
    prog, metrics = T.Progress(), T._Metrics(n_layers, width)
    history: list[dict[str, Any]] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    first = np.sort(order[:8192])
    T._init_from_buffer(tc, torch.from_numpy(x_all[:, first]), torch.from_numpy(y_all[:, first]))
    for step in range(steps):
        idx = np.sort(order[step * batch : (step + 1) * batch])
        xb = torch.from_numpy(x_all[:, idx]) / tc.in_scale[:, None, None]
        yb = torch.from_numpy(y_all[:, idx]) / tc.out_scale[:, None, None]
        T._step(tc, opt, cfg, prog, metrics, xb, yb, steps)
        if step % 20 == 0 or step == steps - 1:
            s = metrics.summary(prog.tokens, cfg.dead_tokens)
            metrics.reset(n_layers)
            history.append({"step": step + 1, "fvu": s["fvu"], "dead": s["dead"]})
            print(
                f"step {step + 1}/{steps}: fvu {[round(f, 4) for f in s['fvu']]}, dead {s['dead']}",
                flush=True,
            )
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    ts: Any = tc.to_transcoders(input_hook=cfg.in_hook, output_hook=cfg.output_hook)
    weights = {}
    for layer in range(n_layers):
        t = ts.layers[layer]
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            weights[f"{layer}.{name}"] = getattr(t, name).detach().clone()
    info = {"tool": "circuitlab", "seconds": round(seconds, 1)}
    info |= {"cpu_seconds": round(cpu_seconds, 1), "steps": steps, "tokens": steps * batch}
    info |= {"lr": cfg.lr, "optimizer": "fused Adam (circuitlab default, new_optimizer)"}
    info |= {"auxk_alpha": cfg.auxk_alpha, "k_aux": cfg.aux_k, "dead_tokens": cfg.dead_tokens}
    info |= {"threads": torch.get_num_threads(), "history": history}
    torch.save(weights, work / "circuitlab.pt")
    (work / "circuitlab.json").write_text(json.dumps(info, indent=2))
    return info


def run_sparsify(work: Path, python: str, width: int, k: int, batch: int) -> dict[str, Any]:
    worker = Path(__file__).with_name("train_sparsify_worker.py")
    cmd = [python, str(worker), str(work), "--k", str(k), "--width", str(width)]
    cmd += ["--batch", str(batch), "--threads", str(torch.get_num_threads())]
    subprocess.run(cmd, check=True)
    return json.loads((work / "sparsify.json").read_text())


def _encode(w: dict[str, torch.Tensor], layer: int, x: torch.Tensor, k: int) -> torch.Tensor:
    """TopK activations ``[n, F]`` (the k largest ReLU'd pre-activations, as both tools)."""
    pre = torch.relu(x @ w[f"{layer}.W_enc"].T + w[f"{layer}.b_enc"])
    values, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, values)


def _recon(w: dict[str, torch.Tensor], layer: int, x: torch.Tensor, k: int) -> torch.Tensor:
    return _encode(w, layer, x, k) @ w[f"{layer}.W_dec"] + w[f"{layer}.b_dec"]


@torch.no_grad()
def evaluate(work: Path, tools: list[str], layers: list[int], k: int) -> dict[str, Any]:
    """Held-out FVU, L0, never-active features and loss recovered (module docstring, step 4)."""
    from circuitlab.models.adapters import get_module
    from circuitlab.models.loading import load_model
    from circuitlab.models.packaged import packaged_model_dir

    x_all = torch.from_numpy(np.load(work / "x_heldout.npy"))
    y_all = torch.from_numpy(np.load(work / "y_heldout.npy"))
    ids = torch.from_numpy(np.load(work / "heldout_ids.npy"))
    model, _, adapter = load_model(str(packaged_model_dir("smollm2")))
    blocks: Any = get_module(model, adapter.blocks)
    mlps = {layer: get_module(blocks[layer], adapter.mlp) for layer in layers}

    def loss(edit: tuple[int, Any] | None) -> float:
        handle = None
        if edit is not None:
            layer, fn = edit

            def hook(module: Any, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
                new = fn(args[0], output)
                new[:, 0] = output[:, 0]  # the BOS position keeps its clean output
                return new

            handle = mlps[layer].register_forward_hook(hook)
        total, count = 0.0, 0
        try:
            for chunk in ids.split(16):
                logits = model(input_ids=chunk, use_cache=False).logits.float()
                ce = torch.nn.functional.cross_entropy(
                    logits[:, 1:-1].flatten(0, 1), chunk[:, 2:].flatten(), reduction="sum"
                )
                total, count = total + float(ce), count + chunk[:, 2:].numel()
        finally:
            if handle is not None:
                handle.remove()
        return total / count

    clean = loss(None)
    zero = {layer: loss((layer, lambda x, out: torch.zeros_like(out))) for layer in layers}
    results: dict[str, Any] = {"loss_clean": clean, "loss_zero": zero, "tools": {}}
    for tool in tools:
        w = torch.load(work / f"{tool}.pt", weights_only=True)
        rows = []
        for i, layer in enumerate(layers):
            x, y = x_all[i], y_all[i]
            acts = _encode(w, i, x, k)
            y_hat = acts @ w[f"{i}.W_dec"] + w[f"{i}.b_dec"]
            fvu = float((y - y_hat).pow(2).sum() / (y - y.mean(0)).pow(2).sum())

            def replace(
                inp: torch.Tensor, out: torch.Tensor, i: int = i, w: Any = w
            ) -> torch.Tensor:
                return _recon(w, i, inp.float(), k).to(out.dtype)

            replaced = loss((layer, replace))
            rec = (zero[layer] - replaced) / (zero[layer] - clean)
            rows.append(
                {
                    "layer": layer,
                    "fvu": fvu,
                    "l0": float((acts > 0).sum(-1).float().mean()),
                    "never_active": int((~(acts > 0).any(0)).sum()),
                    "loss_replaced": replaced,
                    "loss_recovered": rec,
                }
            )
        results["tools"][tool] = rows
    return results


def report(results: dict[str, Any], infos: dict[str, dict[str, Any]], width: int) -> str:
    lines = [
        "| tool | layer | held-out FVU | loss recovered | L0 | never active | CPU (s) | wall (s) |"
    ]
    lines.append("|---|---|---|---|---|---|---|---|")
    for tool, rows in results["tools"].items():
        for r in rows:
            lines.append(
                f"| {tool} | {r['layer']} | {r['fvu']:.4f} | {r['loss_recovered']:.4f} | "
                f"{r['l0']:.1f} | {r['never_active']} of {width} | | |"
            )
        n = len(rows)
        lines.append(
            f"| **{tool}** | mean | **{sum(r['fvu'] for r in rows) / n:.4f}** | "
            f"**{sum(r['loss_recovered'] for r in rows) / n:.4f}** | "
            f"{sum(r['l0'] for r in rows) / n:.1f} | {sum(r['never_active'] for r in rows)} | "
            f"**{infos[tool].get('cpu_seconds', '?')}** | {infos[tool]['seconds']} |"
        )
    return "\n".join(lines)


def plot(results: dict[str, Any], infos: dict[str, dict[str, Any]], path: Path) -> None:
    from circuitlab.plotting import import_pyplot

    plt = import_pyplot()
    if plt is None:
        print("no plot: pip install matplotlib")
        return
    tools = list(results["tools"])
    layers = [r["layer"] for r in results["tools"][tools[0]]]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    width = 0.8 / len(tools)
    for j, (key, title) in enumerate(
        (
            ("fvu", "held-out FVU (lower is better)"),
            ("loss_recovered", "loss recovered (higher is better)"),
        )
    ):
        ax = axes[j]
        for t, tool in enumerate(tools):
            vals = [r[key] for r in results["tools"][tool]]
            ax.bar([i + t * width for i in range(len(layers))], vals, width, label=tool)
        ax.set_xticks([i + width * (len(tools) - 1) / 2 for i in range(len(layers))])
        ax.set_xticklabels([f"layer {layer}" for layer in layers])
        ax.set_title(title)
        ax.legend()
    for t, tool in enumerate(tools):  # training FVU (of the batches, as each tool logs it)
        hist = infos[tool].get("history", [])
        for i, layer in enumerate(layers):
            steps = [h["step"] for h in hist]
            style = ("-", "--", ":")[i % 3]
            fvu = [h["fvu"][i] for h in hist]
            axes[2].plot(steps, fvu, style, color=f"C{t}", label=f"{tool} L{layer}")
    axes[2].set_ylim(0, 1.2)
    axes[2].set_xlabel("step")
    axes[2].set_title("training FVU")
    axes[2].legend(fontsize=7)
    cpu = [infos[t].get("cpu_seconds", 0.0) for t in tools]
    axes[3].bar(tools, cpu, color=["C0", "C1"][: len(tools)])
    threads = infos[tools[0]].get("threads")
    axes[3].set_title(f"training CPU s, {threads} thread(s) (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="cache and results folder")
    p.add_argument("--layers", type=int, nargs="+", default=[4, 12, 20])
    p.add_argument("--train-tokens", type=int, default=65536)
    p.add_argument("--heldout-tokens", type=int, default=4096)
    p.add_argument("--steps", type=int, default=192)
    p.add_argument("--batch", type=int, default=1024, help="tokens per step")
    p.add_argument("--width", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument(
        "--k-aux", type=int, default=0, help="circuitlab's AuxK k (circuitlab train --k-aux)"
    )
    p.add_argument("--sparsify-python", default=DEFAULT_SPARSIFY_PYTHON)
    p.add_argument("--threads", type=int, default=1, help="torch threads, for both tools")
    p.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["circuitlab", "sparsify"],
        help="reuse this tool's weights and timing from an earlier run in --work",
    )
    p.add_argument("--plot", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()}")
    prepare(args.work, args.layers, args.train_tokens, args.heldout_tokens)
    write_order(args.work, args.steps, args.batch)
    infos = {}
    for tool in ("circuitlab", "sparsify"):
        if tool in args.skip:
            infos[tool] = json.loads((args.work / f"{tool}.json").read_text())
            continue
        print(f"training {tool}; load {os.getloadavg()}", flush=True)
        if tool == "circuitlab":
            infos[tool] = train_circuitlab(args.work, args.width, args.k, args.batch, args.k_aux)
        else:
            infos[tool] = run_sparsify(
                args.work, args.sparsify_python, args.width, args.k, args.batch
            )
        infos[tool]["load_after"] = os.getloadavg()
        print(json.dumps(infos[tool]), flush=True)
    results = evaluate(args.work, list(infos), args.layers, args.k)
    results["runs"] = infos
    results["settings"] = vars(args) | {"work": str(args.work), "plot": str(args.plot)}
    (args.work / "results.json").write_text(json.dumps(results, indent=2))
    print(f"clean loss {results['loss_clean']:.4f}; zeroed {results['loss_zero']}")
    print(report(results, infos, args.width))
    if args.plot:
        plot(results, infos, args.plot)
        print(f"wrote {args.plot}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
