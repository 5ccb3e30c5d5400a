"""The prompt file: every bad line is refused with its line number and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from circuitlab.batch import PromptFileError, read_prompts


def test_records_keep_file_order_ids_and_targets(prompt_file: Path) -> None:
    records = read_prompts(prompt_file)
    assert [r.id for r in records] == ["line1", "dallas", "line3", "texas", "line5", "bad"]
    assert records[1].targets == (" Austin",)
    assert records[2].logit_diffs == (("a", "b"),)


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "x"', "line 2: not valid JSON"),
        ('["x"]', "expected a JSON object"),
        ('{"text": "x"}', "unknown key(s) text"),
        ('{"prompt": ""}', '"prompt" must be a non-empty string'),
        ('{"prompt": "x", "id": "a/b"}', 'bad "id"'),
        ('{"prompt": "x", "id": "a"}', "already used on line 1"),
        ('{"prompt": "x", "target": 3}', '"target" must be a token string'),
        ('{"prompt": "x", "logit_diff": ["a"]}', '"logit_diff" must be [pos, neg]'),
    ],
)
def test_bad_lines_name_the_line_and_the_fix(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "ok", "id": "a"}\n' + line + "\n")
    with pytest.raises(PromptFileError) as e:
        read_prompts(path)
    assert message in str(e.value)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such prompt file"):
        read_prompts(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(PromptFileError, match="no prompts"):
        read_prompts(tmp_path / "empty.jsonl")
