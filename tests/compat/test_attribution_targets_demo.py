"""circuit-tracer's ``attribution_targets_demo`` code cells after ``install()``, on the tiny
model: the model, the token strings (the tiny vocabulary's words instead of Gemma's ``▁Austin``
pieces) and the Colab set-up are the only changes. Graphs and interventions are compared with
circuitlab's native ``attribute`` (``LogitDiff``, token targets) and ``feature_intervention``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import circuitlab
from circuitlab.attribution import LogitDiff
from circuitlab.interventions import feature_intervention


@pytest.mark.usefixtures("installed")
def test_attribution_targets_demo(
    disk_model: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    model_name, transcoder_name = disk_model
    IN_COLAB = False

    # ---- the notebook's cells ----
    from functools import partial

    from circuit_tracer import ReplacementModel, attribute  # pyright: ignore[reportMissingImports]
    from circuit_tracer.attribution.targets import (  # pyright: ignore[reportMissingImports]
        CustomTarget,
    )
    from circuit_tracer.utils.demo_utils import (  # pyright: ignore[reportMissingImports]
        cleanup_cuda,
        display_attribution_config,
        display_token_probs,
        display_top_features_comparison,
        display_topk_token_predictions,
        get_top_features,
        get_unembed_vecs,
    )

    backend = "transformerlens"  # change to 'nnsight' for the nnsight backend!
    model = ReplacementModel.from_pretrained(
        model_name, transcoder_name, dtype=torch.bfloat16, backend=backend
    )

    prompt = "the capital of the state containing Dallas is"
    token_x, token_y = "Austin", "Dallas"

    attr_kwargs = dict(
        batch_size=256,
        max_feature_nodes=8192,
        offload="disk" if IN_COLAB else "cpu",
        verbose=True,
    )

    tokenizer = model.tokenizer
    idx_x = tokenizer.encode(token_x, add_special_tokens=False)[-1]
    idx_y = tokenizer.encode(token_y, add_special_tokens=False)[-1]
    idx_texas = tokenizer.encode("Texas", add_special_tokens=False)[-1]

    display_topk = partial(
        display_topk_token_predictions,
        tokenizer=tokenizer,
        key_tokens=[(token_x, idx_x), (token_y, idx_y), ("Texas", idx_texas)],
    )

    input_ids = model.ensure_tokenized(prompt)
    with torch.no_grad():
        baseline_logits, _ = model.get_activations(input_ids)

    key_ids = [idx_x, idx_y, idx_texas]
    key_labels = [token_x, token_y, "Texas"]
    display_token_probs(baseline_logits, key_ids, key_labels, title="Baseline probabilities")

    graph_salient = attribute(
        prompt=prompt,
        model=model,
        max_n_logits=10,
        desired_logit_prob=0.95,
        **attr_kwargs,
    )
    cleanup_cuda()

    graph_str = attribute(
        prompt=prompt,
        model=model,
        attribution_targets=[token_x, token_y],
        **attr_kwargs,
    )
    cleanup_cuda()

    tensor_targets = torch.tensor([idx_x, idx_y])
    graph_tensor = attribute(
        prompt=prompt,
        model=model,
        attribution_targets=tensor_targets,
        **attr_kwargs,
    )
    cleanup_cuda()

    def _get_last_position_probs(model, prompt):
        input_ids = model.ensure_tokenized(prompt)
        with torch.no_grad():
            logits, _ = model.get_activations(input_ids)
        return torch.softmax(logits.squeeze(0)[-1], dim=-1)

    def build_custom_diff_target(model, prompt, token_x, token_y, backend):
        tokenizer = model.tokenizer
        idx_x = tokenizer.encode(token_x, add_special_tokens=False)[-1]
        idx_y = tokenizer.encode(token_y, add_special_tokens=False)[-1]
        vec_x, vec_y = get_unembed_vecs(model, [idx_x, idx_y], backend)
        diff_vec = vec_x - vec_y
        probs = _get_last_position_probs(model, prompt)
        diff_prob = max((probs[idx_x] - probs[idx_y]).abs().item(), 1e-6)
        custom_target = CustomTarget(
            token_str=f"logit({token_x})-logit({token_y})",
            prob=diff_prob,
            vec=diff_vec,
        )
        return custom_target, idx_x, idx_y

    custom_target, _, _ = build_custom_diff_target(model, prompt, token_x, token_y, backend=backend)
    display_attribution_config(
        token_pairs=[(token_x, idx_x), (token_y, idx_y), ("Texas", idx_texas)],
        target_pairs=[("Logit diff", custom_target)],
    )

    graph_custom = attribute(
        prompt=prompt,
        model=model,
        attribution_targets=[custom_target],
        **attr_kwargs,
    )

    top_salient, scores_salient = get_top_features(graph_salient, n=10)
    top_str, scores_str = get_top_features(graph_str, n=10)
    top_custom, scores_custom = get_top_features(graph_custom, n=10)

    display_top_features_comparison(
        {
            "Salient Logits": top_salient,
            f"Strings [{token_x}, {token_y}]": top_str,
            f"Custom Fn ({custom_target.token_str})": top_custom,
        },
        scores_sets={
            "Salient Logits": scores_salient,
            f"Strings [{token_x}, {token_y}]": scores_str,
            f"Custom Fn ({custom_target.token_str})": scores_custom,
        },
        neuronpedia_model="gemma-2-2b",
    )

    input_ids = model.ensure_tokenized(prompt)
    original_logits, activations = model.get_activations(input_ids, sparse=True)

    display_token_probs(original_logits, key_ids, key_labels, title="Before amplification")

    intervention_tuples = [
        (layer, pos, feat_idx, 10.0 * activations[layer, pos, feat_idx])
        for (layer, pos, feat_idx) in top_custom
    ]

    new_logits, _ = model.feature_intervention(input_ids, intervention_tuples)

    display_token_probs(new_logits, key_ids, key_labels, title="After 10× amplification")

    orig_gap = (
        original_logits.squeeze(0)[-1, idx_x] - original_logits.squeeze(0)[-1, idx_y]
    ).item()
    new_gap = (new_logits.squeeze(0)[-1, idx_x] - new_logits.squeeze(0)[-1, idx_y]).item()
    print(f"logit(Austin) − logit(Dallas): {orig_gap:.4f} → {new_gap:.4f}")

    display_topk(prompt, original_logits, new_logits)
    # ---- end of cells ----

    shown = capsys.readouterr().out
    assert "Baseline probabilities" in shown and "top features" in shown
    native = circuitlab.ReplacementModel.from_pretrained(
        model_name, transcoder_name, dtype=torch.bfloat16
    )
    kwargs: dict[str, Any] = dict(batch_size=256, max_feature_nodes=8192, offload="cpu")
    ref_str = circuitlab.attribute(
        native, prompt, attribution_targets=["Austin", "Dallas"], **kwargs
    )
    for graph in (graph_str, graph_tensor):
        assert [t.vocab_idx for t in graph.logit_targets] == [idx_x, idx_y]
        torch.testing.assert_close(graph.adjacency_matrix, ref_str.adjacency_matrix)
    ref_diff = circuitlab.attribute(
        native, prompt, attribution_targets=[LogitDiff("Austin", "Dallas")], **kwargs
    )
    torch.testing.assert_close(graph_custom.adjacency_matrix, ref_diff.adjacency_matrix)
    assert len(graph_salient.logit_targets) >= 1
    ref_logits = feature_intervention(native, prompt, intervention_tuples).logits
    torch.testing.assert_close(new_logits[0], ref_logits)
