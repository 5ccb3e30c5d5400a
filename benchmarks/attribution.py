"""circuitlab vs circuit-tracer 0.5.0: attribution time, memory and agreement, side by side.

Each (fixture, prompt length) runs both tools in fresh subprocesses on the same model,
transcoders, token ids and settings, and prints wall time and CPU time (all threads) of
``attribute``, its peak-RSS increase (weights read before; the peak mark reset just before it),
and the largest edge difference relative to the largest edge, with ratios. CPU time is the
steadier figure on a busy machine.

    python benchmarks/attribution.py                        # tiny Llama + SmolLM2, 8/32/128/512 tokens
    python benchmarks/attribution.py --fixtures smollm2 --lengths 1024 --ours-only

The peer is looked up as in ``peer.py`` ($CIRCUITLAB_PEER_PYTHON or /work/ct-venv/bin/python);
without it only our columns are printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from circuitlab import load_graph  # noqa: E402

from fixtures import FIXTURES, Fixture  # noqa: E402
from peer import find_peer_python, peer_missing_reason, run_peer  # noqa: E402


def run_ours(fx: Fixture, ids: list[int], out: Path, **settings: object) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).parent / "cl_runner.py"),
        "--model",
        str(fx.model_dir),
        "--transcoders",
        str(fx.transcoder_dir),
        "--prompt-ids",
        json.dumps(ids),
        "--out",
        str(out),
    ]
    for k, v in settings.items():
        if v is True:
            cmd.append(f"--{k.replace('_', '-')}")
        elif v is not None:
            cmd += [f"--{k.replace('_', '-')}", str(v)]
    subprocess.run(cmd, check=True)
    return json.loads(Path(str(out) + ".json").read_text())


def compare(ours_path: Path, peer) -> tuple[float, float]:
    """(max |edge difference| / max |edge|, fraction of peer-selected features we selected)."""
    g = load_graph(ours_path)
    if not torch.equal(g.active_features, peer.active_features):
        return float("nan"), 0.0
    ours_sel, peer_sel = set(g.selected_features.tolist()), set(peer.selected_features.tolist())
    overlap = len(ours_sel & peer_sel) / max(len(peer_sel), 1)
    if ours_sel != peer_sel:
        return float("nan"), overlap
    A = peer.adjacency_matrix
    rows = g.row_nodes
    diff = (g.edges.float() - A[rows]).abs().max().item()
    return diff / A.abs().max().item(), overlap


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--fixtures", default="tiny_llama,smollm2")
    p.add_argument("--lengths", default="8,32,128,512")
    p.add_argument("--max-feature-nodes", type=int, default=1024)
    p.add_argument(
        "--batch-size", type=int, default=None, help="default: 64, or 16 from 512 tokens"
    )
    p.add_argument("--ours-only", action="store_true")
    a = p.parse_args()
    peer_py = None if a.ours_only else find_peer_python()
    if not a.ours_only and peer_py is None:
        print(f"(no circuit-tracer columns: {peer_missing_reason()})")
    header = (
        f"{'fixture':<11}{'tokens':>7}{'active':>8}{'rows':>6}{'batch':>6} | {'ours s':>8}{'peer s':>8}{'ratio':>7}"
        f" | {'ours cpu':>9}{'peer cpu':>9}{'ratio':>7}"
        f" | {'ours MB':>8}{'peer MB':>8}{'ratio':>7} | {'rel diff':>9} | {'file KB':>8}{'.pt KB':>8}"
    )
    print(header)
    print("-" * len(header))
    tmp = Path(tempfile.mkdtemp(prefix="cl-bench-"))
    for name in a.fixtures.split(","):
        fx = FIXTURES[name]()
        for n in [int(x) for x in a.lengths.split(",")]:
            ids = fx.prompt(n)
            batch = a.batch_size or (64 if n < 512 else 16)
            settings = dict(batch_size=batch, max_feature_nodes=a.max_feature_nodes)
            ours = run_ours(fx, ids, tmp / f"{name}-{n}.safetensors", **settings)
            row = (
                f"{name:<11}{len(ids):>7}{ours['n_active']:>8}{ours['n_selected']:>6}{batch:>6} | "
                f"{ours['attribute_seconds']:>8.2f}"
            )
            mb = ours["attribute_peak_increment"] / 2**20
            cpu = ours["attribute_cpu_seconds"]
            if peer_py is None:
                print(
                    row + f"{'-':>8}{'-':>7} | {cpu:>9.2f}{'-':>9}{'-':>7}"
                    f" | {mb:>8.0f}{'-':>8}{'-':>7} | {'-':>9}",
                    flush=True,
                )
                continue
            try:
                pt = tmp / f"{name}-{n}.pt"
                peer = run_peer(fx.model_dir, fx.transcoder_dir, ids, pt_out=pt, **settings)  # type: ignore[arg-type]
            except Exception as e:  # the peer may run out of memory or time on long prompts
                print(row + f"  peer failed: {str(e).splitlines()[-1][:80]}", flush=True)
                continue
            pmb = peer.attribute_peak_increment_bytes / 2**20
            diff, overlap = compare(tmp / f"{name}-{n}.safetensors", peer)
            diff_s = f"{diff:9.1e}" if diff == diff else f"sel {overlap:.2f}"
            print(
                row
                + f"{peer.attribute_seconds:>8.2f}{ours['attribute_seconds'] / peer.attribute_seconds:>7.3f} | "
                f"{cpu:>9.2f}{peer.attribute_cpu_seconds:>9.2f}{cpu / peer.attribute_cpu_seconds:>7.3f} | "
                f"{mb:>8.0f}{pmb:>8.0f}{mb / max(pmb, 1e-9):>7.3f} | {diff_s:>9} | "
                f"{(tmp / f'{name}-{n}.safetensors').stat().st_size / 1024:>8.0f}"
                f"{pt.stat().st_size / 1024:>8.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
