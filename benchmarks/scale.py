"""Uncapped graphs (every active feature kept): circuitlab and circuit-tracer 0.5.0 side by side.

Issue 16's scale check. Per (fixture, prompt length): circuitlab's ``attribute`` with float32
edges, bfloat16 edges and ``offload="disk"``, then circuit-tracer 0.5.0 on the same model,
transcoders, token ids and settings; each run in a fresh subprocess (``cl_runner.py`` /
``ct_runner.py`` through ``peer.py``). Printed per run: wall and CPU time of ``attribute``, its
peak-RSS increase (weights read first, the kernel's peak mark reset just before it), the saved
graph's size (our ``.safetensors``, the peer's ``torch.save``d ``Graph``), the largest edge
difference against the peer over the largest peer edge, and ours/peer ratios.

    python benchmarks/scale.py --plot docs/img/scale.png   # both fixtures, both tools, 3 variants
    python benchmarks/scale.py --fixture tiny_llama_5l      # 32, 96, 256 tokens
    python benchmarks/scale.py --fixture smollm2            # 8, 32, 128 tokens
    python benchmarks/scale.py --lengths 96 --edge-dtype bfloat16 --no-peer
    python benchmarks/scale.py --post --offload disk --no-peer   # + prune/scores/page
    python benchmarks/scale.py --replot runs.json --plot docs/img/scale.png

A run predicted to need more than ``--memory-limit-gb`` (default 8) is skipped with the
prediction printed: circuit-tracer's from its dense float32 matrices (see ``peer_edge_bytes``),
ours from ``estimate_memory``. Timings on a shared machine move; the load average is printed
beside each point, and the ratios of one run side by side are what count.
Set ``PYTHONPATH=<other checkout>/src`` to measure another version of circuitlab the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from attribution import run_ours  # noqa: E402
from circuitlab import Graph, load_graph  # noqa: E402
from circuitlab.attribution.memory import estimate_memory, model_shapes, transcoder_shapes  # noqa: E402

from fixtures import FIXTURES, Fixture  # noqa: E402
from peer import find_peer_python, peer_missing_reason, run_peer  # noqa: E402
from plot_axes import length_axes  # noqa: E402

LENGTHS = {"tiny_llama_5l": (32, 96, 256), "smollm2": (8, 32, 128)}
#: Our variants: name -> cl_runner settings.
VARIANTS = {
    "float32": {},
    "bfloat16": {"edge_dtype": "bfloat16"},
    "disk": {"offload": "disk"},
}
PEER = "circuit-tracer"
#: What the skip test adds to the peer's dense matrices. Measured beyond them: 0.6-0.75 GiB on
#: the tiny Llama, 2.7 GiB (8 tokens) to 3.7 GiB (32) on SmolLM2, where autograd keeps every
#: layer's activations; so the prediction is a lower bound and a skip is certain.
PEER_BASE_BYTES = 3 * 2**29


@dataclass
class Run:
    """One measured (or skipped) run; sizes in bytes, times in seconds."""

    fixture: str
    tokens: int
    tool: str  # "circuitlab" or PEER
    variant: str  # a VARIANTS key, or "" for the peer
    load: float  # 1-minute load average when the run started
    n_active: int = 0
    n_nodes: int = 0
    seconds: float = float("nan")
    cpu_seconds: float = float("nan")
    peak_increment: float = float("nan")  # peak-RSS increase during attribute
    peak_rss: float = float("nan")  # the process's peak RSS (load included)
    file_bytes: float = float("nan")
    rel_diff: float = float("nan")  # max |ours - peer| / max |peer| (both ran)
    post_seconds: float = float("nan")
    post_increment: float = float("nan")
    skipped: str = ""


def peer_edge_bytes(n_active: int, n_layers: int, n_pos: int, n_logits: int) -> int:
    """circuit-tracer 0.5.0's largest dense edge memory on an uncapped graph: it fills
    ``edge_matrix[R, N]`` (float32, R = features + logits, N = all nodes), sorts it into a copy
    (two alive), then builds ``full_edge_matrix[N, N]`` beside the sorted one (its
    ``attribute.py``, phase 5); ``ct_runner`` then serialises the ``[N, N]`` (one more copy)."""
    n = n_active + (n_layers + 1) * n_pos + n_logits
    r = n_active + n_logits
    return 4 * max(2 * r * n, r * n + n * n)


def predicted_ours(fx: Fixture, n_tokens: int, settings: dict, l0: float | None) -> int:
    """``estimate_memory``'s peak for our run (``l0`` measured on a shorter prompt if known)."""
    given = {k: v for k, v in settings.items() if v is not None}  # older versions: no edge_dtype
    est = estimate_memory(
        model_shapes(fx.model_dir),
        transcoder_shapes(fx.transcoder_dir)[0],
        n_tokens,
        max_feature_nodes=None,
        l0=l0,
        **given,
    )
    return est.peak


def edge_difference(graph: Graph, peer_matrix: torch.Tensor) -> float:
    """``max |A_ours - A_peer| / max |A_peer|`` over every entry of the ``[N, N]`` matrix:
    the entries our blocks hold compared block by block, and the peer's entries outside them
    (structural zeros for us) compared with 0. NaN if the graphs' nodes differ."""
    a = peer_matrix
    if tuple(a.shape) != (graph.n_nodes, graph.n_nodes):
        return float("nan")
    held = torch.zeros(a.shape, dtype=torch.bool)  # [N, N] bytes: which entries we store
    worst = 0.0
    for b in graph.edge_blocks.blocks:
        rows, cols = b.targets[:, None], b.sources[None, :]
        diff = (a[rows, cols] - b.values.float()).abs()
        worst = max(worst, float(diff.max()) if diff.numel() else 0.0)
        held[rows, cols] = True
    for start in range(0, a.shape[0], 2048):
        rows = slice(start, start + 2048)
        worst = max(worst, float(a[rows].abs().masked_fill(held[rows], 0).max()))
    return worst / max(float(a.abs().max()), 1e-30)


def run_point(
    fx: Fixture,
    n: int,
    variants: dict[str, dict],
    *,
    peer: bool,
    limit: int,
    l0: float | None,
    tmp: Path,
    batch_size: int,
    post: bool,
    threads: int | None,
) -> list[Run]:
    """Our variants, then the peer, on one prompt of ``n`` tokens; edges compared at the end."""
    ids = fx.prompt(n)
    runs: list[Run] = []
    graphs: dict[str, Path] = {}
    for variant, variant_settings in variants.items():
        run = Run(fx.name, n, "circuitlab", variant, os.getloadavg()[0])
        runs.append(run)
        need = predicted_ours(fx, n, variant_settings, l0)
        if need > limit:
            run.skipped = f"estimate_memory predicts {need / 2**30:.1f} GiB > limit (--l0?)"
            continue
        out = tmp / f"{fx.name}-{n}-{variant}.safetensors"
        settings = dict(
            batch_size=batch_size, post=post or None, threads=threads, **variant_settings
        )
        try:
            r = run_ours(fx, ids, out, **settings)
        except subprocess.CalledProcessError as e:
            run.skipped = f"failed (exit {e.returncode})"
            continue
        graphs[variant] = out
        run.n_active, run.n_nodes = r["n_active"], r["n_nodes"]
        run.seconds, run.cpu_seconds = r["attribute_seconds"], r["attribute_cpu_seconds"]
        run.peak_increment, run.peak_rss = r["attribute_peak_increment"], r["peak_rss"]
        run.file_bytes = out.stat().st_size
        run.post_seconds = r.get("post_seconds", float("nan"))
        run.post_increment = r.get("post_peak_increment", float("nan"))
    if not peer:
        return runs
    run = Run(fx.name, n, PEER, "", os.getloadavg()[0])
    runs.append(run)
    ours = next((r for r in runs if r.n_active), None)
    if ours is None:
        run.skipped = "no circuitlab run to size it from"
        return runs
    n_logits = ours.n_nodes - ours.n_active - (_n_layers(fx) + 1) * n
    need = peer_edge_bytes(ours.n_active, _n_layers(fx), n, n_logits) + PEER_BASE_BYTES
    run.n_active, run.n_nodes = ours.n_active, ours.n_nodes
    if need > limit:
        run.skipped = (
            f"dense float32 [N, N], N = {ours.n_nodes:,}: needs over {need / 2**30:.1f} GiB > limit"
        )
        return runs
    pt = tmp / f"{fx.name}-{n}.pt"
    try:
        res = run_peer(
            fx.model_dir,
            fx.transcoder_dir,
            ids,
            batch_size=batch_size,
            threads=threads,
            pt_out=pt,
            timeout=3600,
        )
    except Exception as e:  # out of memory or time: say so and go on
        run.skipped = f"failed: {str(e).splitlines()[-1][:80]}"
        return runs
    run.seconds, run.cpu_seconds = res.attribute_seconds, res.attribute_cpu_seconds
    run.peak_increment, run.peak_rss = res.attribute_peak_increment_bytes, res.peak_rss_bytes
    run.file_bytes = pt.stat().st_size
    pt.unlink()
    for r in runs:
        if r.tool == "circuitlab" and r.variant in graphs:
            graph = load_graph(graphs[r.variant])
            same = torch.equal(graph.active_features, res.active_features)
            r.rel_diff = edge_difference(graph, res.adjacency_matrix) if same else float("nan")
    return runs


def _n_layers(fx: Fixture) -> int:
    return model_shapes(fx.model_dir).n_layers


# ---- table, plot, command line ------------------------------------------------------------------
HEAD = (
    f"{'fixture':<14}{'tokens':>7}{'active':>8}{'nodes':>8}  {'run':<15}{'time s':>8}{'cpu s':>8}"
    f"{'peak MB':>9}{'file MB':>9}{'rel diff':>9}{'t ratio':>8}{'cpu ratio':>10}{'mem ratio':>10}"
    f"{'load':>6}"
)
FOOT = (
    "time: attribute wall s; cpu: its CPU s (all threads); peak MB: peak-RSS increase during "
    "attribute (1e6 B); file: our .safetensors / the peer's .pt; rel diff: max |ours - peer| / "
    "max |peer| over all N x N entries; ratios ours / peer; load: 1-min load average at start"
)


def rows_of(runs: list[Run], post: bool) -> list[str]:
    """Table lines of one point's runs; ratios are ours / the peer's."""
    peer = next((r for r in runs if r.tool == PEER and not r.skipped), None)
    lines = []
    for r in runs:
        name = r.variant if r.tool == "circuitlab" else PEER
        head = f"{r.fixture:<14}{r.tokens:>7}{r.n_active:>8}{r.n_nodes:>8}  {name:<15}"
        if r.skipped:
            lines.append(head + f"skipped: {r.skipped}")
            continue
        t_ratio = c_ratio = m_ratio = float("nan")
        if peer is not None and r is not peer:
            t_ratio = r.seconds / peer.seconds
            c_ratio = r.cpu_seconds / peer.cpu_seconds
            m_ratio = r.peak_increment / max(peer.peak_increment, 1.0)
        line = (
            head + f"{r.seconds:>8.2f}{r.cpu_seconds:>8.1f}{r.peak_increment / 1e6:>9.0f}"
            f"{r.file_bytes / 1e6:>9.1f}{_num(r.rel_diff, '9.1e')}{_num(t_ratio, '8.3f')}"
            f"{_num(c_ratio, '10.3f')}{_num(m_ratio, '10.3f')}{r.load:>6.1f}"
        )
        if post and r.tool == "circuitlab":
            line += f"  post {r.post_seconds:.2f} s {r.post_increment / 1e6:.0f} MB"
        lines.append(line)
    return lines


def report(runs: list[Run], post: bool) -> list[str]:
    """Table lines of every point, in the order run."""
    points: dict[tuple[str, int], list[Run]] = {}
    for r in runs:
        points.setdefault((r.fixture, r.tokens), []).append(r)
    return [line for point in points.values() for line in rows_of(point, post)]


def _num(x: float, fmt: str) -> str:
    width = int(fmt.split(".")[0])
    return f"{'-':>{width}}" if x != x else f"{x:>{fmt}}"


def plot(runs: list[Run], path: Path) -> None:
    """CPU time and peak-RSS increase of ``attribute`` against prompt length (log-log), one
    line per fixture and tool/variant; skipped runs are left out. CPU time, not wall time: on
    a shared machine it moves far less, and with one thread it is the wall time of an idle one."""
    from circuitlab.plotting import import_pyplot

    plt = import_pyplot()
    if plt is None:
        raise SystemExit("--plot needs matplotlib: pip install 'circuitlab[plots]'")
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    colors = {"tiny_llama_5l": "tab:blue", "smollm2": "tab:red"}
    styles = {
        "float32": ("-", "o"),
        "bfloat16": ("--", "s"),
        "disk": (":", "^"),
        PEER: ("-.", "x"),
    }
    series: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        if not r.skipped:
            series.setdefault((r.fixture, r.variant or PEER), []).append(r)
    for (fixture, name), points in series.items():
        points.sort(key=lambda r: r.tokens)
        line, marker = styles.get(name, ("-", "."))
        label = f"{fixture}: {'circuitlab ' + name if name != PEER else PEER + ' 0.5.0'}"
        kw = dict(ls=line, marker=marker, color=colors.get(fixture, "k"), label=label)
        tokens = [r.tokens for r in points]
        axes[0].plot(tokens, [r.cpu_seconds for r in points], **kw)
        axes[1].plot(tokens, [r.peak_increment / 1e6 for r in points], **kw)
    ylabels = ("attribute CPU time (s)", "peak RSS increase during attribute (MB)")
    length_axes(axes, [r.tokens for r in runs], ylabels)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=4, frameon=False)
    fig.suptitle("Uncapped attribution graphs (every active feature kept), CPU", fontsize=10)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--fixture", default="tiny_llama_5l,smollm2", help="comma-separated")
    p.add_argument("--lengths", default=None, help="default: 32,96,256 (tiny) / 8,32,128 (smollm2)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--variants", default=",".join(VARIANTS), help="of " + ", ".join(VARIANTS))
    p.add_argument("--edge-dtype", default=None, help="one run of ours with this edge dtype")
    p.add_argument("--offload", default=None, help="one run of ours with this offload")
    p.add_argument("--post", action="store_true", help="also time prune + scores + page JSON")
    p.add_argument("--no-peer", action="store_true", help="circuitlab only")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads in both tools (default torch's; 1 on a shared machine: see README)",
    )
    p.add_argument("--memory-limit-gb", type=float, default=8.0)
    p.add_argument(
        "--l0",
        type=float,
        default=None,
        help="active features per layer and token for the first memory prediction (later "
        "ones use the count measured on the shorter prompt; default: the transcoders' k or "
        "estimate_memory's guess)",
    )
    p.add_argument("--json", type=Path, help="write every run here")
    p.add_argument("--plot", type=Path, help="PNG of time and peak memory against length")
    p.add_argument(
        "--replot", type=Path, nargs="+", help="table (and --plot) of --json files; run nothing"
    )
    a = p.parse_args()
    if a.replot is not None:  # the table (and the plot) of an earlier run, nothing run
        runs = [Run(**r) for path in a.replot for r in json.loads(path.read_text())]
        print("\n".join([HEAD, *report(runs, a.post), FOOT]))
        if a.plot is not None:
            plot(runs, a.plot)
        return
    if a.edge_dtype or a.offload:
        name = "+".join(x for x in (a.edge_dtype, a.offload and f"offload {a.offload}") if x)
        variants = {name: {"edge_dtype": a.edge_dtype, "offload": a.offload}}
    else:
        unknown = set(a.variants.split(",")) - set(VARIANTS)
        if unknown:
            p.error(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
        variants = {v: VARIANTS[v] for v in a.variants.split(",")}
    peer = not a.no_peer and find_peer_python() is not None
    if not a.no_peer and not peer:
        print(f"(no circuit-tracer runs: {peer_missing_reason()})")
    limit = int(a.memory_limit_gb * 2**30)
    print(HEAD)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="cl-scale-") as tmp:
        for name in a.fixture.split(","):
            fx = FIXTURES[name]()
            lengths = [int(x) for x in a.lengths.split(",")] if a.lengths else LENGTHS[name]
            l0 = a.l0
            for n in lengths:
                point = run_point(
                    fx,
                    n,
                    variants,
                    peer=peer,
                    limit=limit,
                    l0=l0,
                    tmp=Path(tmp),
                    batch_size=a.batch_size,
                    post=a.post,
                    threads=a.threads,
                )
                runs += point
                print("\n".join(rows_of(point, a.post)), flush=True)
                measured = [r.n_active for r in point if r.n_active]
                if measured:
                    l0 = measured[0] / (_n_layers(fx) * max(n - 1, 1))
                if a.json:
                    a.json.write_text(json.dumps([asdict(r) for r in runs], indent=1))
    print(FOOT)
    if a.plot is not None:
        plot(runs, a.plot)
        print(f"plot: {a.plot}")


if __name__ == "__main__":
    main()
