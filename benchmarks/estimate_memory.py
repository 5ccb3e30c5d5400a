"""``estimate-memory`` against measured peaks: predicted vs measured peak RSS, side by side.

Each case runs in a fresh subprocess: imports, ``LoadSpec.load()``, ``attribute`` and
``compute_graph_scores`` (what ``circuitlab attribute`` does), then reports the kernel's peak
RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and the RSS after imports and after
loading. The estimate is printed twice: with the default ``l0`` (what a user gets without
knowing the transcoders) and with the ``l0`` the run actually had (n_active / (layers *
(tokens - 1))), which isolates the model of memory from the guess of sparsity.

    python benchmarks/estimate_memory.py                 # tiny_llama and smollm2
    python benchmarks/estimate_memory.py --fixtures tiny_llama --json out.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from circuitlab.attribution.memory import estimate_memory, human, model_shapes, transcoder_shapes

from fixtures import FIXTURES

CASES = {
    "tiny_llama": [
        dict(n_tokens=16, batch_size=256, max_feature_nodes=7500, offload=None),
        dict(n_tokens=64, batch_size=64, max_feature_nodes=7500, offload=None),
        dict(n_tokens=64, batch_size=64, max_feature_nodes=7500, offload="disk"),
    ],
    "smollm2": [
        dict(n_tokens=16, batch_size=64, max_feature_nodes=1024, offload=None),
        dict(n_tokens=16, batch_size=64, max_feature_nodes=1024, offload="disk"),
        dict(n_tokens=32, batch_size=64, max_feature_nodes=2048, offload=None),
    ],
}

_CHILD = """
import json, resource, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
a = json.loads(sys.argv[1])
import torch
from circuitlab.attribution import attribute
from circuitlab.batch import LoadSpec
from circuitlab.graph import compute_graph_scores
imports = rss()
model = LoadSpec(a["tc"], a["model"]).load()
loaded = rss()
g = attribute(model, torch.tensor(a["ids"]), batch_size=a["batch_size"],
              max_feature_nodes=a["max_feature_nodes"], offload=a["offload"])
compute_graph_scores(g)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(dict(imports=imports, loaded=loaded, peak=peak, n_active=g.n_active)))
"""


def measure(fixture, case: dict) -> dict:
    args = dict(
        tc=str(fixture.transcoder_dir),
        model=str(fixture.model_dir),
        ids=fixture.prompt(case["n_tokens"]),
        batch_size=case["batch_size"],
        max_feature_nodes=case["max_feature_nodes"],
        offload=case["offload"],
    )
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(args)], capture_output=True, text=True
    )
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description="estimate-memory vs measured peak RSS")
    p.add_argument("--fixtures", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--json", help="also write the rows to this file")
    a = p.parse_args()
    rows = []
    head = f"{'fixture':<11}{'tokens':>7}{'rows':>6}{'batch':>6}{'offload':>8}"
    head += f"{'l0':>7}{'measured':>11}{'pred(l0)':>11}{'ratio':>7}{'pred(def)':>11}{'ratio':>7}"
    print(head)
    for name in a.fixtures:
        fixture = FIXTURES[name]()
        model, (tc, _) = model_shapes(fixture.model_dir), transcoder_shapes(fixture.transcoder_dir)
        for case in CASES[name]:
            got = measure(fixture, case)
            n = case["n_tokens"]
            l0 = got["n_active"] / (model.n_layers * (n - 1))
            opts = dict(
                batch_size=case["batch_size"],
                max_feature_nodes=case["max_feature_nodes"],
                offload=case["offload"],
            )
            fit = estimate_memory(model, tc, n, l0=l0, **opts)
            default = estimate_memory(model, tc, n, **opts)
            row = dict(
                fixture=name, **case, l0=round(l0, 2), measured=got["peak"],
                rss_after_imports=got["imports"], rss_after_load=got["loaded"],
                predicted_l0=fit.peak, ratio_l0=round(got["peak"] / fit.peak, 3),
                predicted_default=default.peak, ratio_default=round(got["peak"] / default.peak, 3),
            )  # fmt: skip
            rows.append(row)
            print(
                f"{name:<11}{n:>7}{case['max_feature_nodes']:>6}{case['batch_size']:>6}"
                f"{str(case['offload']):>8}{l0:>7.1f}{human(got['peak']):>11}"
                f"{human(fit.peak):>11}{row['ratio_l0']:>7.2f}"
                f"{human(default.peak):>11}{row['ratio_default']:>7.2f}",
                flush=True,
            )
    print("ratio = measured / predicted (1.0 is exact; > 1 means the estimate is low)")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
