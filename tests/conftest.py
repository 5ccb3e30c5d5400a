"""Shared fixtures: tiny random models of every family with transcoders built in code."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from circuitlab.models.tiny import FAMILIES, tiny_model  # noqa: E402
from circuitlab.replacement import ReplacementModel  # noqa: E402
from circuitlab.transcoders import random_cross_layer_transcoder, random_transcoder_set  # noqa: E402

TRANSCODER_KINDS = ("plt", "plt_skip", "plt_resid_mid", "clt_skip")
PROMPT = [0, 5, 9, 3, 7, 7, 12, 4]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(42)


WORDS = "the capital of state containing Dallas is Austin Texas France Paris a b c d".split()


def tiny_tokenizer():
    """A word-level tokenizer over ``WORDS`` (ids 3..), with <bos>=0, <eos>=1, <pad>=2."""
    return word_tokenizer(WORDS)


def word_tokenizer(words: Sequence[str]):
    """A word-level tokenizer over ``words`` (ids 3..), with <bos>=0, <eos>=1, <pad>=2; unknown
    words become <pad>."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<bos>": 0, "<eos>": 1, "<pad>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )


def build(
    family: str,
    kind: str = "plt",
    *,
    activation: str = "jump_relu",
    dtype: torch.dtype = torch.float64,
    n_layers: int = 2,
    d_model: int = 16,
    d_transcoder: int = 32,
    output_hook: str = "hook_mlp_out",
) -> ReplacementModel:
    """A tiny model of ``family`` with transcoders of ``kind`` (see ``TRANSCODER_KINDS``)."""
    hf = tiny_model(family, dtype=dtype, n_layers=n_layers, d_model=d_model)
    common = dict(activation=activation, dtype=dtype, k=6, output_hook=output_hook)
    if kind.startswith("clt"):
        tc = random_cross_layer_transcoder(
            n_layers,
            d_model,
            d_transcoder,
            skip=kind.endswith("skip"),
            **common,  # type: ignore[arg-type]
        )
    else:
        tc = random_transcoder_set(
            n_layers,
            d_model,
            d_transcoder,
            skip=kind == "plt_skip",
            input_hook="hook_resid_mid" if kind == "plt_resid_mid" else "mlp.hook_in",
            **common,  # type: ignore[arg-type]
        )
    return ReplacementModel.from_pretrained(hf, tc, dtype=dtype, tokenizer=tiny_tokenizer())


def save_to_disk(rm: ReplacementModel, root: Path) -> tuple[Path, Path]:
    """Write ``rm``'s model + tokenizer and transcoders under ``root``, as a user's files would
    be; returns ``(model_dir, transcoder_dir)`` for ``-m`` and ``-t``."""
    model_dir, tc_dir = root / "model", root / "tc"
    rm.model.save_pretrained(model_dir)  # type: ignore[operator]
    tiny_tokenizer().save_pretrained(model_dir)
    rm.transcoders.save(str(tc_dir))
    return model_dir, tc_dir


__all__ = [
    "FAMILIES",
    "PROMPT",
    "TRANSCODER_KINDS",
    "WORDS",
    "build",
    "save_to_disk",
    "tiny_tokenizer",
    "word_tokenizer",
]
