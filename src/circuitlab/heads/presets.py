"""Preset experiments: prompt builders plus the circuit each is expected to show.

Each ``Preset`` builds a ``PresetPrompts`` (clean and corrupted prompts of equal token length,
the answer and the wrong token of the logit difference) for a tokenizer, and carries the
expected circuit as data: ``Role`` entries naming a component kind, where in depth it is
expected (a fraction of the layers), the evidence that shows it, and what it does.
Expectations come from the literature on GPT-2 small; on other models they are hypotheses to
test, not facts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

Evidence = str  # "dla" | "patch:head" | "patch:resid" | "patch:mlp" | "class:<head class>"


@dataclass(frozen=True)
class Role:
    """A part of an expected circuit."""

    name: str
    component: str  # "head" | "mlp" | "resid"
    depth: tuple[float, float]  # where, as a fraction of the layers (0 = first, 1 = last)
    evidence: Evidence
    does: str


@dataclass(frozen=True)
class PresetPrompts:
    clean: str
    corrupted: str
    answer: str
    wrong: str


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    build: Callable[[PreTrainedTokenizerBase | None], PresetPrompts]
    circuit: str
    roles: tuple[Role, ...] = field(default_factory=tuple)
    source: str = ""


def ioi(a: str = "Mary", b: str = "John", place: str = "store", thing: str = "drink"):
    """Indirect object identification: ``A`` is the answer; the corruption repeats ``A``."""

    def build(tok: PreTrainedTokenizerBase | None) -> PresetPrompts:
        text = "When {a} and {b} went to the {place}, {s} gave a {thing} to"
        return PresetPrompts(
            clean=text.format(a=a, b=b, place=place, s=b, thing=thing),
            corrupted=text.format(a=a, b=b, place=place, s=a, thing=thing),
            answer=f" {a}",
            wrong=f" {b}",
        )

    return build


def induction(first: str = "The cat sat on the", end: str = "mat", other: str = "rug"):
    """Copy the token that followed an earlier occurrence; the corruption changes that token."""

    def build(tok: PreTrainedTokenizerBase | None) -> PresetPrompts:
        return PresetPrompts(
            clean=f"{first} {end}. {first}",
            corrupted=f"{first} {other}. {first}",
            answer=f" {end}",
            wrong=f" {other}",
        )

    return build


def factual(
    subject: str = "France", answer: str = "Paris", other: str = "Italy", other_answer: str = "Rome"
):
    def build(tok: PreTrainedTokenizerBase | None) -> PresetPrompts:
        text = "The capital of {} is"
        return PresetPrompts(
            text.format(subject), text.format(other), f" {answer}", f" {other_answer}"
        )

    return build


def greater_than(noun: str = "war", start: int = 32):
    """``"... from the year 17YY to the year 17"``: the next year must exceed 17YY.

    Tokenizers that write two-digit numbers as one token (GPT-2) compare ``YY + 20`` with
    ``YY - 20``; digit-level tokenizers (Llama, SmolLM2) compare the next tens digit above and
    below. The corruption uses ``01``, the start year with no smaller two-digit completion.
    """

    def build(tok: PreTrainedTokenizerBase | None) -> PresetPrompts:
        two_digit = tok is not None and len(tok("45", add_special_tokens=False).input_ids) == 1
        hi, lo = (start + 20, start - 20) if two_digit else (start // 10 + 2, start // 10 - 2)
        text = "The {n} lasted from the year 17{y:02d} to the year 17"
        return PresetPrompts(
            text.format(n=noun, y=start), text.format(n=noun, y=1), f"{hi}", f"{lo}"
        )

    return build


def duplicate_token(secret: str = "cheese", other: str = "bread"):
    def build(tok: PreTrainedTokenizerBase | None) -> PresetPrompts:
        text = "The password is {}. Again, the password is"
        return PresetPrompts(text.format(secret), text.format(other), f" {secret}", f" {other}")

    return build


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "ioi",
            "Indirect object identification",
            ioi(),
            "Duplicate-token and induction heads mark the repeated subject; S-inhibition heads "
            "carry that to the end; name-mover heads in the late layers attend to the indirect "
            "object and copy it to the output.",
            (
                Role(
                    "duplicate-token heads",
                    "head",
                    (0.0, 0.5),
                    "class:duplicate_token",
                    "at the second subject, attend to its first occurrence",
                ),
                Role(
                    "S-inhibition heads",
                    "head",
                    (0.5, 0.8),
                    "patch:head",
                    "at the last token, move 'the subject is repeated' to the name movers",
                ),
                Role(
                    "name movers",
                    "head",
                    (0.7, 1.0),
                    "dla",
                    "at the last token, attend to the indirect object and raise its logit",
                ),
            ),
            "Wang et al. 2022, Interpretability in the Wild",
        ),
        Preset(
            "induction",
            "Induction copying",
            induction(),
            "A previous-token head writes each token's predecessor into its position; an "
            "induction head at the last token attends to the token after the earlier "
            "occurrence and copies it.",
            (
                Role(
                    "previous-token heads",
                    "head",
                    (0.0, 0.5),
                    "class:previous_token",
                    "write the previous token into each position",
                ),
                Role(
                    "induction heads",
                    "head",
                    (0.2, 1.0),
                    "class:induction",
                    "attend to the token after the earlier copy and copy it (DLA > 0)",
                ),
            ),
            "Olsson et al. 2022, In-context Learning and Induction Heads",
        ),
        Preset(
            "factual",
            "Factual recall",
            factual(),
            "Early-to-middle MLPs at the subject's last token recall the attribute; late "
            "attention heads move it to the last position.",
            (
                Role(
                    "subject MLPs",
                    "mlp",
                    (0.0, 0.6),
                    "patch:mlp",
                    "at the subject's last token, enrich the residual with facts",
                ),
                Role(
                    "attribute movers",
                    "head",
                    (0.5, 1.0),
                    "dla",
                    "at the last token, read the attribute from the subject position",
                ),
            ),
            "Meng et al. 2022 (ROME); Geva et al. 2023",
        ),
        Preset(
            "greater_than",
            "Greater-than",
            greater_than(),
            "Attention heads move the start year's digits to the last position; late MLPs "
            "raise the logits of larger years and lower smaller ones.",
            (
                Role(
                    "year movers",
                    "head",
                    (0.3, 0.8),
                    "patch:head",
                    "attend from the last token to the start year's digits",
                ),
                Role(
                    "comparison MLPs",
                    "mlp",
                    (0.6, 1.0),
                    "dla",
                    "raise years above the start and lower those below",
                ),
            ),
            "Hanna et al. 2023, How does GPT-2 compute greater-than?",
        ),
        Preset(
            "duplicate",
            "Duplicate token",
            duplicate_token(),
            "Duplicate-token heads at the repeated 'password' attend to its first occurrence; "
            "induction heads at the last token copy the word that followed it.",
            (
                Role(
                    "duplicate-token heads",
                    "head",
                    (0.0, 0.6),
                    "class:duplicate_token",
                    "at the second 'password', attend to the first",
                ),
                Role(
                    "induction heads",
                    "head",
                    (0.2, 1.0),
                    "class:induction",
                    "copy the token after the first 'is'",
                ),
            ),
            "Olsson et al. 2022; Wang et al. 2022",
        ),
    )
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; use one of {', '.join(PRESETS)}.")
    return PRESETS[name]


def unfit_reason(
    built: PresetPrompts, tokenizer: PreTrainedTokenizerBase | None, vocab_size: int
) -> str | None:
    """Why a preset's prompts cannot run on a model, or None when they fit.

    They fit when the tokenizer knows every word (nothing maps to its unknown token), every id
    is inside the model's vocabulary, the answer and the wrong token are one token each and
    differ, and the clean and corrupted prompts have the same token length.
    """
    if tokenizer is None:
        return "this model has no tokenizer (presets are text)"
    unknown: list[str] = []
    lengths = []
    for text in (built.clean, built.corrupted, built.answer, built.wrong):
        ids, words = _encode(tokenizer, text)
        if any(i >= vocab_size for i in ids):
            return f"{text!r} has token ids beyond the model's vocabulary ({vocab_size})"
        unknown += [w for w in words if w not in unknown]
        lengths.append(len(ids))
    if unknown:
        more = f" and {len(unknown) - 4} more" if len(unknown) > 4 else ""
        return f"not in this model's vocabulary: {', '.join(map(repr, unknown[:4]))}{more}"
    for text, n in ((built.answer, lengths[2]), (built.wrong, lengths[3])):
        if n != 1:
            return f"{text!r} is {n} tokens for this tokenizer; answers must be one token"
    if _encode(tokenizer, built.answer)[0] == _encode(tokenizer, built.wrong)[0]:
        return f"{built.answer!r} and {built.wrong!r} are the same token"
    if lengths[0] != lengths[1]:
        return f"the clean prompt is {lengths[0]} tokens and the corrupted one {lengths[1]}"
    return None


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> tuple[list[int], list[str]]:
    """Token ids of ``text`` and the pieces of it that became the unknown token."""
    unk = _unknown_id(tokenizer)
    ids = [int(i) for i in tokenizer(text, add_special_tokens=False).input_ids]
    if unk is None or unk not in ids:
        return ids, []
    # which words: encode them one at a time (works for slow tokenizers too)
    words = [w.strip(".,;:!?") or w for w in text.split()]
    unknown = [w for w in words if unk in tokenizer(w, add_special_tokens=False).input_ids]
    return ids, unknown or [text.strip()]


def _unknown_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The id unknown words map to (the backend model's ``unk_token`` when the tokenizer does
    not name one); None for byte-level tokenizers, which have no unknown words."""
    named = tokenizer.unk_token_id
    if isinstance(named, int):
        return named
    backend = getattr(tokenizer, "backend_tokenizer", None)
    name = getattr(getattr(backend, "model", None), "unk_token", None)
    if backend is None or not name:
        return None
    found = backend.token_to_id(name)
    return None if found is None else int(found)


def repeated_tokens(n: int = 20, *, vocab: int, bos: int | None = None, seed: int = 0) -> list[int]:
    """``[bos] + r + r`` with ``r`` n random token ids: the standard probe for head classes.

    On it an induction head scores near 1, a previous-token head near 1, and the second half
    gives every token a duplicate.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    low = 3 if vocab > 3 + n else 0
    r = torch.randperm(vocab - low, generator=g)[:n] + low
    head = [bos] if bos is not None else []
    return head + r.tolist() + r.tolist()
