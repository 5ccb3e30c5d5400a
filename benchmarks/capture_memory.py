"""Memory of the forward capture on a long prompt, with and without the pattern spill.

    python benchmarks/capture_memory.py none 1024     # every layer's pattern in memory
    python benchmarks/capture_memory.py disk 1024     # each pattern to a SpillFile as computed

Loads SmolLM2-135M with the benchmark transcoders (``fixtures.smollm2()``), runs
``ReplacementModel.capture`` on real text of the given length and prints the anonymous memory
after loading and after the capture, and the process's peak RSS (``VmHWM``). Run each mode in
its own process so the peaks do not mix.
"""

from __future__ import annotations

import argparse

import torch

from circuitlab import ReplacementModel
from circuitlab.attribution.offload import SpillFile

from fixtures import smollm2


def _status(key: str) -> float:
    """``/proc/self/status`` field ``key`` in GiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 2**20
    raise KeyError(key)


def main() -> None:
    ap = argparse.ArgumentParser(description="Memory of the forward capture on a long prompt.")
    ap.add_argument("mode", choices=["none", "disk"])
    ap.add_argument("n_tokens", type=int, nargs="?", default=1024)
    args = ap.parse_args()
    f = smollm2()
    rm = ReplacementModel.from_pretrained(str(f.model_dir), str(f.transcoder_dir))
    ids = torch.tensor(f.prompt(args.n_tokens))
    loaded = _status("RssAnon")
    if args.mode == "disk":
        spill = SpillFile()
        _, cap = rm.capture(ids, pattern_sink=lambda _layer, p: spill.put(p))
    else:
        _, cap = rm.capture(ids)
    print(
        f"{args.mode} {args.n_tokens} tokens: anon after load {loaded:.2f} GiB, after capture "
        f"{_status('RssAnon'):.2f} GiB, peak RSS {_status('VmHWM'):.2f} GiB"
    )
    del cap


if __name__ == "__main__":
    main()
