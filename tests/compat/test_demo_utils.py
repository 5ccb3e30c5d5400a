"""The notebook helpers of ``circuit_tracer.utils.demo_utils``, and intervention-demo-style
cells using them after ``install()``."""

from __future__ import annotations

import pytest
import torch

from circuitlab.compat.circuit_tracer import ReplacementModel, attribute
from circuitlab.compat.circuit_tracer.utils import demo_utils
from circuitlab.interventions import feature_intervention_generate
from circuitlab.replacement import ReplacementModel as NativeReplacementModel

from .conftest import PROMPT


def test_get_top_features_ranks_by_influence(model: ReplacementModel) -> None:
    graph = attribute(PROMPT, model, batch_size=64)
    features, scores = demo_utils.get_top_features(graph, n=5)
    assert len(features) == len(scores) == 5
    assert scores == sorted(scores, reverse=True)
    coords = {tuple(c) for c in graph.selected_feature_coords.tolist()}
    assert all(f in coords for f in features)


def test_get_topk_and_unembed_vecs(model: ReplacementModel) -> None:
    logits, _ = model.get_activations(PROMPT)
    top = demo_utils.get_topk(logits, model.tokenizer, k=3)
    probs = torch.softmax(logits[0, -1].double(), -1)
    assert [p for _, p in top] == pytest.approx(probs.topk(3).values.tolist())
    vecs = demo_utils.get_unembed_vecs(model, [3, 4], "transformerlens")
    assert torch.equal(vecs[1], model.unembed_weight[4])


@pytest.mark.usefixtures("installed")
def test_intervention_demo_cells(
    model: ReplacementModel, native: NativeReplacementModel, capsys: pytest.CaptureFixture[str]
) -> None:
    from circuit_tracer.utils.demo_utils import (  # pyright: ignore[reportMissingImports]
        display_generations_comparison,
        display_topk_token_predictions,
    )

    s = PROMPT
    original_logits, activations = model.get_activations(s, sparse=True)
    last = activations.to_dense()[:, -1]  # [layer, feature] at the last position
    top = last.flatten().topk(3).indices
    d_t = last.shape[1]
    intervention_tuples = [(int(i) // d_t, -1, int(i) % d_t, 0) for i in top]
    new_logits, _ = model.feature_intervention(s, intervention_tuples)
    display_topk_token_predictions(s, original_logits, new_logits, model.tokenizer)

    pre = [
        model.generate(s, do_sample=True, verbose=False, max_new_tokens=5, seed=i) for i in range(3)
    ]
    post = [
        model.feature_intervention_generate(
            s, intervention_tuples, do_sample=True, verbose=False, max_new_tokens=5, seed=i
        )[0]
        for i in range(3)
    ]
    display_generations_comparison(s, pre, post)

    shown = capsys.readouterr().out
    assert "after intervention" in shown
    ref = native.feature_intervention(s, intervention_tuples).logits
    torch.testing.assert_close(new_logits[0], ref)
    assert not torch.equal(new_logits, original_logits)
    assert all(text.startswith(s) for text in pre + post)
    plain = feature_intervention_generate(native, s, (), do_sample=True, max_new_tokens=5, seed=0)
    assert pre[0] == plain.text
