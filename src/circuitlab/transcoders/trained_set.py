"""A transcoder set trained once into the user's cache, with its held-out evaluation beside it.

``trained_transcoders_dir(recipe, model, texts)`` returns a cache folder (under
``models.packaged.cache_dir()``) holding

* ``transcoders/``: circuit-tracer's layout, trained by ``training.train_transcoders`` with
  ``recipe.config`` (``config.yaml``'s ``model_name`` is the ``model_name`` given);
* ``metrics.json``: the trainer's metrics, held-out figures over training included;
* ``eval.json``: ``evaluation.evaluate_windows`` on the held-out windows (the same JSON
  as ``circuitlab eval-transcoders --json``), plus ``build``: the CPU and wall seconds the
  training and the evaluation took, and the torch threads they had.

The first call trains and evaluates (with progress bars); later calls, and other processes,
find ``eval.json`` (written last) and return at once without reading the corpus
(``cache.build_once``: concurrent callers wait for one build). The held-out text is the
corpus's last documents (``evaluation.held_out_split`` with ``config.eval_tokens``), which the
trainer removes from training (``config.eval_every > 0``), so the evaluation never sees a
trained-on token.

Training runs in a work folder beside the entry (``.{entry}.training``), not in the
temporary folder ``build_once`` publishes: an interrupted build (Ctrl-C, SIGTERM: the trainer
checkpoints) resumes from its checkpoint when asked again, instead of starting over. The work
folder is removed once the entry is published. The folder name carries a hash of the recipe,
so another recipe trains another set.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..atomic import write_json_atomic
from ..cache import build_once
from ..models.packaged import cache_dir
from .evaluation import evaluate_windows, held_out_split
from .training import TrainConfig, train_transcoders
from .training.trainer import METRICS_NAME, TRANSCODERS_DIR

if TYPE_CHECKING:
    from ..replacement import ReplacementModel

EVAL_NAME = "eval.json"


@dataclass(frozen=True)
class TrainedSetRecipe:
    """How a cached set is trained and evaluated.

    ``config`` must hold out text (``eval_every > 0``); its ``eval_tokens`` held-out tokens are
    what ``eval.json`` measures, losses included (``2 · n_layers + 2`` model forwards per batch
    of ``eval_batch`` windows). ``score_prompts`` held-out windows cut to ``score_length``
    tokens are attributed (with ``max_feature_nodes``) for the replacement score.
    """

    name: str
    config: TrainConfig
    eval_batch: int = 8
    score_prompts: int = 2
    score_length: int = 16
    max_feature_nodes: int = 512

    def __post_init__(self) -> None:
        if self.config.eval_every <= 0:
            raise ValueError(
                "A trained set's config must hold out text for its evaluation: eval_every > 0."
            )

    @property
    def folder_name(self) -> str:
        """``{name}-{hash of the settings}``: a changed recipe gets a folder of its own.

        The hash covers the config's values that differ from ``TrainConfig``'s defaults, so
        a new ``TrainConfig`` field (with a default) keeps existing sets valid; a changed
        default does not retrain a set (its ``eval.json`` still says what it measures)."""
        settings = asdict(self)
        settings["config"] = {
            f.name: getattr(self.config, f.name)
            for f in fields(TrainConfig)
            if getattr(self.config, f.name) != f.default
        }
        blob = json.dumps(settings, sort_keys=True).encode()
        return f"{self.name}-{hashlib.sha256(blob).hexdigest()[:10]}"


def trained_transcoders_dir(
    recipe: TrainedSetRecipe,
    model: str | Path,
    texts: Callable[[], Iterable[str]],
    *,
    model_name: str,
    verbose: bool = True,
) -> Path:
    """The cache entry of ``recipe`` (module docstring), trained on ``texts()`` for the model
    at ``model`` (a local folder or any reference ``load_model`` takes) if it is not there yet.
    ``texts`` is called only when the set must be built."""
    target = cache_dir() / recipe.folder_name
    work = target.with_name(f".{target.name}.training")

    def build(folder: Path) -> None:
        if verbose:
            print(
                f"training transcoders {recipe.name} once (cached in {target}; "
                "Ctrl-C checkpoints, asking again resumes)",
                flush=True,
            )
        docs = list(texts())
        seconds: dict[str, float] = {}
        with _timed(seconds, "train"):
            train_transcoders(
                str(model), docs, work, recipe.config, model_name=model_name, verbose=verbose
            )
        with _timed(seconds, "eval"):
            record = _evaluate(recipe, model, model_name, work / TRANSCODERS_DIR, docs, verbose)
        record["build"] = {**seconds, "torch_threads": torch.get_num_threads()}
        shutil.copytree(work / TRANSCODERS_DIR, folder / TRANSCODERS_DIR)
        shutil.copy2(work / METRICS_NAME, folder / METRICS_NAME)
        write_json_atomic(folder / EVAL_NAME, record, indent=1)

    built = build_once(target, build, marker=EVAL_NAME)
    shutil.rmtree(work, ignore_errors=True)
    return built


def _evaluate(
    recipe: TrainedSetRecipe,
    model: str | Path,
    model_name: str,
    tc_dir: Path,
    docs: list[str],
    verbose: bool,
) -> dict[str, Any]:
    """``eval-transcoders``' JSON record for the set in ``tc_dir`` on the held-out windows."""
    from ..replacement import ReplacementModel

    cfg = recipe.config
    replacement = ReplacementModel.from_pretrained(str(model), str(tc_dir))
    assert replacement.tokenizer is not None  # the trainer needed it too
    _, windows = held_out_split(docs, replacement.tokenizer, cfg.context, cfg.eval_tokens)
    ev = evaluate_windows(
        replacement,
        windows,
        batch_size=recipe.eval_batch,
        score_prompts=recipe.score_prompts,
        score_length=recipe.score_length,
        max_feature_nodes=recipe.max_feature_nodes,
        verbose=verbose,
    )
    if verbose:
        print(ev.table(), flush=True)
    return {
        "transcoders": recipe.folder_name,
        "model": model_name,
        "corpus": cfg.corpus,
        "held_out": "last documents",
        "context": cfg.context,
        "recipe": asdict(recipe),
        **ev.to_dict(),
    }


@contextmanager
def _timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    """Adds ``{name}_cpu_s`` (this process's CPU time) and ``{name}_wall_s`` to ``seconds``."""
    cpu, wall = time.process_time(), time.perf_counter()
    yield
    seconds[f"{name}_cpu_s"] = round(time.process_time() - cpu, 3)
    seconds[f"{name}_wall_s"] = round(time.perf_counter() - wall, 3)


def read_eval(entry: str | Path) -> dict[str, Any]:
    """The ``eval.json`` record of a cache entry made by ``trained_transcoders_dir``."""
    return json.loads((Path(entry) / EVAL_NAME).read_text())


def quality_line(record: dict[str, Any]) -> str:
    """A few lines on a set's held-out quality from its ``eval.json`` record: mean and worst
    layer FVU, loss recovered (per layer, mean; every layer replaced at once), L0, what the
    figures mean and the build's time."""
    o = record["overall"]
    fvu = record["fvu"]
    worst = max(range(len(fvu)), key=fvu.__getitem__)
    per_layer, together = o.get("loss_recovered_mean"), o.get("loss_recovered_all")
    lines = [
        f"transcoders held-out ({record['n_tokens']:,} tokens): FVU mean {o['fvu_mean']:.3f}, "
        f"worst {fvu[worst]:.3f} (layer {worst}); loss recovered "
        f"{_num(per_layer)} per layer (mean), {_num(together)} with all "
        f"{len(fvu)} layers replaced; L0 {o['l0_mean']:.1f}",
        "  (FVU: the share of each MLP output's variance left unexplained, 0 exact, 1 no better "
        "than its mean; loss recovered: 1 = the model's next-token loss, 0 = the MLP zeroed)",
    ]
    build = record.get("build")
    if build:
        cpu = build.get("train_cpu_s", 0.0) + build.get("eval_cpu_s", 0.0)
        wall = build.get("train_wall_s", 0.0) + build.get("eval_wall_s", 0.0)
        lines.append(
            f"  (built once: {cpu / 60:.1f} min CPU, {wall / 60:.1f} min wall; "
            "details in eval.json beside them)"
        )
    return "\n".join(lines)


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def trained_replacement_model(
    recipe: TrainedSetRecipe,
    model: str | Path,
    texts: Callable[[], Iterable[str]],
    *,
    model_name: str,
    dtype: torch.dtype = torch.float32,
    verbose: bool = True,
) -> ReplacementModel:
    """The model at ``model`` with the cached set of ``recipe`` (built first if needed);
    ``verbose`` prints the set's held-out quality (``quality_line``)."""
    from ..replacement import ReplacementModel

    entry = trained_transcoders_dir(recipe, model, texts, model_name=model_name, verbose=verbose)
    if verbose:
        print(quality_line(read_eval(entry)), flush=True)
    return ReplacementModel.from_pretrained(str(model), str(entry / TRANSCODERS_DIR), dtype=dtype)
