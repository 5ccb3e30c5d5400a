"""The notebook helpers circuit-tracer's demos import, with the same names and arguments.

The ``display_*`` helpers render a small HTML table in a Jupyter kernel and print plain text
elsewhere (scripts, terminal IPython); the ``get_*`` helpers return the same values circuit-tracer's do.
"""

from __future__ import annotations

import gc
import html
import sys
from collections.abc import Sequence
from typing import Any

import torch

from ..attribution.targets import CustomTarget
from ..graph import compute_node_influence
from .decode_url_features import Feature, decode_url_features


def get_unembed_vecs(model: Any, token_ids: list[int], backend: str = "") -> list[torch.Tensor]:
    """The unembedding vectors ``[d_model]`` of ``token_ids`` (``backend`` is accepted: both
    backends are circuitlab's one engine)."""
    del backend
    weight = model.unembed_weight  # [vocab, d_model]
    return [weight[int(t)] for t in token_ids]


def cleanup_cuda() -> None:
    """Collects garbage and empties the CUDA cache (when there is one)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def get_top_features(graph: Any, n: int = 10) -> tuple[list[tuple[int, int, int]], list[float]]:
    """The ``n`` selected features with the most influence on the weighted logits:
    ``([(layer, pos, feature), ...], [influence, ...])``, most influential first."""
    adjacency = graph.adjacency_matrix
    weights = torch.zeros(adjacency.shape[0], dtype=adjacency.dtype, device=adjacency.device)
    n_logits = len(graph.logit_targets)
    weights[-n_logits:] = graph.logit_probabilities.to(weights)
    n_features = len(graph.selected_features)
    influence = compute_node_influence(adjacency, weights)[:n_features]
    values, order = torch.topk(influence, min(n, n_features))
    coords = graph.active_features[graph.selected_features[order]]
    features = [(int(layer), int(pos), int(feat)) for layer, pos, feat in coords.tolist()]
    return features, [float(v) for v in values.tolist()]


def get_topk(logits: torch.Tensor, tokenizer: Any, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` likeliest next tokens at the last position: ``[(token, probability), ...]``."""
    probs = torch.softmax(logits.squeeze()[-1].double(), dim=-1)
    top = torch.topk(probs, k)
    return [
        (tokenizer.decode([int(i)]), float(p)) for p, i in zip(top.values, top.indices, strict=True)
    ]


def extract_supernode_features(url: str) -> dict[str, list[Feature]]:
    """The supernodes of a Neuronpedia graph URL (see ``decode_url_features``)."""
    return decode_url_features(url)[0]


# ---- display ---------------------------------------------------------------------------------
def display_topk_token_predictions(
    sentence: str,
    original_logits: torch.Tensor,
    new_logits: torch.Tensor,
    tokenizer: Any,
    k: int = 5,
    key_tokens: list[tuple[str, int]] | None = None,
) -> None:
    """The top-``k`` next tokens before and after an intervention (and the probabilities of
    ``key_tokens``, ``(label, token id)`` pairs, in both)."""
    before, after = get_topk(original_logits, tokenizer, k), get_topk(new_logits, tokenizer, k)
    rows = [
        (f"{a[0]!r} {a[1]:.3f}", f"{b[0]!r} {b[1]:.3f}") for a, b in zip(before, after, strict=True)
    ]
    for label, tid in key_tokens or []:
        before = _last_probs(original_logits)[tid]
        after = _last_probs(new_logits)[tid]
        rows.append((f"{label}: {before:.3f}", f"{label}: {after:.3f}"))
    _show(sentence, ("original", "after intervention"), rows)


def display_token_probs(
    logits: torch.Tensor, token_ids: list[int], labels: list[str], title: str = ""
) -> None:
    """The last position's probability of each of ``token_ids``."""
    probs = _last_probs(logits)
    _show(
        title,
        ("token", "probability"),
        [(lb, f"{probs[t]:.4f}") for lb, t in zip(labels, token_ids, strict=True)],
    )


def display_generations_comparison(
    original_text: str, pre_intervention_gens: Sequence[str], post_intervention_gens: Sequence[str]
) -> None:
    """Generations before and after an intervention, the prompt stripped from each."""

    def cont(text: str) -> str:
        return text[len(original_text) :] if text.startswith(original_text) else text

    rows = [
        (cont(a), cont(b))
        for a, b in zip(pre_intervention_gens, post_intervention_gens, strict=False)
    ]
    _show(original_text, ("before", "after intervention"), rows)


def display_top_features_comparison(
    feature_sets: dict[str, list[tuple[int, int, int]]],
    scores_sets: dict[str, list[float]] | None = None,
    neuronpedia_model: str | None = None,
    neuronpedia_set: str = "gemmascope-transcoder-16k",
) -> None:
    """Side-by-side top features of several graphs (``(layer, pos, feature)`` each)."""
    del neuronpedia_model, neuronpedia_set  # no links offline
    names = list(feature_sets)
    depth = max((len(v) for v in feature_sets.values()), default=0)
    rows = []
    for i in range(depth):
        row = []
        for name in names:
            feats = feature_sets[name]
            score = (scores_sets or {}).get(name)
            cell = "" if i >= len(feats) else str(tuple(feats[i]))
            if cell and score is not None and i < len(score):
                cell += f" {score[i]:.3f}"
            row.append(cell)
        rows.append(tuple(row))
    _show("top features", tuple(names), rows)


def display_attribution_config(
    token_pairs: list[tuple[str, int]], target_pairs: list[tuple[str, CustomTarget]]
) -> None:
    """The token ids used and the attribution targets built from them."""
    rows = [(tok, str(tid)) for tok, tid in token_pairs]
    rows += [(kind, f"{t.token_str} (weight {float(t.prob):.3f})") for kind, t in target_pairs]
    _show("attribution config", ("name", "value"), rows)


def display_ablation_chart(
    groups: dict[str, dict[str, float]],
    logit_diffs: dict[str, float] | None = None,
    title: str = "",
    colors: list[str] | None = None,
) -> None:
    """A table of each condition's values (circuit-tracer draws bars)."""
    del colors
    keys = sorted({k for values in groups.values() for k in values})
    rows = [(name, *(f"{values.get(k, 0.0):.3f}" for k in keys)) for name, values in groups.items()]
    if logit_diffs:
        rows += [(f"logit diff: {name}", f"{v:.3f}") for name, v in logit_diffs.items()]
    _show(title, ("condition", *keys), rows)


def _last_probs(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.squeeze()[-1].double(), dim=-1)


def _in_notebook() -> bool:
    """True inside a Jupyter-like kernel (one that renders HTML); False in a plain script or a
    terminal IPython, even where IPython is installed."""
    if "IPython" not in sys.modules:  # every kernel has imported it already
        return False
    shell = sys.modules["IPython"].get_ipython()
    return shell is not None and type(shell).__name__ != "TerminalInteractiveShell"


def _show(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    if not _in_notebook():
        print(title)
        for row in [header, *rows]:
            print("  " + " | ".join(row))
        return
    from IPython.display import HTML, display  # pyright: ignore[reportMissingImports]

    cells = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    display(HTML(f"<b>{html.escape(title)}</b><table><tr>{head}</tr>{cells}</table>"))
