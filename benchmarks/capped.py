"""Capped long prompts: ``attribute`` with ``max_feature_nodes=7500`` on SmolLM2-135M.

For each prompt length and offload mode, a fresh subprocess loads SmolLM2-135M with the
30 x 4,096-feature fitted transcoders (``fixtures.smollm2``), then runs ``attribute`` (and
saves the graph) and reports wall time, CPU time (one torch thread by default: on a busy
2-core machine two threads spin in OpenMP and waste most of their time), peak RSS (``VmHWM``, reset after loading;
it counts the touched pages of mapped files too) and peak anonymous memory (``RssAnon``
sampled every 0.2 s: what ``offload="disk"`` moves out), the graph file's size, and the
rows per sweep the memory check chose. ``estimate-memory``'s predictions (memory, time, file
size, from the run's own active-feature and logit counts and rows per sweep) are printed
beside each figure.

Time is compared twice, in CPU seconds of the child (one torch thread): the whole run (or the
part that ran) against ``estimate-memory``'s prediction of the same part, and the backward
sweeps the run recorded (rows, furthest position, layers passed, read pairs, CPU each) against
the work model applied to those very sweeps (``cost.sweep_seconds``), which checks the rates
apart from the schedule's assumptions about which features a cap chooses. ``--rates`` picks
the rates: this machine's saved calibration (else ``cost_rates.REFERENCE``), the reference, or
a calibration made now. A per-phase line follows each row.

Long prompts cost time per row that grows with ``tokens^2``: ``--max-rows`` (or
``--time-limit``) stops a run after that many feature rows (at the end of a ranking chunk of
``4 * batch_size`` rows); it is then compared with the prediction for those rows, its peak is
the peak *so far*, and its total is *extrapolated* (phases so far + CPU per feature row x rows
left), both marked ``~``. The extrapolation overstates: the first ranking chunk holds the last
position's features, the deepest and furthest of the run (a complete 512-token run took 458 s
of CPU where its first 256 rows extrapolated to ~1,270 s). The machine is shared: each row
records ``uptime``'s load average.

    python benchmarks/capped.py                                   # 128 and 512, both modes
    python benchmarks/capped.py --lengths 1024 --max-rows 512 --offload disk
    python benchmarks/capped.py --lengths 2048 --max-rows 256 --budget 10GiB --json out.json
    python benchmarks/capped.py --lengths 512 --batch-size 64 --rates calibrate
    python benchmarks/capped.py --report benchmarks/results/capped_smollm2.json \
        --rates reference --plot docs/img/capped.png      # the saved runs: table and plot
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from circuitlab.attribution.cost import Sweep, estimate_cost, sweep_seconds  # noqa: E402
from circuitlab.attribution.cost_rates import (  # noqa: E402
    REFERENCE,
    CostRates,
    calibrate,
    load_rates,
    save_rates,
)
from circuitlab.attribution.memory import (  # noqa: E402
    estimate_memory,
    human,
    model_shapes,
    transcoder_shapes,
)

from fixtures import smollm2  # noqa: E402
from plot_axes import length_axes  # noqa: E402

_CHILD = r"""
import json, os, sys, tempfile, threading, time
a = json.loads(sys.argv[1])

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0

import torch
from circuitlab.attribution import attribute
engine = sys.modules["circuitlab.attribution.attribute"]
from circuitlab.attribution.sources import Sources
from circuitlab.batch import LoadSpec

info = {"n_active": None, "sweep_batch": a["batch_size"], "n_logits": 0}
from_capture, check = Sources.from_capture.__func__, engine.check_before_sweep

def counted(cls, *args, **kwargs):
    s = from_capture(cls, *args, **kwargs)
    info["n_active"] = s.n_features
    return s

def checked(*args, **kwargs):
    info["sweep_batch"] = check(*args, **kwargs)
    if a["sweep_batch"]:
        info["sweep_batch"] = min(info["sweep_batch"], a["sweep_batch"])
    return info["sweep_batch"]

# Each backward sweep: rows, furthest position + 1, layers its rows pass (a feature row read
# at layer l passes l, a logit row all), the (feature, row) pairs Sources.read projects, and
# its CPU seconds (cost.Sweep's fields).
from circuitlab.attribution.backward import FrozenBackward
sweeps, rows_of = [], FrozenBackward.rows

def timed_rows(self, sources, layers, positions, vectors):
    c = time.process_time()
    out = rows_of(self, sources, layers, positions, vectors)
    spent = time.process_time() - c
    p, idx = int(positions.max()) + 1, sources.features.indices
    below = torch.bincount(idx[idx[:, 1] < p, 0], minlength=len(self.layers) + 1).cumsum(0)
    passed = layers.clamp(max=len(self.layers))
    pairs = int(torch.where(passed > 0, below[(passed - 1).clamp(min=0)], 0).sum())
    sweeps.append([len(layers), p, int(passed.sum()), pairs, spent])
    return out

FrozenBackward.rows = timed_rows
Sources.from_capture = classmethod(counted)
engine.check_before_sweep = checked
torch.set_num_threads(a["threads"])
model = LoadSpec(a["tc"], a["model"]).load()
open("/proc/self/clear_refs", "w").write("5")  # peak RSS from here
anon = [status("RssAnon")]
done = threading.Event()

def sample():
    while not done.wait(0.2):
        anon[0] = max(anon[0], status("RssAnon"))

threading.Thread(target=sample, daemon=True).start()
starts, rows = {}, [0, 0]

class Stop(Exception):
    pass

cpu_starts = {}

def progress(phase, n, total):
    starts.setdefault(phase, time.perf_counter())
    cpu_starts.setdefault(phase, time.process_time())
    if phase == "logit rows" and n:
        info["n_logits"] = total
    if phase == "feature rows" and n:
        rows[0], rows[1] = n, total
        # Stop at the end of a ranking chunk (4 batches, sorted by position): its rows span
        # the positions, so their mean time is the run's (the first batch alone is the cheapest).
        chunk_end = n % (4 * a["batch_size"]) == 0
        stop_rows = a["max_rows"] and n >= a["max_rows"] and n < total and chunk_end
        late = a["time_limit"] and time.perf_counter() - starts[phase] > a["time_limit"]
        if stop_rows or (late and n < total):
            raise Stop

t0, c0 = time.perf_counter(), time.process_time()
out = dict(complete=True, file_bytes=None)
try:
    g = attribute(model, torch.tensor(a["ids"]), max_feature_nodes=a["cap"],
                  batch_size=a["batch_size"], offload=a["offload"], progress=progress)
    path = os.path.join(tempfile.mkdtemp(), "g.safetensors")
    g.save(path)
    out["file_bytes"] = os.path.getsize(path)
    os.unlink(path)
except Stop:
    out["complete"] = False
end = time.perf_counter()
done.set()
anon[0] = max(anon[0], status("RssAnon"))
fr, c1 = starts.get("feature rows", end), time.process_time()
cr = cpu_starts.get("feature rows", c1)
# CPU seconds of each phase (from its start to the next one's; the graph phase includes the save)
marks = sorted(cpu_starts.items(), key=lambda kv: kv[1]) + [("end", c1)]
phase_cpu = {k: b - t for (k, t), (_, b) in zip(marks, marks[1:])}
out.update(
    phase_cpu=phase_cpu,
    seconds=end - t0, cpu_seconds=c1 - c0, before_rows=fr - t0, before_rows_cpu=cr - c0,
    row_seconds=end - fr, row_cpu_seconds=c1 - cr, rows_done=rows[0], rows_total=rows[1],
    peak=status("VmHWM"), peak_anon=anon[0], load=os.getloadavg()[0], sweeps=sweeps, **info,
)
print(json.dumps(out))
"""


def run_case(fx, n: int, offload: str | None, a: argparse.Namespace) -> dict:
    args = dict(
        tc=str(fx.transcoder_dir),
        model=str(fx.model_dir),
        ids=fx.prompt(n),
        cap=a.cap,
        batch_size=a.batch_size,
        offload=offload,
        max_rows=a.max_rows,
        time_limit=a.time_limit,
        threads=a.threads,
        sweep_batch=a.sweep_batch,
    )
    env = dict(os.environ)
    if a.budget:
        env["CIRCUITLAB_AVAILABLE_MEMORY"] = a.budget
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(args)], capture_output=True, text=True, env=env
    )
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def predict(model, tc, n: int, r: dict, rates: CostRates) -> dict:
    """The predictions for run ``r``: memory, the whole run's time and file, and the time of
    the part that ran (a stopped run: the same ranking chunks, no graph phase)."""
    cap = r.get("cap", r["rows_total"])
    opts: dict[str, Any] = dict(
        n_active=r["n_active"], max_n_logits=r["n_logits"],
        batch_size=r.get("batch_size", r["sweep_batch"]), sweep_batch=r["sweep_batch"],
        rates=rates,
    )  # fmt: skip
    cost = estimate_cost(model, tc, n, max_feature_nodes=cap, **opts)
    ran = cost
    rows = cap
    if not r["complete"]:
        rows = r["rows_done"]
        ran = estimate_cost(model, tc, n, max_feature_nodes=rows, **opts)
    ran_seconds = dict(ran.seconds)
    if not r["complete"]:
        ran_seconds.pop("graph")
    mem = estimate_memory(
        model, tc, n, batch_size=r["sweep_batch"], offload=r["offload"], max_feature_nodes=rows,
        n_active=r["n_active"],
    )  # fmt: skip
    # The work model alone, on the sweeps the run recorded (no schedule assumed).
    recorded = sum(
        sweep_seconds(model, tc, Sweep(k, p, steps, pairs), rates)
        for k, p, steps, pairs, _ in r["sweeps"]
    )
    return dict(
        cost=cost, mem=mem, ran_seconds=ran_seconds, recorded_sweeps=recorded,
        scheduled_sweeps=ran.sweeps,
    )  # fmt: skip


HEAD = (
    f"{'tokens':>6} {'offload':>7} {'active':>9} {'batch':>5} {'rows':>11} {'cpu s':>8} "
    f"{'pred':>7} {'ratio':>5} {'sweeps':>7} {'pred':>7} {'ratio':>5} {'all s':>8} "
    f"{'peak':>10} {'anon':>9} {'pred':>9} {'ratio':>5} {'file':>9} {'pred':>9} {'load':>5}"
)


def measured_peak(r: dict) -> int:
    """The peak compared with the prediction: ``VmHWM`` in memory; with ``offload="disk"`` the
    anonymous peak, since ``VmHWM`` also counts the mapped spill file's (evictable) pages."""
    return r["peak_anon"] if r["offload"] == "disk" else r["peak"]


def report(model, tc, r: dict, rates: CostRates) -> dict:
    """Prints run ``r`` beside its predictions (a table row and a line of phases) and returns
    the row for ``--json``."""
    n, offload = r["tokens"], r["offload"]
    got = predict(model, tc, n, r, rates)
    cost, mem = got["cost"], got["mem"]
    # CPU seconds (one thread): what the machine's load does not stretch. A stopped run is
    # compared with the prediction of the same part; its total is extrapolated as the phases
    # so far plus its CPU per feature row times all the rows.
    ran_pred = sum(got["ran_seconds"].values())
    sweep_cpu = sum(s[-1] for s in r["sweeps"])
    total = r["cpu_seconds"]
    if not r["complete"]:
        per_row = r["row_cpu_seconds"] / max(r["rows_done"], 1)
        total = r["before_rows_cpu"] + per_row * r["rows_total"]
    partial = "" if r["complete"] else "~"
    file = human(r["file_bytes"]) if r["file_bytes"] else "-"
    print(
        f"{n:>6} {offload or 'none':>7} {r['n_active']:>9,} {r['sweep_batch']:>5} "
        f"{r['rows_done']:>5}/{r['rows_total']:<5} {r['cpu_seconds']:>8.0f} "
        f"{ran_pred:>7.0f} {r['cpu_seconds'] / ran_pred:>5.2f} {sweep_cpu:>7.0f} "
        f"{got['recorded_sweeps']:>7.0f} {sweep_cpu / got['recorded_sweeps']:>5.2f} "
        f"{partial + f'{total:.0f}':>8} {partial + human(r['peak']):>10} "
        f"{human(r['peak_anon']):>9} {human(mem.peak):>9} "
        f"{measured_peak(r) / mem.peak:>5.2f} {file:>9} {human(cost.file_bytes):>9} "
        f"{r['load']:>5.1f}",
        flush=True,
    )
    phases = ", ".join(
        f"{k} {r['phase_cpu'].get(k, 0):.1f}/{v:.1f}" for k, v in got["ran_seconds"].items()
    )
    print(
        f"       phases (measured/predicted CPU s): {phases}; {len(r['sweeps'])}/"
        f"{got['scheduled_sweeps']} sweeps; predicted for all {cost.feature_rows:,} rows: "
        f"{cost.total_seconds:,.0f} s",
        flush=True,
    )
    keep = ("predicted_seconds", "predicted_phases", "predicted_ran", "predicted_sweeps_recorded")
    return dict(
        {k: v for k, v in r.items() if k not in keep}, rates=asdict(rates),
        extrapolated_seconds=None if r["complete"] else total,
        predicted_seconds=cost.total_seconds, predicted_phases=cost.seconds,
        predicted_ran=got["ran_seconds"], predicted_sweeps_recorded=got["recorded_sweeps"],
        predicted_sweep_count=got["scheduled_sweeps"], predicted_peak=mem.peak,
        predicted_file_bytes=cost.file_bytes,
    )  # fmt: skip


def plot(results: list[dict], path: Path) -> None:
    """Measured (filled) and predicted (open, dashed) CPU time and peak memory of the complete
    runs against prompt length, log-log, one colour per offload mode; the memory measured is
    the peak RSS in memory and the anonymous peak on disk (as in the table). Stopped runs are
    left out: their time is not the whole run's."""
    from circuitlab.plotting import import_pyplot

    plt = import_pyplot()
    if plt is None:
        raise SystemExit("--plot needs matplotlib: pip install 'circuitlab[plots]'")
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    colors = {"none": "tab:blue", "disk": "tab:orange", "cpu": "tab:green"}
    done = sorted((r for r in results if r["complete"]), key=lambda r: r["tokens"])
    for mode in sorted({r["offload"] or "none" for r in done}):
        runs = [r for r in done if (r["offload"] or "none") == mode]
        tokens = [r["tokens"] for r in runs]
        name = "in memory" if mode == "none" else f'offload="{mode}"'
        measured = [measured_peak(r) for r in runs]
        pairs = (
            ([r["cpu_seconds"] for r in runs], [r["predicted_seconds"] for r in runs]),
            ([m / 2**30 for m in measured], [r["predicted_peak"] / 2**30 for r in runs]),
        )
        for ax, (got, want) in zip(axes, pairs, strict=True):
            c = colors.get(mode, "k")
            ax.plot(tokens, got, "o-", color=c, label=f"{name}: measured")
            ax.plot(tokens, want, "o--", color=c, mfc="none", label=f"{name}: estimate-memory")
    ylabels = ("CPU time of attribute + save (s)", "peak memory (GiB; anonymous on disk)")
    length_axes(axes, [r["tokens"] for r in done], ylabels)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=4, frameon=False)
    fig.suptitle(
        "SmolLM2-135M, max_feature_nodes=7500: measured against estimate-memory, CPU",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--lengths", default="128,512")
    p.add_argument("--offload", default="none,disk", help="comma-separated: none, disk, cpu")
    p.add_argument("--cap", type=int, default=7500, help="max_feature_nodes")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-rows", type=int, default=0, help="stop after this many feature rows")
    p.add_argument("--time-limit", type=float, default=0, help="stop feature rows after SECONDS")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: no OpenMP spinning on a busy CPU)"
    )
    p.add_argument(
        "--sweep-batch", type=int, default=0, help="at most this many rows per backward sweep"
    )
    p.add_argument(
        "--rates",
        choices=["saved", "reference", "calibrate"],
        default="saved",
        help="time predictions with this machine's saved calibration (else the reference "
        "rates), the reference rates, or a calibration made now (and saved)",
    )
    p.add_argument(
        "--report",
        nargs="+",
        metavar="JSON",
        help="run nothing: print the runs that --json saved beside today's predictions",
    )
    p.add_argument("--budget", help="CIRCUITLAB_AVAILABLE_MEMORY for the runs (e.g. 10GiB)")
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--plot", type=Path, help="PNG of time and peak memory against length")
    a = p.parse_args()
    if a.rates == "calibrate":
        rates = calibrate()
        save_rates(rates)
    else:
        rates = REFERENCE if a.rates == "reference" else load_rates()
    print(f"rates: {rates}")
    fx = smollm2()
    model, (tc, _) = model_shapes(fx.model_dir), transcoder_shapes(fx.transcoder_dir)
    print(HEAD)
    results = []
    if a.report:
        for path in a.report:
            results += [report(model, tc, r, rates) for r in json.loads(Path(path).read_text())]
    for n in map(int, a.lengths.split(",")) if not a.report else []:
        for mode in a.offload.split(","):
            offload = None if mode == "none" else mode
            r = run_case(fx, n, offload, a)
            r.update(tokens=n, offload=offload, cap=a.cap, batch_size=a.batch_size)
            results.append(report(model, tc, r, rates))
    print(
        "cpu s / pred: CPU seconds of what ran (a stopped run: up to the rows shown) and its "
        "prediction; sweeps: the recorded backward sweeps' CPU and the work model on them; "
        "all s: the whole run (~: extrapolated); ~ peak: so far (predicted for the same rows). "
        "ratio = measured / predicted (peak: anon for disk). load: 1-min load average"
    )
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    if a.plot is not None:
        plot(results, a.plot)
        print(f"plot: {a.plot}")


if __name__ == "__main__":
    main()
