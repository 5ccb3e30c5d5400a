"""Mean ablation: reference means of every feature and error node, and ablations that use them.

Zero-ablating a node pushes the model off its distribution (a feature that is never 0 on real
text becomes 0). Mean ablation (as in ACDC, IOI, Marks et al.) replaces the node by its mean over
a reference distribution instead:

* feature ``(layer, pos, f)`` -> ``features[layer, f]``, its mean activation;
* error node ``(layer, pos)`` -> ``errors[layer]``, the mean error vector (MLP output minus the
  transcoder reconstruction from every feature, ``decode_sparse``, bias and skip included).

``ablation_means(model, prompts)`` averages over every position of the reference prompts (BOS
skipped by default, as the graph skips it); ``AblationMeans.save`` / ``load`` keep them as
safetensors. ``mean_ablations`` turns nodes into the interventions that set them to their means.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..atomic import atomic_path
from ..features.corpus import batched
from ..models.session import Plan
from ..models.tokens import Prompt
from ..replacement import ReplacementModel
from .nodes import NodeRef
from .spec import Intervention

KIND = "circuitlab.ablation_means"


@dataclass(frozen=True)
class AblationMeans:
    """Reference means: ``features [n_layers, d_transcoder]`` (mean activation of each feature),
    ``errors [n_layers, d_model]`` (mean error vector), over ``n_positions`` token positions of
    ``n_prompts`` prompts (BOS positions left out when ``skip_bos``)."""

    features: torch.Tensor
    errors: torch.Tensor
    n_prompts: int
    n_positions: int
    skip_bos: bool = True

    @property
    def n_layers(self) -> int:
        return int(self.features.shape[0])

    def check(self, model: ReplacementModel) -> None:
        """Raises ``ValueError`` unless the shapes fit ``model``'s transcoders."""
        tc = model.transcoders
        want = ((tc.n_layers, tc.d_transcoder), (tc.n_layers, tc.d_model))
        got = (tuple(self.features.shape), tuple(self.errors.shape))
        if got != want:
            raise ValueError(
                f"the ablation means have features {list(got[0])} and errors {list(got[1])} but "
                f"this model needs {list(want[0])} and {list(want[1])}: compute them with this "
                "model and transcoders (ablation_means(model, prompts))"
            )

    def save(self, path: str | Path) -> Path:
        """Writes the means as safetensors (atomically); returns the path."""
        from safetensors.torch import save_file

        path = Path(path)
        meta = {
            "kind": KIND,
            "n_prompts": str(self.n_prompts),
            "n_positions": str(self.n_positions),
            "skip_bos": json.dumps(self.skip_bos),
        }
        tensors = {
            "features": self.features.detach().cpu().contiguous(),
            "errors": self.errors.detach().cpu().contiguous(),
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> AblationMeans:
        """Reads means written by ``save``; other files raise ``ValueError``."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no ablation means file at {path}")
        not_means = (
            f"{path} is not an ablation means file: write one with AblationMeans.save "
            "(or pass reference prompts as .txt/.jsonl)"
        )
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                if meta.get("kind") != KIND or set(f.keys()) != {"features", "errors"}:
                    raise ValueError(not_means)
                features, errors = f.get_tensor("features"), f.get_tensor("errors")
        except Exception as e:  # safetensors raises its own error type for unreadable files
            if isinstance(e, ValueError) or type(e).__name__ == "SafetensorError":
                raise ValueError(not_means) from None
            raise
        return cls(
            features,
            errors,
            int(meta["n_prompts"]),
            int(meta["n_positions"]),
            bool(json.loads(meta.get("skip_bos", "true"))),
        )


@torch.no_grad()
def ablation_means(
    model: ReplacementModel,
    prompts: Iterable[Prompt],
    *,
    batch_size: int = 8,
    skip_bos: bool = True,
) -> AblationMeans:
    """Mean feature activations and error vectors of ``model`` over ``prompts`` (texts or token
    ids; an iterator such as a corpus works, it is read once).

    Every position of every prompt counts once; with ``skip_bos`` the positions the model's
    graphs zero (``model.zero_positions``, the BOS) are left out. Prompts are run
    ``batch_size`` at a time, right-padded (a causal model's earlier positions do not see the
    padding, which is not counted). Sums are accumulated in float64.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    tc = model.transcoders
    feat_sum = torch.zeros(tc.n_layers, tc.d_transcoder, dtype=torch.float64)
    err_sum = torch.zeros(tc.n_layers, tc.d_model, dtype=torch.float64)
    n_prompts = n_positions = 0
    for batch in batched((model.ensure_tokenized(p) for p in prompts), batch_size):
        for ids, reads, writes in _run(model, batch):
            keep = torch.ones(len(ids), dtype=torch.bool)
            if skip_bos:
                keep[model.zero_positions] = False
            feats = tc.encode_sparse(reads, slice(0, 0))  # every position, BOS included
            errors = writes - tc.decode_sparse(feats, reads)  # [layer, pos, d_model]
            layer, pos, f = feats.indices.unbind(-1)
            on = keep.to(pos.device)[pos]
            flat = (layer[on] * tc.d_transcoder + f[on]).cpu()
            feat_sum.view(-1).index_add_(0, flat, feats.values[on].double().cpu())
            err_sum += errors[:, keep.to(errors.device)].double().sum(1).cpu()
            n_prompts += 1
            n_positions += int(keep.sum())
    if n_positions == 0:
        raise ValueError(
            "the reference prompts hold no token position to average over: give at least one "
            "prompt with a token after BOS"
        )
    return AblationMeans(
        feat_sum / n_positions, err_sum / n_positions, n_prompts, n_positions, skip_bos
    )


def _run(
    model: ReplacementModel, batch: list[torch.Tensor]
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per prompt: ids ``[pos]``, transcoder reads and writes ``[layer, pos, d_model]``."""
    width = max(len(ids) for ids in batch)
    padded = torch.stack([torch.cat([ids, ids[-1:].expand(width - len(ids))]) for ids in batch])
    _, cap = model.run(padded.to(model.device), Plan(record=True))
    assert cap is not None
    reads = torch.stack([cap.reads[i] for i in sorted(cap.reads)], 1)  # [b, layer, pos, d]
    writes = torch.stack([cap.writes[i] for i in sorted(cap.writes)], 1)
    for row, ids in enumerate(batch):
        n = len(ids)
        yield ids, reads[row, :, :n], writes[row, :, :n]


def mean_ablations(nodes: Iterable[NodeRef], means: AblationMeans) -> list[Intervention]:
    """Interventions setting each feature node to ``means.features[layer, f]`` and each error
    node to ``means.errors[layer]``; features at one (layer, pos) become one intervention."""
    features: dict[tuple[int, int], list[int]] = {}
    errors: set[tuple[int, int]] = set()
    for ref in nodes:
        if ref.feature is None:
            errors.add((ref.layer, ref.pos))
        else:
            feats = features.setdefault((ref.layer, ref.pos), [])
            if ref.feature not in feats:
                feats.append(ref.feature)
    out = [
        _set_features(layer, pos, torch.tensor(feats), means)
        for (layer, pos), feats in sorted(features.items())
    ]
    out += [
        Intervention(layer, pos, None, means.errors[layer], "set") for layer, pos in sorted(errors)
    ]
    return out


def _set_features(layer: int, pos: int, feats: torch.Tensor, means: AblationMeans) -> Intervention:
    return Intervention(layer, pos, feats, means.features[layer, feats], "set")


def mean_ablate_all_features(
    layer: int, pos: int, kept: set[int], means: AblationMeans
) -> Intervention | None:
    """Every feature at ``(layer, pos)`` except ``kept`` set to its mean (None if none left)."""
    mask = torch.ones(means.features.shape[1], dtype=torch.bool)
    mask[sorted(kept)] = False
    feats = mask.nonzero(as_tuple=True)[0]
    return _set_features(layer, pos, feats, means) if len(feats) else None
