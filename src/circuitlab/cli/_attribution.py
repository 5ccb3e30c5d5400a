"""Flags shared by ``circuitlab attribute``, ``batch`` and ``estimate-memory``: the model and
transcoders to load and the attribution settings, with circuit-tracer's names and defaults."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import UsageError, check_at_least

DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "float64": "float64",
    "fp64": "float64",
}

# circuit-tracer's `--backend` values; circuitlab runs both on its one engine (docs/migrating.md).
BACKENDS = ("transformerlens", "nnsight")


def add_model_arguments(p: argparse.ArgumentParser, *, transcoders_required: bool = True) -> None:
    """``-t/--transcoder_set``, ``-m/--model``, ``--dtype``, the lazy-loading switches and
    ``--backend``, with circuit-tracer's spellings."""
    p.add_argument(
        "-t",
        "--transcoder_set",
        required=transcoders_required,
        help="transcoders: local dir, hub id, or shortcut (gemma, llama)",
    )
    p.add_argument(
        "-m",
        "--model",
        help="model: hub id, local dir, .gguf or 'smollm2' (packaged; default: the transcoders' "
        "model_name)",
    )
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--lazy-encoder", action="store_true", help="read encoder rows on demand")
    p.add_argument(
        "--lazy-decoder",
        dest="lazy_decoder",
        action="store_true",
        default=True,
        help="read active decoder rows on demand (the default; circuit-tracer's flag)",
    )
    p.add_argument(
        "--no-lazy-decoder",
        dest="lazy_decoder",
        action="store_false",
        help="load whole decoders instead of reading active rows on demand",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="transformerlens",
        help="circuit-tracer's backend choice, accepted for its command lines: circuitlab has "
        "one engine on the Hugging Face model, so both names give the same graph",
    )


def add_attribution_arguments(p: argparse.ArgumentParser) -> None:
    """circuit-tracer's attribution settings: logits, batch size, feature cap, offload."""
    p.add_argument("--max_n_logits", type=int, default=10)
    p.add_argument("--desired_logit_prob", type=float, default=0.95)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--max_feature_nodes", type=int, default=7500)
    p.add_argument("--offload", choices=["cpu", "disk"], default=None)
    p.add_argument(
        "--edge_dtype",
        choices=["float32", "bfloat16", "float16"],
        default=None,
        help="how the graph's edges are stored (default float32; half precision halves memory "
        "and files, see docs/attribution.md for the error)",
    )


def add_memory_check_argument(p: argparse.ArgumentParser) -> None:
    """``--no-memory-check``: run even when the predicted memory exceeds the available memory."""
    p.add_argument(
        "--no-memory-check",
        dest="check_memory",
        action="store_false",
        help="run even when the predicted memory exceeds the available memory (by default the "
        "attribution is refused before it starts, with settings that would fit)",
    )


def check_attribution_arguments(args: argparse.Namespace) -> None:
    """Range checks that argparse cannot do, before anything is loaded."""
    check_at_least(
        ("--max_n_logits", args.max_n_logits, 1),
        ("--batch_size", args.batch_size, 1),
        ("--max_feature_nodes", args.max_feature_nodes, 1),
    )
    if not 0.0 < args.desired_logit_prob <= 1.0:
        raise UsageError(f"--desired_logit_prob must be in (0, 1], got {args.desired_logit_prob}")


def attribution_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of ``circuitlab.attribute`` from the shared flags."""
    return {
        "max_n_logits": args.max_n_logits,
        "desired_logit_prob": args.desired_logit_prob,
        "batch_size": args.batch_size,
        "max_feature_nodes": args.max_feature_nodes,
        "offload": args.offload,
        "edge_dtype": args.edge_dtype,
        "check_memory": getattr(args, "check_memory", True),
    }


def check_transcoder_ref(ref: str) -> None:
    """A local-looking transcoder path must exist and hold a config (checked before loading)."""
    path = Path(ref).expanduser()
    looks_local = ref.startswith(("/", "./", "../", "~")) or path.exists()
    if not looks_local:
        return
    if not path.exists():
        raise UsageError(
            f"-t/--transcoder_set {ref}: no such file or folder; pass a transcoder directory "
            "(with config.yaml), a hub id or a shortcut (gemma, llama)"
        )
    if path.is_dir() and not (path / "config.yaml").is_file() and not (path / "cfg.json").is_file():
        raise UsageError(
            f"-t/--transcoder_set {ref}: no config.yaml (circuit-tracer layout) or cfg.json "
            "(SAELens) in that folder; point -t at the transcoder directory itself"
        )


def check_model_ref(ref: str | None) -> None:
    """A local-looking model path must exist (hub ids are checked when loading)."""
    if ref is None:
        return
    path = Path(ref).expanduser()
    if ref.startswith(("/", "./", "../", "~")) or path.suffix == ".gguf":
        if not path.exists():
            raise UsageError(
                f"-m/--model {ref}: no such file or folder; pass a model directory (with "
                "config.json), a .gguf file or a hub id"
            )
        if path.is_dir() and not (path / "config.json").is_file():
            raise UsageError(
                f"-m/--model {ref}: no config.json in that folder; point -m at a Hugging Face "
                "model directory"
            )


def load_spec(args: argparse.Namespace, *, device: str | None = None) -> Any:
    """A ``circuitlab.batch.LoadSpec`` for the model flags (paths checked first)."""
    from ..batch import LoadSpec

    check_transcoder_ref(args.transcoder_set)
    check_model_ref(args.model)
    return LoadSpec(
        transcoder_set=args.transcoder_set,
        model=args.model,
        dtype=DTYPES[args.dtype],
        lazy_encoder=args.lazy_encoder,
        lazy_decoder=args.lazy_decoder,
        device=device,
    )
