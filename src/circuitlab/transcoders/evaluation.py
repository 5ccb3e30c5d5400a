"""Held-out evaluation of transcoders: reconstruction, sparsity, dead features, loss recovered.

``evaluate_transcoders(model, batches)`` runs token windows ``[batch, pos]`` (each starting
with BOS) through a ``ReplacementModel`` and measures, per layer ``l`` over every token except
the BOS (position 0, which the library never reconstructs):

* **FVU** (fraction of variance unexplained) ``Σ||y - ŷ||² / Σ||y - ȳ||²``, with ``y`` the
  value at the transcoders' output point, ``ŷ`` the transcoder's reconstruction from the
  clean inputs (for a CLT the sum of the decoders of every layer ``<= l``; skip included) and
  ``ȳ`` the mean of ``y`` over the evaluated tokens;
* **normalised MSE** ``Σ||y - ŷ||² / Σ||y||²``;
* **L0**, the mean number of active features per token; **dead** features, never active on
  the evaluated tokens, and their fraction;
* **next-token loss** (mean cross-entropy of the predictions made at positions ``1 ..
  pos - 2``: the prediction made from BOS is left out, as it never changes) of the clean
  model, with layer ``l``'s output replaced by its reconstruction (its input live, so for a
  CLT the layers below contribute from their clean inputs), with every layer replaced at once
  (each reconstruction from the inputs of that replaced run), and with the output point zeroed
  (layer ``l`` alone; all layers for the all-replaced reference). The BOS position keeps its
  clean output in every run. **Loss recovered** is ``(L_zero - L_replaced) / (L_zero -
  L_clean)``: 1 is as good as the model, 0 as bad as deleting the MLP;
* optionally the **replacement score** (``graph.scores.compute_graph_scores``) of the
  attribution graphs of a few prompts.

``held_out_split`` picks the evaluation windows from the *last* documents of a corpus, so they
do not overlap what ``circuitlab train`` streams from its start (``train --eval-every``
removes them from training).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from ..models.session import Plan
from .base import Transcoders

if TYPE_CHECKING:
    from ..replacement import ReplacementModel


# ---- reconstruction statistics -----------------------------------------------------------------
class ReconstructionStats:
    """Running FVU, normalised MSE, L0 and dead features per layer (float64 sums).

    ``add(layer, y, y_hat, acts)`` takes ``y, y_hat [n, d]`` and ``acts [n, d_transcoder]``
    of ``n`` tokens; FVU's mean ``ȳ`` is that of all tokens added to the layer.
    """

    def __init__(self, n_layers: int, d_transcoder: int):
        z = torch.zeros(n_layers, dtype=torch.float64)
        self.err, self.sq, self.active = z.clone(), z.clone(), z.clone()
        self.n = torch.zeros(n_layers, dtype=torch.long)
        self.sum: list[torch.Tensor | None] = [None] * n_layers
        self.fired = torch.zeros(n_layers, d_transcoder, dtype=torch.bool)

    @torch.no_grad()
    def add(self, layer: int, y: torch.Tensor, y_hat: torch.Tensor, acts: torch.Tensor) -> None:
        y, y_hat = y.double(), y_hat.double()
        self.err[layer] += (y - y_hat).pow(2).sum().item()
        self.sq[layer] += y.pow(2).sum().item()
        s = y.sum(0).cpu()
        prev = self.sum[layer]
        self.sum[layer] = s if prev is None else prev + s
        on = acts != 0
        self.active[layer] += on.sum().item()
        self.fired[layer] |= on.any(0).cpu()
        self.n[layer] += y.shape[0]

    def summary(self) -> dict[str, list[float]]:
        """``fvu``, ``nmse``, ``l0``, ``dead`` (counts) and ``dead_fraction``, per layer."""
        n = self.n.double().clamp(min=1)
        mean_sq = (
            torch.stack(
                [
                    s.pow(2).sum() if s is not None else torch.tensor(0.0, dtype=torch.float64)
                    for s in self.sum
                ]
            )
            / n
        )  # n * ||ȳ||²
        var = (self.sq - mean_sq).clamp(min=1e-300)
        dead = (~self.fired).sum(1)
        return {
            "fvu": (self.err / var).tolist(),
            "nmse": (self.err / self.sq.clamp(min=1e-300)).tolist(),
            "l0": (self.active / n).tolist(),
            "dead": dead.tolist(),
            "dead_fraction": (dead.double() / self.fired.shape[1]).tolist(),
        }


# ---- results -------------------------------------------------------------------------------------
@dataclass
class TranscoderEval:
    """Per-layer lists (index = layer) and whole-model figures; see the module docstring.

    The loss fields are None when losses were not computed; ``replacement_scores`` holds one
    score per attributed prompt.
    """

    n_tokens: int
    d_transcoder: int
    fvu: list[float]
    nmse: list[float]
    l0: list[float]
    dead: list[int]
    dead_fraction: list[float]
    loss_clean: float | None = None
    loss_replaced: list[float] | None = None
    loss_zero: list[float] | None = None
    loss_recovered: list[float] | None = None
    loss_all_replaced: float | None = None
    loss_all_zero: float | None = None
    loss_recovered_all: float | None = None
    replacement_scores: list[float] = field(default_factory=list)

    @property
    def n_layers(self) -> int:
        return len(self.fvu)

    def overall(self) -> dict[str, float | int | None]:
        """Means over layers (FVU, NMSE, L0, loss recovered) and totals (dead)."""
        n = self.n_layers
        mean = lambda v: sum(v) / n  # noqa: E731
        scores = self.replacement_scores
        return {
            "fvu_mean": mean(self.fvu),
            "fvu_max": max(self.fvu),
            "nmse_mean": mean(self.nmse),
            "l0_mean": mean(self.l0),
            "dead": sum(self.dead),
            "dead_fraction": sum(self.dead) / (n * self.d_transcoder),
            "loss_recovered_mean": mean(self.loss_recovered) if self.loss_recovered else None,
            "loss_recovered_all": self.loss_recovered_all,
            "replacement_score_mean": sum(scores) / len(scores) if scores else None,
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready values (NaN, e.g. a loss recovered of 0/0, becomes None)."""
        return _no_nan({**asdict(self), "overall": self.overall()})

    def table(self) -> str:
        """A plain-text table: one row per layer, then the whole model."""
        losses = self.loss_replaced is not None
        head = f"{'layer':>5}  {'fvu':>8}  {'nmse':>8}  {'l0':>7}  {'dead':>6}  {'dead%':>6}"
        if losses:
            head += f"  {'loss_repl':>9}  {'loss_zero':>9}  {'recovered':>9}"
        rows = [head]
        for i in range(self.n_layers):
            row = (
                f"{i:>5}  {self.fvu[i]:8.4f}  {self.nmse[i]:8.4f}  {self.l0[i]:7.1f}  "
                f"{self.dead[i]:>6}  {100 * self.dead_fraction[i]:5.1f}%"
            )
            if losses:
                assert self.loss_replaced and self.loss_zero and self.loss_recovered
                row += (
                    f"  {self.loss_replaced[i]:9.4f}  {self.loss_zero[i]:9.4f}  "
                    f"{self.loss_recovered[i]:9.4f}"
                )
            rows.append(row)
        o = self.overall()
        rows.append(
            f"{'all':>5}  {o['fvu_mean']:8.4f}  {o['nmse_mean']:8.4f}  {o['l0_mean']:7.1f}  "
            f"{o['dead']:>6}  {100 * float(o['dead_fraction'] or 0):5.1f}%"
            + (
                f"  {self.loss_all_replaced:9.4f}  {self.loss_all_zero:9.4f}  "
                f"{self.loss_recovered_all:9.4f}"
                if losses
                else ""
            )
        )
        lines = [*rows, f"(mean over layers; {self.n_tokens} tokens, BOS excluded)"]
        if losses:
            lines.append(
                f"clean loss {self.loss_clean:.4f}; 'all' row: every layer replaced / zeroed"
            )
        if self.replacement_scores:
            s = ", ".join(f"{v:.3f}" for v in self.replacement_scores)
            lines.append(f"replacement score of {len(self.replacement_scores)} prompts: {s}")
        return "\n".join(lines)


def _no_nan(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _no_nan(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_no_nan(x) for x in v]
    return v


# ---- dense reconstruction inside a forward ----------------------------------------------------
class _Reconstructor:
    """Encodes inputs ``[..., d]`` and decodes every layer's reconstruction densely."""

    def __init__(self, tc: Transcoders):
        self.tc = tc
        every = torch.arange(tc.d_transcoder)
        self.dec = [tc.decoder_rows(layer, every) for layer in range(tc.n_layers)]

    def encode(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        return self.tc.encode(layer, x)

    def decode(self, layer: int, acts: dict[int, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Layer ``layer``'s reconstruction from ``acts[src]`` of the layers writing to it."""
        out = self.tc.decoder_bias(layer).to(x.dtype).expand_as(x).clone()
        for src, a in acts.items():
            j = layer - src
            if 0 <= j < self.dec[src].shape[1]:
                out = out + a @ self.dec[src][:, j].to(device=a.device, dtype=a.dtype)
        sk = self.tc.skip(layer, x)
        return out if sk is None else out + sk

    def plan(self, replace: Iterable[int], zero: Iterable[int] = ()) -> Plan:
        """A plan writing reconstructions at ``replace`` and zeros at ``zero`` (BOS kept)."""
        replace, zero = frozenset(replace), frozenset(zero)
        last = max(replace, default=-1)
        acts: dict[int, torch.Tensor] = {}
        cross = self.tc.is_cross_layer

        def write(layer: int, read: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
            if layer in replace or (cross and layer <= last):
                acts[layer] = self.encode(layer, read)
            if layer in replace:
                new = self.decode(layer, acts, read).to(out.dtype)
            elif layer in zero:
                new = torch.zeros_like(out)
            else:
                return out
            new[:, 0] = out[:, 0]
            return new

        return Plan(mlp_out=write)


# ---- the evaluation --------------------------------------------------------------------------------
class _Loss:
    def __init__(self) -> None:
        self.total, self.n = 0.0, 0

    def add(self, logits: torch.Tensor, ids: torch.Tensor) -> None:
        """Predictions of positions ``1 .. pos-2`` (targets ``ids[:, 2:]``)."""
        pred = logits[:, 1:-1].double().log_softmax(-1)
        target = ids[:, 2:].to(pred.device)
        self.total -= pred.gather(-1, target[..., None]).sum().item()
        self.n += target.numel()

    @property
    def mean(self) -> float:
        return self.total / max(self.n, 1)


def _recovered(zero: float, replaced: float, clean: float) -> float:
    gap = zero - clean
    return (zero - replaced) / gap if gap != 0 else math.nan


@torch.no_grad()
def evaluate_transcoders(
    model: ReplacementModel,
    batches: Iterable[torch.Tensor],
    *,
    losses: bool = True,
    score_prompts: Sequence[torch.Tensor | str] = (),
    max_feature_nodes: int | None = 512,
    verbose: bool = False,
    progress_total: int | None = None,
) -> TranscoderEval:
    """Evaluates ``model.transcoders`` on ``batches`` of token ids ``[batch, pos]`` (BOS first).

    ``losses=False`` skips the ``2 * n_layers + 2`` extra forwards per batch that the loss
    figures need. ``score_prompts`` (token ids ``[pos]`` or text) are attributed with
    ``max_feature_nodes`` and scored with ``compute_graph_scores``.
    """
    tc = model.transcoders
    n_layers = tc.n_layers
    rec = _Reconstructor(tc)
    stats = ReconstructionStats(n_layers, tc.d_transcoder)
    clean, all_repl, all_zero = _Loss(), _Loss(), _Loss()
    repl = [_Loss() for _ in range(n_layers)]
    zero = [_Loss() for _ in range(n_layers)]
    n_tokens = 0
    bar = tqdm(batches, total=progress_total, desc="evaluating", disable=not verbose)
    for ids in bar:
        ids = ids.to(model.device)
        if ids.dim() != 2 or ids.shape[1] < 3:
            raise ValueError(
                f"Batches must be token ids [batch, pos >= 3]; got {tuple(ids.shape)}."
            )
        logits, cap = model.run(ids, Plan(record=True))
        assert cap is not None
        acts = {layer: rec.encode(layer, cap.reads[layer]) for layer in range(n_layers)}
        for layer in range(n_layers):
            y_hat = rec.decode(layer, acts, cap.reads[layer])
            d = y_hat.shape[-1]
            stats.add(
                layer,
                cap.writes[layer][:, 1:].reshape(-1, d),
                y_hat[:, 1:].reshape(-1, d),
                acts[layer][:, 1:].reshape(-1, tc.d_transcoder),
            )
        n_tokens += ids[:, 1:].numel()
        if not losses:
            continue
        del acts, cap
        clean.add(logits, ids)
        every = range(n_layers)
        runs = [(repl[i], rec.plan([i])) for i in every] + [
            (zero[i], rec.plan([], [i])) for i in every
        ]
        runs += [(all_repl, rec.plan(every)), (all_zero, rec.plan([], every))]
        for loss, plan in runs:
            loss.add(model.run(ids, plan)[0], ids)
    if n_tokens == 0:
        raise ValueError("No evaluation tokens: the corpus gave no windows.")
    ev = TranscoderEval(n_tokens=n_tokens, d_transcoder=tc.d_transcoder, **stats.summary())  # type: ignore[arg-type]
    if losses:
        ev.loss_clean = clean.mean
        ev.loss_replaced = [r.mean for r in repl]
        ev.loss_zero = [z.mean for z in zero]
        ev.loss_recovered = [
            _recovered(z.mean, r.mean, clean.mean) for r, z in zip(repl, zero, strict=True)
        ]
        ev.loss_all_replaced, ev.loss_all_zero = all_repl.mean, all_zero.mean
        ev.loss_recovered_all = _recovered(all_zero.mean, all_repl.mean, clean.mean)
    ev.replacement_scores = replacement_scores(model, score_prompts, max_feature_nodes)
    return ev


def evaluate_windows(
    model: ReplacementModel,
    windows: torch.Tensor,
    *,
    batch_size: int,
    score_prompts: int = 0,
    score_length: int = 16,
    losses: bool = True,
    max_feature_nodes: int | None = 512,
    verbose: bool = False,
) -> TranscoderEval:
    """``evaluate_transcoders`` on held-out windows ``[n, context]``, ``batch_size`` at a time.

    The first ``score_prompts`` windows, cut to their first ``score_length`` tokens, are also
    attributed and scored (``TranscoderEval.replacement_scores``). This is the evaluation that
    ``circuitlab eval-transcoders`` prints and that ``trained_set`` writes to ``eval.json``.
    """
    from ..features.corpus import batched_windows

    prompts = [w[:score_length] for w in windows[:score_prompts]]
    batches = list(batched_windows(windows, batch_size))
    return evaluate_transcoders(
        model,
        batches,
        losses=losses,
        score_prompts=prompts,
        max_feature_nodes=max_feature_nodes,
        verbose=verbose,
        progress_total=len(batches),
    )


def replacement_scores(
    model: ReplacementModel, prompts: Sequence[torch.Tensor | str], max_feature_nodes: int | None
) -> list[float]:
    """The replacement score of each prompt's attribution graph."""
    if not prompts:
        return []
    from ..attribution import attribute
    from ..graph.scores import compute_graph_scores

    out = []
    for prompt in prompts:
        graph = attribute(model, prompt, max_feature_nodes=max_feature_nodes)
        out.append(float(compute_graph_scores(graph).replacement))
    return out


# ---- held-out windows ---------------------------------------------------------------------------------
def held_out_split(
    texts: Iterable[str], tokenizer: PreTrainedTokenizerBase, context: int, n_tokens: int
) -> tuple[list[str], torch.Tensor]:
    """``(training documents, held-out windows [n, context])`` of a corpus.

    The held-out windows (``ceil(n_tokens / (context - 1))`` of them, fewer if the corpus is
    short) are built, as ``features.corpus.token_windows`` builds them, from the fewest *last*
    documents that hold enough tokens; the documents before those are returned for training.
    """
    from ..features.corpus import token_windows

    if context < 3:
        raise ValueError(f"Evaluation windows need context >= 3; got {context}.")
    docs = list(texts)
    n_windows = max(1, math.ceil(n_tokens / (context - 1)))
    need = n_windows * (context - 1)
    eos = 1 if isinstance(tokenizer.eos_token_id, int) else 0
    start, have = len(docs), 0
    while start > 0 and have < need:
        start -= 1
        have += len(tokenizer(docs[start], add_special_tokens=False).input_ids) + eos
    windows = list(itertools.islice(token_windows(docs[start:], tokenizer, context), n_windows))
    if not windows:
        raise ValueError(
            f"The corpus has fewer than {context - 1} tokens: too short for one held-out window "
            "of --context tokens."
        )
    return docs[:start], torch.stack(windows)
