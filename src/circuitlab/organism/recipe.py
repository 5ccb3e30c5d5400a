"""The organism's recipe: train the model, its transcoders and their dashboards from scratch.

    python -m circuitlab.organism.recipe --out DIR      # the shipped configuration
    python -m circuitlab.organism.recipe --out DIR --quick   # a few steps (smoke test)

Steps (all deterministic given the seeds; times vary with the machine's load):

1. ``lm.train_lm``: a 4-layer Llama (d_model 64) on ``corpus.texts(seed)``;
2. ``circuitlab.transcoders.training.train_transcoders``: per-layer JumpReLU transcoders on
   ``corpus.texts(seed + 1)`` (circuitlab's own trainer, circuit-tracer's layout);
3. ``circuitlab.features.build.build_dashboards`` on ``corpus.texts(seed + 2)``;
4. ``OUT/organism.json``: the configuration, timings, the model's accuracy on the world's
   questions (``evaluate.accuracy``) and the state features (``ground_truth.state_features``).

``OUT`` then holds ``model/`` (safetensors + tokenizer), ``transcoders/``, ``features/`` and
``organism.json``: the layout ``load.load_organism`` reads.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..features.build import BuildSettings, build_dashboards
from ..transcoders.training import TrainConfig, train_transcoders
from .corpus import texts
from .layout import INFO_FILE, MODEL_DIR, TRANSCODERS_DIR
from .lm import LMConfig, train_lm
from .tokenizer import build_tokenizer


@dataclass(frozen=True)
class Recipe:
    """The whole configuration of the organism."""

    lm: LMConfig = field(default_factory=LMConfig)
    transcoders: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            kind="plt",
            activation="jump_relu",
            d_transcoder=128,
            n_tokens=30_000,
            batch_size=128,
            lr=3e-3,
            sparsity=0.01,
            context=32,
            buffer_tokens=8192,
            corpus="organism",
        )
    )
    dashboards: BuildSettings = field(
        default_factory=lambda: BuildSettings(corpus="organism", n_tokens=20_000, context=32)
    )
    seed: int = 0


def quick(recipe: Recipe) -> Recipe:
    """A few-step version of ``recipe`` (for smoke tests: the result answers nothing)."""
    return replace(
        recipe,
        lm=replace(recipe.lm, steps=3, warmup=1, batch_size=4),
        transcoders=replace(recipe.transcoders, n_tokens=512, batch_size=64, buffer_tokens=512),
        dashboards=replace(recipe.dashboards, n_tokens=200),
    )


def build(out: str | Path, recipe: Recipe | None = None, *, verbose: bool = True) -> Path:
    """Runs the recipe into ``out`` (replacing what the recipe writes there); returns ``out``."""
    from ..replacement import ReplacementModel
    from .evaluate import accuracy
    from .ground_truth import state_features

    recipe = recipe or Recipe()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    torch.manual_seed(recipe.seed)
    t0 = time.perf_counter()
    tok = build_tokenizer()
    lm_cfg = replace(recipe.lm, seed=recipe.seed)
    model, lm_info = train_lm(lm_cfg, tok, verbose=verbose)
    model_dir = out / MODEL_DIR
    shutil.rmtree(model_dir, ignore_errors=True)
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    seconds["model"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    tc_work = out / ".transcoders-training"
    train_transcoders(
        str(model_dir),
        texts(recipe.seed + 1),
        tc_work,
        replace(recipe.transcoders, seed=recipe.seed),
        model_name=f"../{MODEL_DIR}",
        restart=True,
        verbose=verbose,
    )
    tc_metrics = json.loads((tc_work / "metrics.json").read_text())
    shutil.rmtree(out / TRANSCODERS_DIR, ignore_errors=True)
    (tc_work / "transcoders").rename(out / TRANSCODERS_DIR)
    shutil.rmtree(tc_work)
    seconds["transcoders"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    rm = ReplacementModel.from_pretrained(str(model_dir), str(out / TRANSCODERS_DIR))
    build_dashboards(
        rm,
        texts(recipe.seed + 2),
        out,
        recipe.dashboards,
        transcoder_id="organism",
        overwrite=True,
        restart=True,
        verbose=verbose,
    )
    seconds["dashboards"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    info: dict[str, Any] = {
        "recipe": asdict(recipe),
        "lm": lm_info,
        "transcoder_metrics": tc_metrics.get("final", {}),
        "accuracy": accuracy(rm.model, tok),
        "state_features": [asdict(f) for f in state_features(rm)],
    }
    seconds["evaluation"] = time.perf_counter() - t3
    seconds["total"] = time.perf_counter() - t0
    info["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    (out / INFO_FILE).write_text(json.dumps(info, indent=1))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Train the circuitlab model organism from scratch.")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--quick", action="store_true", help="a few steps only (smoke test)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    recipe = Recipe(seed=args.seed)
    if args.quick:
        recipe = quick(recipe)
    out = build(args.out, recipe, verbose=not args.quiet)
    info = json.loads((out / INFO_FILE).read_text())
    print(json.dumps({"seconds": info["seconds"], "accuracy": info["accuracy"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
