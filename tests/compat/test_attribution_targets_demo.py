"""circuit-tracer's ``attribution_targets_demo`` code cells after ``install()``, on the tiny
model: the model, the token strings (the tiny vocabulary's words instead of Gemma's ``▁Austin``
pieces; two capital/state pairs for the semantic target instead of four US ones), the free
port and the Colab set-up are the only changes. Every code cell runs: salient, string, tensor,
logit-difference and semantic-concept targets, amplification, progressive ablation, ``to_pt``,
``create_graph_files`` and ``serve``. Graphs and interventions are compared with circuitlab's
native ``attribute`` (``LogitDiff``, ``CustomTarget``, token targets) and
``feature_intervention``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
import torch

import circuitlab
from circuitlab.attribution import CustomTarget as NativeCustomTarget
from circuitlab.attribution import LogitDiff
from circuitlab.interventions import feature_intervention
from circuitlab.server.running import free_port


@pytest.mark.usefixtures("installed")
def test_attribution_targets_demo(
    disk_model: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # the cells write relative paths
    model_name, transcoder_name = disk_model
    IN_COLAB = False

    # ---- the notebook's cells ----
    from functools import partial

    from circuit_tracer import ReplacementModel, attribute  # pyright: ignore[reportMissingImports]
    from circuit_tracer.attribution.targets import (  # pyright: ignore[reportMissingImports]
        CustomTarget,
    )
    from circuit_tracer.utils import create_graph_files  # pyright: ignore[reportMissingImports]
    from circuit_tracer.utils.demo_utils import (  # pyright: ignore[reportMissingImports]
        cleanup_cuda,
        display_ablation_chart,
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

    def build_semantic_concept_target(
        model, prompt, group_a_tokens, group_b_tokens, label, backend
    ):
        assert len(group_a_tokens) == len(group_b_tokens), (
            "Groups must have equal length for paired differences"
        )
        tokenizer = model.tokenizer
        ids_a = [tokenizer.encode(t, add_special_tokens=False)[-1] for t in group_a_tokens]
        ids_b = [tokenizer.encode(t, add_special_tokens=False)[-1] for t in group_b_tokens]

        vecs_a = get_unembed_vecs(model, ids_a, backend)
        vecs_b = get_unembed_vecs(model, ids_b, backend)

        # Vector rejection: for each pair, remove the state-direction component
        residuals = []
        for va, vb in zip(vecs_a, vecs_b):  # noqa: B905
            va_f, vb_f = va.float(), vb.float()
            proj = (va_f @ vb_f) / (vb_f @ vb_f) * vb_f  # proj_{state}(capital)
            residuals.append((va_f - proj).to(va.dtype))

        direction = torch.stack(residuals).mean(0)

        # Weight = average probability of group-A tokens, floored at 1e-6
        probs = _get_last_position_probs(model, prompt)
        avg_prob = max(sum(probs[i].item() for i in ids_a) / len(ids_a), 1e-6)

        return CustomTarget(token_str=label, prob=avg_prob, vec=direction)

    custom_target, _, _ = build_custom_diff_target(model, prompt, token_x, token_y, backend=backend)

    # Build the semantic concept target: Capital Cities − States
    capitals = ["Austin", "Paris"]  # the notebook's four US pairs; the tiny vocabulary has two
    states = ["Texas", "France"]
    semantic_target = build_semantic_concept_target(
        model,
        prompt,
        capitals,
        states,
        label="Capitals − States",
        backend=backend,
    )

    display_attribution_config(
        token_pairs=[(token_x, idx_x), (token_y, idx_y), ("Texas", idx_texas)],
        target_pairs=[("Logit diff", custom_target), ("Semantic concept", semantic_target)],
    )

    graph_custom = attribute(
        prompt=prompt,
        model=model,
        attribution_targets=[custom_target],
        **attr_kwargs,
    )

    graph_semantic = attribute(
        prompt=prompt,
        model=model,
        attribution_targets=[semantic_target],
        **attr_kwargs,
    )
    cleanup_cuda()

    top_salient, scores_salient = get_top_features(graph_salient, n=10)
    top_str, scores_str = get_top_features(graph_str, n=10)
    top_custom, scores_custom = get_top_features(graph_custom, n=10)
    top_semantic, scores_semantic = get_top_features(graph_semantic, n=10)

    display_top_features_comparison(
        {
            "Salient Logits": top_salient,
            f"Strings [{token_x}, {token_y}]": top_str,
            f"Custom Fn ({custom_target.token_str})": top_custom,
            f"Semantic Concept ({semantic_target.token_str})": top_semantic,
        },
        scores_sets={
            "Salient Logits": scores_salient,
            f"Strings [{token_x}, {token_y}]": scores_str,
            f"Custom Fn ({custom_target.token_str})": scores_custom,
            f"Semantic Concept ({semantic_target.token_str})": scores_semantic,
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

    display_token_probs(
        original_logits, key_ids, key_labels, title="Before amplification (semantic)"
    )

    orig_gap = (
        original_logits.squeeze(0)[-1, idx_x] - original_logits.squeeze(0)[-1, idx_y]
    ).item()

    sem_amp_tuples_2 = [
        (layer, pos, feat_idx, 2.0 * activations[layer, pos, feat_idx])
        for (layer, pos, feat_idx) in top_semantic
    ]
    sem_amp_logits_2, _ = model.feature_intervention(input_ids, sem_amp_tuples_2)
    display_token_probs(
        sem_amp_logits_2, key_ids, key_labels, title="After 2× amplification (semantic)"
    )
    sem_gap_2 = (
        sem_amp_logits_2.squeeze(0)[-1, idx_x] - sem_amp_logits_2.squeeze(0)[-1, idx_y]
    ).item()
    print(f"logit(Austin) − logit(Dallas): {orig_gap:.4f} → {sem_gap_2:.4f}  [2×]")
    display_topk(prompt, original_logits, sem_amp_logits_2)

    sem_amp_tuples_10 = [
        (layer, pos, feat_idx, 10.0 * activations[layer, pos, feat_idx])
        for (layer, pos, feat_idx) in top_semantic
    ]
    sem_amp_logits_10, _ = model.feature_intervention(input_ids, sem_amp_tuples_10)
    display_token_probs(
        sem_amp_logits_10, key_ids, key_labels, title="After 10× amplification (semantic)"
    )
    sem_gap_10 = (
        sem_amp_logits_10.squeeze(0)[-1, idx_x] - sem_amp_logits_10.squeeze(0)[-1, idx_y]
    ).item()
    print(f"logit(Austin) − logit(Dallas): {orig_gap:.4f} → {sem_gap_10:.4f}  [10×]")
    display_topk(prompt, original_logits, sem_amp_logits_10)

    from IPython.display import Markdown, display

    # Progressive ablation: zero out increasing numbers of custom-target features
    probs_base = torch.softmax(original_logits.squeeze(0)[-1].float(), dim=-1)
    groups = {
        "baseline": {
            "P(Austin)": probs_base[idx_x].item(),
            "P(Dallas)": probs_base[idx_y].item(),
            "P(Texas)": probs_base[idx_texas].item(),
        }
    }
    logit_diffs = {"baseline": orig_gap}

    ablation_results = {}
    for n in [10, 100]:
        top_n, _ = get_top_features(graph_custom, n=n)
        abl_tuples = [
            (layer, pos, feat_idx, 0.0 * activations[layer, pos, feat_idx])
            for (layer, pos, feat_idx) in top_n
        ]
        abl_logits, _ = model.feature_intervention(input_ids, abl_tuples)
        probs_abl = torch.softmax(abl_logits.squeeze(0)[-1].float(), dim=-1)
        gap = (abl_logits.squeeze(0)[-1, idx_x] - abl_logits.squeeze(0)[-1, idx_y]).item()
        label = f"top-{n}"
        groups[label] = {
            "P(Austin)": probs_abl[idx_x].item(),
            "P(Dallas)": probs_abl[idx_y].item(),
            "P(Texas)": probs_abl[idx_texas].item(),
        }
        logit_diffs[label] = gap
        ablation_results[n] = abl_logits

    display_ablation_chart(
        groups,
        logit_diffs=logit_diffs,
        title="Custom-target ablation: token probabilities & logit gap",
    )

    strongest_n = max(ablation_results.keys())
    display(Markdown(f"#### Top-{strongest_n} ablation — full prediction shift"))
    display_topk(prompt, original_logits, ablation_results[strongest_n])

    # Progressive ablation of semantic-target features
    sem_groups = {
        "baseline": {
            "P(Austin)": probs_base[idx_x].item(),
            "P(Dallas)": probs_base[idx_y].item(),
            "P(Texas)": probs_base[idx_texas].item(),
        }
    }
    sem_logit_diffs = {"baseline": orig_gap}

    sem_ablation_results = {}
    for n in [10, 100]:
        top_n, _ = get_top_features(graph_semantic, n=n)
        abl_tuples = [
            (layer, pos, feat_idx, 0.0 * activations[layer, pos, feat_idx])
            for (layer, pos, feat_idx) in top_n
        ]
        abl_logits, _ = model.feature_intervention(input_ids, abl_tuples)
        probs_abl = torch.softmax(abl_logits.squeeze(0)[-1].float(), dim=-1)
        gap = (abl_logits.squeeze(0)[-1, idx_x] - abl_logits.squeeze(0)[-1, idx_y]).item()
        label = f"top-{n}"
        sem_groups[label] = {
            "P(Austin)": probs_abl[idx_x].item(),
            "P(Dallas)": probs_abl[idx_y].item(),
            "P(Texas)": probs_abl[idx_texas].item(),
        }
        sem_logit_diffs[label] = gap
        sem_ablation_results[n] = abl_logits

    display_ablation_chart(
        sem_groups,
        logit_diffs=sem_logit_diffs,
        title="Semantic-target ablation: token probabilities & logit gap",
    )

    strongest_n = max(sem_ablation_results.keys())
    display(Markdown(f"#### Top-{strongest_n} semantic ablation — full prediction shift"))
    display_topk(prompt, original_logits, sem_ablation_results[strongest_n])

    graph_dir = Path("attribution_targets_demo/graphs")
    graph_dir.mkdir(parents=True, exist_ok=True)
    graph_path = graph_dir / "dallas_austin_semantic_concept_graph.pt"
    graph_semantic.to_pt(graph_path)

    slug = "dallas-austin-semantic-concept"
    graph_file_dir = "attribution_targets_demo/graph_files"
    node_threshold, edge_threshold = 0.8, 0.98

    create_graph_files(
        graph_or_path=graph_path,
        slug=slug,
        output_path=graph_file_dir,
        node_threshold=node_threshold,
        edge_threshold=edge_threshold,
    )

    from circuit_tracer.frontend.local_server import serve  # pyright: ignore[reportMissingImports]

    port = free_port()  # the notebook's 8046, made free for parallel test runs
    server = serve(data_dir="attribution_targets_demo/graph_files/", port=port)
    # ---- end of cells ----
    try:
        listed = json.loads(urlopen(f"http://127.0.0.1:{port}/data/graph-metadata.json").read())
    finally:
        server.stop()
    assert [g["slug"] for g in listed["graphs"]] == [slug]
    written = json.loads((tmp_path / graph_file_dir / f"{slug}.json").read_text())
    assert written["metadata"]["slug"] == slug

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

    # the semantic target: the rejection of each state's unembedding from its capital's
    unembed = native.unembed_weight.float()
    rows = [
        (unembed[tokenizer.encode(a)[-1]], unembed[tokenizer.encode(b)[-1]])
        for a, b in (("Austin", "Texas"), ("Paris", "France"))
    ]
    direction = torch.stack([a - (a @ b) / (b @ b) * b for a, b in rows]).mean(0)
    torch.testing.assert_close(semantic_target.vec.float(), direction, atol=1e-2, rtol=1e-2)
    ref_semantic = circuitlab.attribute(
        native,
        prompt,
        attribution_targets=[
            NativeCustomTarget("Capitals − States", semantic_target.prob, semantic_target.vec)
        ],
        **kwargs,
    )
    torch.testing.assert_close(graph_semantic.adjacency_matrix, ref_semantic.adjacency_matrix)
    # amplification and ablation: native interventions with the same feature values
    dense = native.get_activations(prompt).dense()
    for feats, scale, logits in (
        (top_semantic, 2.0, sem_amp_logits_2),
        (top_semantic, 10.0, sem_amp_logits_10),
        (get_top_features(graph_custom, n=100)[0], 0.0, ablation_results[100]),
        (get_top_features(graph_semantic, n=100)[0], 0.0, sem_ablation_results[100]),
    ):
        values = [(*f, scale * dense[f]) for f in feats]
        torch.testing.assert_close(logits[0], feature_intervention(native, prompt, values).logits)
    assert list(groups) == list(sem_groups) == ["baseline", "top-10", "top-100"]
    assert "Custom-target ablation" in shown and "Semantic-target ablation" in shown
    assert (tmp_path / graph_path).is_file()
