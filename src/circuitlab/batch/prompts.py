"""Prompt records of a batch, read from JSON lines.

One JSON object per line (blank lines are skipped)::

    {"prompt": "The capital of France is"}
    {"id": "dallas", "prompt": "Fact: the capital of the state containing Dallas is",
     "target": " Austin", "logit_diff": [" Austin", " Dallas"]}

* ``prompt`` (string, required): the text to trace;
* ``id`` (string or integer, optional): names the graph file ``graphs/{id}.safetensors``;
  letters, digits, ``.``, ``_`` and ``-`` only, unique in the file; default ``line{N}`` with
  ``N`` the 1-based line number;
* ``target`` (string or list of strings, optional): logit targets, one token each;
* ``logit_diff`` (``[pos, neg]`` or a list of such pairs, optional): logit-difference targets.

Without ``target``/``logit_diff`` the salient logits are traced (as ``circuitlab attribute``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_KEYS = {"prompt", "id", "target", "logit_diff"}


class PromptFileError(ValueError):
    """A prompt file line that cannot be used; the message names the line and the fix."""


@dataclass(frozen=True)
class PromptRecord:
    """One prompt to trace (see the module docstring)."""

    id: str
    prompt: str
    targets: tuple[str, ...] = ()
    logit_diffs: tuple[tuple[str, str], ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prompt": self.prompt,
            "target": list(self.targets),
            "logit_diff": [list(p) for p in self.logit_diffs],
        }


def read_prompts(path: str | Path) -> list[PromptRecord]:
    """The records of a JSONL file, in file order; raises ``PromptFileError`` on a bad line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such prompt file; pass a JSONL file with one "
            '{"prompt": ...} object per line'
        )
    records: list[PromptRecord] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        record = parse_record(line, n, f"{path.name} line {n}")
        if record.id in seen:
            raise PromptFileError(
                f"{path.name} line {n}: id {record.id!r} already used on line {seen[record.id]}; "
                "ids must be unique"
            )
        seen[record.id] = n
        records.append(record)
    if not records:
        raise PromptFileError(f"{path}: no prompts; write one JSON object per line")
    return records


def parse_record(line: str, n: int, where: str) -> PromptRecord:
    """One line as a ``PromptRecord`` (``where`` prefixes error messages)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise PromptFileError(
            f'{where}: not valid JSON ({e.msg}); each line must be an object like {{"prompt": "..."}}'
        ) from None
    if not isinstance(obj, dict):
        raise PromptFileError(f'{where}: expected a JSON object like {{"prompt": "..."}}')
    unknown = sorted(set(obj) - _KEYS)
    if unknown:
        raise PromptFileError(
            f"{where}: unknown key(s) {', '.join(unknown)}; use {', '.join(sorted(_KEYS))}"
        )
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise PromptFileError(f'{where}: "prompt" must be a non-empty string')
    rid = obj.get("id", f"line{n}")
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or not _ID.fullmatch(str(rid)):
        raise PromptFileError(
            f'{where}: bad "id" {rid!r}; use letters, digits, ".", "_" and "-" (it names the '
            "graph file)"
        )
    return PromptRecord(str(rid), prompt, _targets(obj.get("target"), where), _diffs(obj, where))


def _targets(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(t, str) and t for t in items):
        raise PromptFileError(f'{where}: "target" must be a token string or a list of them')
    return tuple(items)


def _diffs(obj: dict[str, Any], where: str) -> tuple[tuple[str, str], ...]:
    value = obj.get("logit_diff")
    if value is None:
        return ()
    pairs = [value] if value and all(isinstance(v, str) for v in value) else value
    ok = isinstance(pairs, list) and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(t, str) and t for t in p)
        for p in pairs
    )
    if not ok:
        raise PromptFileError(
            f'{where}: "logit_diff" must be [pos, neg] or a list of such pairs of token strings'
        )
    return tuple((p[0], p[1]) for p in pairs)
