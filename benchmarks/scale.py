"""Uncapped graphs (every active feature kept): time, peak memory and file size of ``attribute``.

Issue 16's scale check on the tiny random Llama (5 layers, d_model 80, 640-feature PLTs):

    python benchmarks/scale.py                       # 32, 96, 256 tokens, float32 edges
    python benchmarks/scale.py --lengths 96 --edge-dtype bfloat16
    python benchmarks/scale.py --post --offload disk   # + prune/scores/page; edges in a file

Each run is a fresh ``cl_runner.py`` subprocess (peak-RSS mark reset just before ``attribute``).
Set ``PYTHONPATH=<other checkout>/src`` to measure another version of circuitlab the same way.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from attribution import run_ours  # noqa: E402

from fixtures import FIXTURES  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--fixture", default="tiny_llama_5l")
    p.add_argument("--lengths", default="32,96,256")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--edge-dtype", default=None, help="float32 (default), bfloat16 or float16")
    p.add_argument("--offload", default=None, help="disk: edge blocks in a mapped file")
    p.add_argument("--post", action="store_true", help="also time prune + scores + page JSON")
    a = p.parse_args()
    fx = FIXTURES[a.fixture]()
    head = (
        "tokens",
        "active",
        "nodes",
        "time s",
        "cpu s",
        "peak MB",
        "file MB",
        "post s",
        "post MB",
    )
    print("{:>6} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>7} {:>8}".format(*head))
    with tempfile.TemporaryDirectory() as tmp:
        for n in map(int, a.lengths.split(",")):
            out = Path(tmp) / f"g{n}.safetensors"
            settings = dict(
                batch_size=a.batch_size,
                edge_dtype=a.edge_dtype,
                offload=a.offload,
                post=a.post or None,
            )
            r = run_ours(fx, fx.prompt(n), out, **settings)
            print(
                f"{n:>6} {r['n_active']:>7} {r['n_nodes']:>7} {r['attribute_seconds']:>7.2f} "
                f"{r['attribute_cpu_seconds']:>7.1f} "
                f"{r['attribute_peak_increment'] / 1e6:>8.0f} {out.stat().st_size / 1e6:>8.1f} "
                f"{r.get('post_seconds', float('nan')):>7.2f} "
                f"{r.get('post_peak_increment', float('nan')) / 1e6:>8.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
