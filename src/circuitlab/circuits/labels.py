"""Labels for features and supernodes from the feature dashboards, without a language model.

A feature's automatic label reads its dashboard record (``features.store``): the tokens it fires
on most in its top examples and the logits it promotes (``+``) and suppresses (``-``), e.g.
``auto: Houston/Dallas → +is +, -California``. A supernode's label merges its members' (tokens
and logits counted over members, each weighted by the member's influence), e.g.
``auto: Houston/Dallas → +is (6 features, L0-2 @ "Dallas")``.

Every automatic label starts with ``AUTO_PREFIX`` so a page or script can tell it from a user's
label; a user's label (``Graph.feature_labels``, or a ``label`` in the dashboard record) is used
as it is and always wins. Without a dashboard the label says so: ``auto: no dashboard (L0 #58)``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

AUTO_PREFIX = "auto: "
TOP_TOKENS = 2
TOP_LOGITS = 2
_SPECIAL = {"<bos>", "<eos>", "<pad>", "<unk>", "<s>", "</s>", "<|endoftext|>"}

RecordReader = Callable[[int, int], "dict[str, Any] | None"]


def is_automatic(label: str) -> bool:
    """Whether ``label`` was made by circuitlab (and may be replaced by the user's)."""
    return label.startswith(AUTO_PREFIX)


def top_tokens(record: dict[str, Any], k: int = TOP_TOKENS) -> list[str]:
    """The tokens a feature fires on most in its top examples (by count, then activation)."""
    counts: Counter[str] = Counter()
    best: dict[str, float] = {}
    quantiles = record.get("examples_quantiles") or []
    for example in (quantiles[0].get("examples") or []) if quantiles else []:
        tokens, acts = example.get("tokens") or [], example.get("tokens_acts_list") or []
        m = min(len(tokens), len(acts))
        if not m:
            continue
        top = max(acts[:m])
        if not top > 0:
            continue
        token = _show(tokens[acts.index(top)])  # the first position at the maximum
        if token:
            counts[token] += 1
            best[token] = max(best.get(token, 0.0), float(top))
    ranked = sorted(counts, key=lambda t: (-counts[t], -best[t], t))
    return ranked[:k]


def _show(token: Any) -> str:
    text = str(token).replace("\n", "\\n").strip()
    return "" if text in _SPECIAL else text


def _logits(record: dict[str, Any], key: str, k: int) -> list[str]:
    return [t for t in (_show(x) for x in (record.get(key) or [])) if t][:k]


def feature_label(
    record: dict[str, Any] | None, layer: int, feature: int, user: str | None = None
) -> str:
    """The label of one feature: ``user`` or the record's ``label`` if set, else automatic."""
    if user:
        return user
    if record is None:
        return f"{AUTO_PREFIX}no dashboard (L{layer} #{feature})"
    if record.get("label"):
        return str(record["label"])
    tokens = top_tokens(record)
    up = [f"+{t}" for t in _logits(record, "top_logits", TOP_LOGITS)]
    down = [f"-{t}" for t in _logits(record, "bottom_logits", 1)]
    return _compose(tokens, up + down) or f"{AUTO_PREFIX}no examples (L{layer} #{feature})"


def _compose(tokens: Sequence[str], logits: Sequence[str]) -> str:
    parts = "/".join(tokens)
    effect = " ".join(logits)
    if not parts and not effect:
        return ""
    return AUTO_PREFIX + (f"{parts} → {effect}" if parts and effect else parts or f"→ {effect}")


def supernode_label(
    records: Sequence[dict[str, Any] | None],
    weights: Sequence[float],
    where: str,
) -> str:
    """A supernode's automatic label from its members' records (``None`` where a member has
    no dashboard), each counted with ``weights`` (the members' influence); ``where`` says
    where it sits, e.g. ``6 features, L0-2 @ "Dallas"``."""
    tokens: dict[str, float] = {}
    logits: dict[str, float] = {}
    missing = 0
    for record, w in zip(records, weights, strict=True):
        if record is None:
            missing += 1
            continue
        w = max(float(w), 1e-12)
        for rank, t in enumerate(top_tokens(record, 3)):
            tokens[t] = tokens.get(t, 0.0) + w / (rank + 1)
        for rank, t in enumerate(_logits(record, "top_logits", 3)):
            logits[f"+{t}"] = logits.get(f"+{t}", 0.0) + w / (rank + 1)
    top = [t for t, _ in sorted(tokens.items(), key=lambda x: (-x[1], x[0]))[:TOP_TOKENS]]
    up = [t for t, _ in sorted(logits.items(), key=lambda x: (-x[1], x[0]))[:1]]
    body = _compose(top, up)
    if missing == len(records):
        return f"{AUTO_PREFIX}no dashboards ({where})"
    note = f"; {missing} without dashboards" if missing else ""
    return f"{body or AUTO_PREFIX.rstrip()} ({where}{note})"
