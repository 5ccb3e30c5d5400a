"""``load_transcoder_from_hub``: circuitlab's transcoder loader with circuit-tracer's return.

Returns ``(transcoders, config)``: the loaded set or CLT and its ``config.yaml`` as a dict,
with ``scan`` set to the transcoders' identifier (as circuit-tracer sets it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from circuitlab.transcoders.base import Transcoders
from circuitlab.transcoders.loading import load_transcoders


def load_transcoder_from_hub(
    hf_ref: str,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    lazy_encoder: bool = False,
    lazy_decoder: bool = True,
    cache_dir: str | None = None,
    use_cache: bool = True,
) -> tuple[Transcoders, dict[str, Any]]:
    """Loads transcoders from a hub reference, shortcut or local folder (``use_cache`` is
    accepted; circuitlab reads the Hugging Face cache directly)."""
    del use_cache
    transcoders = load_transcoders(
        hf_ref,
        dtype=dtype,
        device=device or "cpu",
        lazy_encoder=lazy_encoder,
        lazy_decoder=lazy_decoder,
        cache_dir=cache_dir,
    )
    config: dict[str, Any] = {}
    local = Path(hf_ref).expanduser() / "config.yaml"
    if local.is_file():
        config = yaml.safe_load(local.read_text()) or {}
    config["scan"] = getattr(transcoders, "name", None) or hf_ref
    return transcoders, config
