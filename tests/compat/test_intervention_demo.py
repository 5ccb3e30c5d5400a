"""circuit-tracer's ``intervention_demo`` code cells after ``install()``: the model, prompts and
feature ids are the tiny model's (the notebook's Gemma features do not exist in it); every other
line is the notebook's. The Colab set-up cell is left out.

The notebook zero-ablates a "Spanish" feature, swaps a "French" feature for 10x the Spanish one,
and steers generation with open-ended slices. Here the two features are the tiny model's most
active features at the last position of two prompts, and the effects are compared with
circuitlab's native interventions.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from circuitlab.interventions import feature_intervention, feature_intervention_generate
from circuitlab.replacement import ReplacementModel as NativeReplacementModel

from conftest import tiny_tokenizer  # pyright: ignore[reportAttributeAccessIssue]  (root conftest)

S_ES = "the capital of Texas is"  # the notebook's "Hecho: Michael Jordan juega al"
S_FR = "the capital of France is"  # the notebook's "Fait: Michael Jordan joue au"


@pytest.fixture
def bos_model_dir(tiny_dirs: tuple[Path, Path], tmp_path: Path) -> str:
    """The tiny model with a tokenizer that adds <bos>, as Gemma's does (the notebook counts
    ``tokenizer(s).input_ids`` to find the last position)."""
    from tokenizers.processors import TemplateProcessing

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_dirs[0], model_dir)
    tok = tiny_tokenizer()  # pyright: ignore[reportCallIssue]  (the root conftest)
    tok._tokenizer.post_processor = TemplateProcessing(  # type: ignore[attr-defined]
        single="<bos> $A", special_tokens=[("<bos>", 0)]
    )
    tok.save_pretrained(model_dir)
    return str(model_dir)


def _top_feature(model: NativeReplacementModel, prompt: str) -> tuple[int, int]:
    """(layer, feature) of the most active feature at the prompt's last position."""
    last = model.get_activations(prompt).dense()[:, -1]
    i = int(last.flatten().argmax())
    return divmod(i, last.shape[1])


@pytest.mark.usefixtures("installed")
def test_intervention_demo(
    bos_model_dir: str, tiny_dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model_name, transcoder_name = bos_model_dir, str(tiny_dirs[1])
    native = NativeReplacementModel.from_pretrained(model_name, transcoder_name)
    es_layer, es_idx = _top_feature(native, S_ES)
    fr_layer, fr_idx = _top_feature(native, S_FR)

    # ---- the notebook's cells ----
    from collections import namedtuple
    from functools import partial

    from circuit_tracer import ReplacementModel  # pyright: ignore[reportMissingImports]

    # display functions
    from circuit_tracer.utils.demo_utils import (  # pyright: ignore[reportMissingImports]
        display_generations_comparison,
        display_topk_token_predictions,
    )

    backend = "transformerlens"  # change to 'nnsight' for the nnsight backend!
    model = ReplacementModel.from_pretrained(
        model_name, transcoder_name, dtype=torch.bfloat16, backend=backend
    )

    Feature = namedtuple("Feature", ["layer", "pos", "feature_idx"])

    # a display function that needs the model's tokenizer
    display_topk_token_predictions = partial(
        display_topk_token_predictions, tokenizer=model.tokenizer
    )

    supernode_features = [
        Feature(layer=es_layer, pos=-1, feature_idx=es_idx),
    ]

    intervention_tuples = [(*supernode_feature, 0.0) for supernode_feature in supernode_features]

    s = S_ES

    with torch.inference_mode():
        original_logits, _ = model.feature_intervention(s, [])
        new_logits, _ = model.feature_intervention(s, intervention_tuples)

    display_topk_token_predictions(s, original_logits, new_logits)

    french_supernode_features = [Feature(layer=fr_layer, pos=-1, feature_idx=fr_idx)]

    s_spanish = S_ES
    _, activations = model.get_activations(s_spanish, sparse=True)

    spanish_supernode_features = supernode_features  # from before
    fr_es_intervention_tuples = [
        (*supernode_feature, 0.0) for supernode_feature in french_supernode_features
    ]
    fr_es_intervention_tuples += [
        (*supernode_feature, 10 * activations[supernode_feature])
        for (supernode_feature) in spanish_supernode_features
    ]

    s_french = S_FR

    with torch.inference_mode():
        original_logits_fr, _ = model.feature_intervention(s_french, [])
        new_logits_fr, _ = model.feature_intervention(s_french, fr_es_intervention_tuples)

    display_topk_token_predictions(s_french, original_logits_fr, new_logits_fr)

    sequence_length = len(model.tokenizer(s_spanish).input_ids)
    original_feature_pos = sequence_length - 1
    open_ended_slice = slice(original_feature_pos, None, None)
    open_ended_es_fr_intervention_tuples = [
        (layer, open_ended_slice, feature_idx, 0.0)
        for (layer, _, feature_idx) in french_supernode_features
    ]
    open_ended_es_fr_intervention_tuples += [
        (layer, open_ended_slice, feature_idx, 10 * activations[layer, orig_pos, feature_idx])
        for (layer, orig_pos, feature_idx) in spanish_supernode_features
    ]

    pre_intervention_generation = [
        model.feature_intervention_generate(s_french, [], do_sample=False, verbose=False)[0]
    ]
    post_intervention_generation = [
        model.feature_intervention_generate(
            s_french, open_ended_es_fr_intervention_tuples, do_sample=False, verbose=False
        )[0]
    ]

    display_generations_comparison(
        s_french, pre_intervention_generation, post_intervention_generation
    )
    # ---- end of cells ----

    assert "after intervention" in capsys.readouterr().out
    bf16 = NativeReplacementModel.from_pretrained(model_name, transcoder_name, dtype=torch.bfloat16)
    assert original_logits.shape[0] == 1
    ablated = feature_intervention(bf16, S_ES, [(es_layer, -1, es_idx, 0.0)]).logits
    torch.testing.assert_close(new_logits[0], ablated)
    assert not torch.equal(new_logits, original_logits)
    value = 10 * float(bf16.get_activations(S_ES).dense()[es_layer, -1, es_idx])
    swapped = feature_intervention(
        bf16, S_FR, [(fr_layer, -1, fr_idx, 0.0), (es_layer, -1, es_idx, value)]
    ).logits
    torch.testing.assert_close(new_logits_fr[0], swapped)
    assert original_feature_pos == len(bf16.ensure_tokenized(S_ES)) - 1  # <bos> counted
    steered = feature_intervention_generate(
        bf16,
        S_FR,
        [
            (fr_layer, slice(original_feature_pos, None), fr_idx, 0.0),
            (es_layer, slice(original_feature_pos, None), es_idx, value),
        ],
        max_new_tokens=10,
    )
    assert post_intervention_generation == [steered.text]
    plain = feature_intervention_generate(bf16, S_FR, (), max_new_tokens=10)
    assert pre_intervention_generation == [plain.text]
