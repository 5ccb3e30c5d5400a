"""``circuitlab batch``: trace every prompt of a JSONL file, in-process or on Ray, resumably."""

from __future__ import annotations

import argparse

from ._attribution import (
    add_attribution_arguments,
    add_memory_check_argument,
    add_model_arguments,
    attribution_kwargs,
    check_attribution_arguments,
    load_spec,
)
from ._output import check_output_dir

NAME = "batch"
HELP = "trace many prompts (JSONL) into graphs plus a parquet summary; resumable; Ray optional"
DESCRIPTION = """\
Reads one JSON object per line: {"prompt": ..., "id"?: ..., "target"?: " tok" | [...],
"logit_diff"?: [" pos", " neg"] | [[...], ...]} and writes OUT/graphs/{id}.safetensors (ids
default to line{N}), OUT/errors/{id}.json for prompts that failed, and OUT/summary.parquet
(one row per prompt: id, prompt, status, error, n_tokens, top_token, probability, n_features,
replacement and completeness scores, seconds, ...).

Rerunning the same command resumes: prompts whose graph is complete and was traced with the
same prompt, targets and settings are skipped; failed and missing ones are traced. Nothing is
written half-way (temporary file + rename), so a killed run loses at most the prompts in flight.

With --ray the prompts run as Ray tasks (one per prompt, --num-cpus/--num-gpus each); every
worker loads the model once. Needs `pip install 'circuitlab[batch]'`. See docs/cli.md."""
EXAMPLES = """examples:
  circuitlab batch prompts.jsonl --out runs/capitals -t ./my-transcoders -m ./my-model
  circuitlab batch prompts.jsonl --out runs/capitals -t ./tc --max_feature_nodes 2048 --ray
  circuitlab batch prompts.jsonl --out runs/capitals -t ./tc --ray ray://head:10001 --num-gpus 1
  python -c "import pyarrow.parquet as pq; print(pq.read_table('runs/capitals/summary.parquet'))"
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompts", help='JSONL file, one {"prompt": ...} object per line')
    p.add_argument(
        "-o", "--out", required=True, help="output folder (created; resumed if it exists)"
    )
    add_model_arguments(p)
    add_attribution_arguments(p)
    add_memory_check_argument(p)
    r = p.add_argument_group("Ray (pip install 'circuitlab[batch]')")
    r.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run on Ray: no ADDRESS starts (or joins, via RAY_ADDRESS) a local instance; "
        "'auto' or ray://host:port joins a cluster",
    )
    r.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per prompt task (Ray)")
    r.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per prompt task (Ray)")
    r.add_argument("--max-in-flight", type=int, default=None, help="tasks queued at once (Ray)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args: argparse.Namespace) -> int:
    from ..batch import RayOptions, TraceSettings, read_prompts, run_batch
    from . import UsageError

    check_attribution_arguments(args)
    if args.ray is None and (args.num_gpus or args.max_in_flight or args.num_cpus != 1.0):
        raise UsageError("--num-cpus/--num-gpus/--max-in-flight apply to Ray runs: add --ray")
    if args.num_cpus <= 0 or args.num_gpus < 0:
        raise UsageError("--num-cpus must be > 0 and --num-gpus >= 0")
    check_output_dir(args.out, "-o/--out")
    records = read_prompts(args.prompts)
    _check_pyarrow()
    ray = None
    if args.ray is not None:
        _check_ray()
        ray = RayOptions(
            address=args.ray or None,
            num_cpus=args.num_cpus,
            num_gpus=args.num_gpus,
            max_in_flight=args.max_in_flight,
        )
    result = run_batch(
        records,
        args.out,
        load_spec(args),
        TraceSettings(**attribution_kwargs(args)),
        ray=ray,
        verbose=not args.quiet,
    )
    print(
        f"{result.total} prompts: {result.traced} traced, {result.skipped} already done, "
        f"{result.failed} failed, {result.pending} pending"
    )
    print(f"summary: {result.summary}")
    if result.failed:
        print(f"failed prompts: see the error column, or {args.out}/errors/; rerun to retry them")
    return 1 if result.failed else 0


def _check_pyarrow() -> None:
    from . import UsageError

    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise UsageError(
            "the summary table needs pyarrow: pip install 'circuitlab[batch]'"
        ) from None


def _check_ray() -> None:
    from . import UsageError

    try:
        import ray  # noqa: F401
    except ImportError:
        raise UsageError("--ray needs Ray: pip install 'circuitlab[batch]'") from None
