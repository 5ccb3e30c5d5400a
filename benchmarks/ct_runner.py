"""Run circuit-tracer 0.5.0 attribution on a local model, offline, and save the result.

This script runs with the *peer* venv's interpreter (see benchmarks/README.md), never with
circuitlab's: it must not import circuitlab. ``benchmarks/peer.py`` drives it in a subprocess.

    /work/ct-venv/bin/python benchmarks/ct_runner.py \
        --model /path/to/hf_model_dir --transcoders /abs/path/to/transcoder_dir \
        --prompt-ids '[0, 5, 9, 12]' --out /tmp/peer.safetensors

Output: one safetensors file with the graph tensors (``adjacency_matrix``, ``active_features``,
``selected_features``, ``activation_values``, ``logit_token_ids``, ``logit_probabilities``,
``input_tokens``) and its metadata entry ``"ct_runner"``: a JSON object with timings (model
load, attribution phases and total, all ``time.perf_counter``), memory (bytes) and versions.

Compatibility shims (each is recorded in the metadata's ``"shims"`` list when used):

* A model directory saved by transformers >= 5 (``rope_parameters`` instead of ``rope_theta``,
  ``tokenizer_class: TokenizersBackend``) is presented to the peer's transformers 4.57 through a
  staging directory of symlinks with patched ``config.json`` / ``tokenizer_config.json``.
* ``activation: topk`` + ``k`` in the transcoders' ``config.yaml`` is ignored by circuit-tracer
  0.5.0's local loader (JumpReLU if a threshold tensor exists, else ReLU); the runner swaps in
  circuit-tracer's own ``TopK(k)`` after loading.
* The TransformerLens backend refuses names that are not official model names; the runner lets
  an existing local directory through ``get_official_model_name``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Offline before anything imports huggingface_hub / transformers.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import torch  # noqa: E402

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

FORMAT_VERSION = 1


def current_rss_bytes() -> int:
    """Resident set size right now (Linux /proc; falls back to the peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return peak_rss_bytes()


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux ``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def hwm_bytes() -> int:
    """Peak RSS since the last ``reset_peak_rss`` (VmHWM; falls back to ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return peak_rss_bytes()


def touch_weights(model: Any) -> None:
    """Read every parameter once so lazily paged-in weights are resident before measuring."""
    try:
        params = list(model.parameters())
    except Exception:  # noqa: BLE001 - a backend without .parameters(): nothing to touch
        return
    with torch.no_grad():
        for p in params:
            p.sum()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


# --------------------------------------------------------------------------- model dir shim


def peer_compatible_model_dir(model_dir: Path, shims: list[str]) -> tuple[Path, Path | None]:
    """Return a directory that the peer's transformers can load, and a temp dir to delete.

    transformers 5 writes ``rope_parameters`` (no ``rope_theta``) and a ``TokenizersBackend``
    tokenizer class; transformers 4.57 would silently use the default rope base and fail on the
    tokenizer class. When needed, a staging dir of symlinks with patched JSON is built.
    """
    import transformers

    config = json.loads((model_dir / "config.json").read_text())
    new_config = dict(config)
    rope = config.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" not in config and "rope_theta" in rope:
        new_config["rope_theta"] = rope["rope_theta"]
        if rope.get("rope_type", "default") != "default":
            new_config["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
        shims.append("config.json: rope_parameters -> rope_theta/rope_scaling")
    text_config = config.get("text_config")
    if isinstance(text_config, dict):
        trope = text_config.get("rope_parameters")
        if isinstance(trope, dict) and "rope_theta" not in text_config and "rope_theta" in trope:
            new_config["text_config"] = {**text_config, "rope_theta": trope["rope_theta"]}
            shims.append("config.json: text_config.rope_parameters -> rope_theta")

    tok_cfg_path = model_dir / "tokenizer_config.json"
    tok_cfg: dict[str, Any] | None = None
    if tok_cfg_path.exists():
        loaded: dict[str, Any] = json.loads(tok_cfg_path.read_text())
        cls_name = loaded.get("tokenizer_class")
        if (
            isinstance(cls_name, str)
            and getattr(transformers, cls_name, None) is None
            and (model_dir / "tokenizer.json").exists()
        ):
            tok_cfg = {**loaded, "tokenizer_class": "PreTrainedTokenizerFast"}
            shims.append(
                f"tokenizer_config.json: tokenizer_class {cls_name} -> PreTrainedTokenizerFast"
            )

    if new_config == config and tok_cfg is None:
        return model_dir, None

    stage = Path(tempfile.mkdtemp(prefix="ct_runner_model_"))
    for entry in model_dir.iterdir():
        (stage / entry.name).symlink_to(entry.resolve())
    (stage / "config.json").unlink()
    (stage / "config.json").write_text(json.dumps(new_config, indent=2))
    if tok_cfg is not None:
        (stage / "tokenizer_config.json").unlink()
        (stage / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))
    return stage, stage


# --------------------------------------------------------------------------- loading


def load_transcoders(tc_dir: Path, dtype: torch.dtype, lazy_decoder: bool, shims: list[str]) -> Any:
    import yaml
    from circuit_tracer.transcoder.activation_functions import TopK
    from circuit_tracer.utils.hf_utils import load_transcoder_from_hub

    # circuit-tracer treats an *absolute* directory holding config.yaml as a cache hit.
    loaded: tuple[Any, dict[str, Any]] = load_transcoder_from_hub(  # type: ignore[assignment]
        str(tc_dir.resolve()),
        device=torch.device("cpu"),
        dtype=dtype,
        lazy_encoder=False,
        lazy_decoder=lazy_decoder,
    )
    transcoders, config = loaded
    raw = yaml.safe_load((tc_dir / "config.yaml").read_text()) or {}
    if str(raw.get("activation", "")).lower() == "topk":
        k = int(raw["k"])
        if config.get("model_kind") != "transcoder_set":
            raise SystemExit("ct_runner: activation: topk is only supported for transcoder_set")
        for tc in transcoders.transcoders:
            tc.activation_function = TopK(k)
        shims.append(f"transcoders: activation_function -> TopK({k})")
    return transcoders


def load_model(
    model_dir: Path, transcoders: Any, backend: str, dtype: torch.dtype, shims: list[str]
) -> Any:
    from circuit_tracer import ReplacementModel

    if backend == "transformerlens":
        import transformer_lens.loading_from_pretrained as tl_loading

        original = tl_loading.get_official_model_name

        def official_or_local(name: str) -> str:
            if (Path(name) / "config.json").exists():
                return name
            return original(name)

        tl_loading.get_official_model_name = official_or_local  # type: ignore[assignment]
        shims.append("transformer_lens: get_official_model_name accepts local dirs")

        # TransformerLens' generic LlamaForCausalLM branch never reads rope_theta, so a local
        # Llama with a non-default base (SmolLM2: 100000) would silently run with 10000.
        original_convert = tl_loading.convert_hf_model_config
        hf_cfg = json.loads((model_dir / "config.json").read_text())
        theta = hf_cfg.get("rope_theta") or (hf_cfg.get("rope_parameters") or {}).get("rope_theta")

        def convert_with_rope(name: str, **kwargs: Any) -> dict[str, Any]:
            cfg_dict = original_convert(name, **kwargs)
            if (
                theta is not None
                and cfg_dict.get("positional_embedding_type") == "rotary"
                and "rotary_base" not in cfg_dict
            ):
                cfg_dict["rotary_base"] = float(theta)
                note = f"transformer_lens: rotary_base = rope_theta ({theta})"
                if note not in shims:
                    shims.append(note)
            return cfg_dict

        tl_loading.convert_hf_model_config = convert_with_rope  # type: ignore[assignment]
        return ReplacementModel.from_pretrained_and_transcoders(
            model_name=str(model_dir),
            transcoders=transcoders,
            backend="transformerlens",
            device=torch.device("cpu"),
            dtype=dtype,
        )
    return ReplacementModel.from_pretrained_and_transcoders(
        model_name=str(model_dir),
        transcoders=transcoders,
        backend="nnsight",
        device=torch.device("cpu"),
        dtype=dtype,
    )


# --------------------------------------------------------------------------- phase timing


class PhaseTimer(logging.Handler):
    """Timestamps circuit-tracer's own 'Phase N:' log lines with perf_counter."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.marks: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.marks.append((time.perf_counter(), record.getMessage()))

    def phases(self, t_start: float, t_end: float) -> dict[str, float]:
        names = {
            "Phase 0": "precompute",
            "Phase 1": "forward",
            "Phase 2": "targets",
            "Phase 3": "logit_rows",
            "Phase 4": "feature_rows",
        }
        starts: list[tuple[str, float]] = []
        for t, msg in self.marks:
            for prefix, name in names.items():
                if msg.startswith(prefix + ":"):
                    starts.append((name, t))
        out: dict[str, float] = {}
        for i, (name, t) in enumerate(starts):
            nxt = starts[i + 1][1] if i + 1 < len(starts) else None
            if nxt is None:
                done = [
                    tt for tt, msg in self.marks if msg.startswith("Feature attributions completed")
                ]
                nxt = done[-1] if done else t_end
            out[name] = nxt - t
        done = [tt for tt, msg in self.marks if msg.startswith("Feature attributions completed")]
        if done:
            out["packaging"] = t_end - done[-1]
        if starts:
            out["setup_before_phase0"] = starts[0][1] - t_start
        return out


def run_attribution(
    model: Any, prompt_ids: list[int], args: argparse.Namespace
) -> tuple[Any, dict[str, float], float]:
    from circuit_tracer import attribute

    logger = logging.getLogger("attribution")
    timer = PhaseTimer()
    logger.addHandler(timer)
    logger.setLevel(logging.INFO)
    # attribute() resets the level to WARNING unless it adds its own stderr handler; keep INFO.
    logger.setLevel = lambda level: None  # type: ignore[method-assign]
    try:
        t0 = time.perf_counter()
        graph = attribute(
            torch.tensor(prompt_ids, dtype=torch.long),
            model,
            max_n_logits=args.max_n_logits,
            desired_logit_prob=args.desired_logit_prob,
            batch_size=args.batch_size,
            max_feature_nodes=args.max_feature_nodes,
            offload=args.offload,
            verbose=False,
            update_interval=args.update_interval,
        )
        t1 = time.perf_counter()
    finally:
        del logger.setLevel  # type: ignore[attr-defined]
        logger.removeHandler(timer)
    return graph, timer.phases(t0, t1), t1 - t0


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--model", required=True, type=Path, help="local Hugging Face model dir")
    p.add_argument(
        "--transcoders",
        required=True,
        type=Path,
        help="dir with circuit-tracer config.yaml + layer files",
    )
    p.add_argument(
        "--prompt-ids", required=True, help="JSON list of token ids, BOS included (or @file.json)"
    )
    p.add_argument("--out", required=True, type=Path, help="output .safetensors")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-feature-nodes", type=int, default=None)
    p.add_argument("--max-n-logits", type=int, default=10)
    p.add_argument("--desired-logit-prob", type=float, default=0.95)
    p.add_argument("--update-interval", type=int, default=4)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--backend", choices=["nnsight", "transformerlens"], default="nnsight")
    p.add_argument("--offload", choices=["cpu", "disk"], default=None)
    p.add_argument(
        "--lazy-decoder",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="circuit-tracer's default (True): read decoder rows from disk",
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--pt-out", type=Path, default=None, help="also save circuit-tracer's .pt")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raw_ids = args.prompt_ids
    if raw_ids.startswith("@"):
        raw_ids = Path(raw_ids[1:]).read_text()
    prompt_ids = [int(t) for t in json.loads(raw_ids)]
    if not prompt_ids:
        raise SystemExit("ct_runner: --prompt-ids is empty")
    if not args.transcoders.is_absolute():
        args.transcoders = args.transcoders.resolve()
    if not (args.transcoders / "config.yaml").exists():
        raise SystemExit(f"ct_runner: no config.yaml in {args.transcoders}")
    if not (args.model / "config.json").exists():
        raise SystemExit(f"ct_runner: no config.json in {args.model}")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dtype = DTYPES[args.dtype]
    shims: list[str] = []

    rss_start = current_rss_bytes()
    model_dir, stage = peer_compatible_model_dir(args.model.resolve(), shims)
    try:
        t0 = time.perf_counter()
        transcoders = load_transcoders(args.transcoders, dtype, args.lazy_decoder, shims)
        t1 = time.perf_counter()
        model = load_model(model_dir, transcoders, args.backend, dtype, shims)
        t2 = time.perf_counter()

        tokenizer = model.tokenizer
        special = set(int(i) for i in tokenizer.all_special_ids)
        touch_weights(model)
        touch_weights(model.transcoders)  # eager encoders may still be memory-mapped pages
        gc.collect()
        rss_before = current_rss_bytes()
        peak_before = peak_rss_bytes()
        hwm_reset = reset_peak_rss()
        cpu0 = time.process_time()
        graph, phases, attr_s = run_attribution(model, prompt_ids, args)
        cpu_s = time.process_time() - cpu0
        peak_end = hwm_bytes() if hwm_reset else peak_rss_bytes()
        rss_after = current_rss_bytes()
    finally:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)

    if args.pt_out is not None:
        graph.to_pt(str(args.pt_out))
    input_tokens = [int(t) for t in graph.input_tokens.tolist()]
    logit_ids = [int(t.vocab_idx) for t in graph.logit_targets]
    cfg = graph.cfg
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "tool": "circuit-tracer",
        "versions": _versions(),
        "backend": args.backend,
        "dtype": args.dtype,
        "settings": {
            "batch_size": args.batch_size,
            "max_feature_nodes": args.max_feature_nodes,
            "max_n_logits": args.max_n_logits,
            "desired_logit_prob": args.desired_logit_prob,
            "update_interval": args.update_interval,
            "offload": args.offload,
            "lazy_decoder": args.lazy_decoder,
            "threads": torch.get_num_threads(),
        },
        "model_dir": str(args.model),
        "transcoder_dir": str(args.transcoders),
        "shims": shims,
        "prompt_ids": prompt_ids,
        "bos_prepended_by_peer": input_tokens != prompt_ids,
        "first_token_is_special": prompt_ids[0] in special,
        "n_layers": int(cfg.n_layers),
        "n_pos": len(input_tokens),
        "n_active": int(graph.active_features.shape[0]),
        "n_selected": int(graph.selected_features.shape[0]),
        "n_logits": len(logit_ids),
        "logit_token_strs": [t.token_str for t in graph.logit_targets],
        "vocab_size": int(graph.vocab_size),
        "scan": graph.scan if isinstance(graph.scan, str | None) else list(graph.scan),
        "timings_s": {
            "transcoder_load": t1 - t0,
            "model_load": t2 - t1,
            "load_total": t2 - t0,
            "attribute_total": attr_s,
            "attribute_cpu": cpu_s,
            "phases": phases,
        },
        "memory_bytes": {
            "rss_at_start": rss_start,
            "rss_before_attribute": rss_before,
            "peak_before_attribute": peak_before,
            "rss_after_attribute": rss_after,
            "peak_end": peak_end,
            "attribute_peak_increment": max(0, peak_end - rss_before),
            "attribute_raised_peak": peak_end > peak_before,
            "peak_reset_before_attribute": hwm_reset,
        },
    }
    tensors = {
        "adjacency_matrix": graph.adjacency_matrix.detach().to(torch.float32).contiguous(),
        "active_features": graph.active_features.detach().to(torch.int64).contiguous(),
        "selected_features": graph.selected_features.detach().to(torch.int64).contiguous(),
        "activation_values": graph.activation_values.detach().to(torch.float32).contiguous(),
        "logit_token_ids": torch.tensor(logit_ids, dtype=torch.int64),
        "logit_probabilities": graph.logit_probabilities.detach().to(torch.float32).contiguous(),
        "input_tokens": torch.tensor(input_tokens, dtype=torch.int64),
    }
    from safetensors.torch import save_file

    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"ct_runner": json.dumps(meta)})
    os.replace(tmp, args.out)
    print(json.dumps({"out": str(args.out), "timings_s": meta["timings_s"]}))
    return 0


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {"python": sys.version.split()[0]}
    for name in ("circuit-tracer", "torch", "transformers", "nnsight", "transformer-lens"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


if __name__ == "__main__":
    sys.exit(main())
