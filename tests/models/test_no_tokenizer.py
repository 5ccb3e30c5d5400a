"""Model folders saved without tokenizer files: token ids go in unchanged, text is refused.

transformers 5 answers such a folder with a placeholder tokenizer (GPT-2, Qwen: one special
token; Gemma: five) or an error (Llama, Mistral); either way the model has no tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from circuitlab.models.tiny import tiny_model
from circuitlab.models.tokens import is_placeholder_tokenizer
from circuitlab.replacement import ReplacementModel
from circuitlab.transcoders import random_transcoder_set

from conftest import FAMILIES, tiny_tokenizer

IDS = [5, 9, 3, 7, 7, 12, 4]  # starts with an ordinary token: nothing may be put before it


def _folder(family: str, root: Path) -> Path:
    folder = root / family
    tiny_model(family).save_pretrained(folder)
    return folder


def _load(folder: Path, **kwargs) -> ReplacementModel:
    return ReplacementModel.from_pretrained(
        str(folder), random_transcoder_set(2, 16, 32, k=6), **kwargs
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_token_ids_give_plain_transformers_logits(family: str, tmp_path: Path) -> None:
    folder = _folder(family, tmp_path)
    rm = _load(folder)
    assert rm.tokenizer is None
    assert rm.ensure_tokenized(IDS).tolist() == IDS
    plain = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        expected = plain(input_ids=torch.tensor([IDS])).logits[0]
    torch.testing.assert_close(rm.get_activations(IDS).logits, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_text_prompt_says_no_tokenizer_was_found(family: str, tmp_path: Path) -> None:
    rm = _load(_folder(family, tmp_path))
    with pytest.raises(ValueError, match=r"no tokenizer was found.*tokenizer="):
        rm.get_activations("the capital of Texas is")


def test_a_placeholder_tokenizer_is_recognised(tmp_path: Path) -> None:
    for family in ("gpt2", "qwen2", "gemma2"):
        placeholder = AutoTokenizer.from_pretrained(_folder(family, tmp_path))
        assert is_placeholder_tokenizer(placeholder)
    assert not is_placeholder_tokenizer(tiny_tokenizer())


def test_a_placeholder_tokenizer_passed_explicitly_is_refused(tmp_path: Path) -> None:
    folder = _folder("gpt2", tmp_path)
    with pytest.raises(ValueError, match="only special tokens"):
        _load(folder, tokenizer=AutoTokenizer.from_pretrained(folder))


def test_a_tokenizer_can_be_given_by_path(tmp_path: Path) -> None:
    folder = _folder("qwen2", tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path / "tok")
    rm = _load(folder, tokenizer=str(tmp_path / "tok"))
    assert rm.tokenizer is not None
    assert rm.ensure_tokenized("the capital").tolist() == [0, 3, 4]  # <bos> the capital


def test_a_tokenizer_path_that_does_not_load_is_a_clear_error(tmp_path: Path) -> None:
    folder = _folder("llama", tmp_path)
    with pytest.raises(ValueError, match="Could not load the tokenizer"):
        _load(folder, tokenizer=str(tmp_path / "missing"))
