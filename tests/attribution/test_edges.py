"""Every edge of an attribution graph equals a perturbation of the frozen model, and the
completeness sum rule holds, on tiny random models of every family."""

from __future__ import annotations

import pytest
import torch

from circuitlab.attribution import attribute
from circuitlab.graph import Graph
from circuitlab.models.session import Plan
from circuitlab.replacement import ReplacementModel

from conftest import FAMILIES, PROMPT, TRANSCODER_KINDS, build
from perturb import direct_effects, frozen_plan, target_values


def _clean_sources(rm: ReplacementModel):
    ids = torch.tensor(PROMPT)
    _, cap = rm.capture(ids)
    tc = rm.transcoders
    reads, writes = cap.stacked_reads(), cap.stacked_writes()
    feats = tc.encode_sparse(reads)
    errors = writes - tc.decode_sparse(feats, reads)
    errors[:, 0] = 0
    return ids, cap, feats, errors


def _logit_vecs(rm: ReplacementModel, graph: Graph) -> torch.Tensor:
    U = rm.unembed_weight
    return U[graph.logit_token_ids] - U.mean(0)


def _check_edges(rm: ReplacementModel, graph: Graph) -> None:
    ids, _, feats, errors = _clean_sources(rm)
    assert torch.equal(graph.active_features, feats.indices)
    truth = direct_effects(rm, ids, feats, errors, _logit_vecs(rm, graph))
    n_cols = truth.shape[1]
    scale = truth.abs().max()
    assert scale > 0
    torch.testing.assert_close(graph.edges[:, :n_cols], truth, rtol=0, atol=1e-10 * float(scale))
    assert (graph.edges[:, n_cols:] == 0).all()


@pytest.mark.parametrize("kind", TRANSCODER_KINDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_edges_match_frozen_perturbation(family: str, kind: str) -> None:
    rm = build(family, kind)
    graph = attribute(rm, PROMPT, max_n_logits=4, desired_logit_prob=0.99, batch_size=7)
    assert graph.n_logits >= 1
    _check_edges(rm, graph)


@pytest.mark.parametrize("activation", ["relu", "jump_relu", "topk"])
@pytest.mark.parametrize("kind", ["plt_skip", "clt_skip"])
def test_edges_for_every_activation(activation: str, kind: str) -> None:
    rm = build("llama", kind, activation=activation)
    _check_edges(rm, attribute(rm, PROMPT, batch_size=16))


@pytest.mark.parametrize("family", ["gemma2", "gemma3"])
def test_edges_with_output_before_the_post_mlp_norm(family: str) -> None:
    rm = build(family, "plt_skip", output_hook="mlp.hook_out")
    _check_edges(rm, attribute(rm, PROMPT, batch_size=16))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["plt_skip", "clt_skip"])
def test_completeness_sum_rule(family: str, kind: str) -> None:
    """``pre_act(t) - b_enc(t) = sum_s A[t, s] + c(t)``, ``c(t)`` the bias-only value."""
    rm = build(family, kind)
    graph = attribute(rm, PROMPT, batch_size=32)
    ids, cap, feats, _ = _clean_sources(rm)
    lv = _logit_vecs(rm, graph)
    tc = rm.transcoders
    _, clean = rm.run(ids[None], Plan(record=True))
    assert clean is not None
    # transformers computes some norms in float32 even for float64 models, so the exact
    # (float64) reference is the frozen replay of the clean run; it matches the plain run to
    # float32 precision.
    actual = target_values(rm, rm.run(ids[None], frozen_plan(rm, clean))[1], feats, lv)
    plain = target_values(rm, clean, feats, lv)
    torch.testing.assert_close(actual, plain, rtol=0, atol=1e-5)

    # Every node value zero: features (decoders contribute b_dec only), errors and tokens.
    # The BOS position has no nodes: its MLP output is a constant (plus the live skip path).
    reads, writes = clean.stacked_reads(), clean.stacked_writes()

    def biases_only(layer: int, read: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        value = tc.decoder_bias(layer).to(read.dtype).expand_as(read[0]).clone()
        value[0] = writes[layer, 0]
        sk = tc.skip(layer, read[0])
        if sk is not None:
            value = value + sk
            value[0] -= tc.skip(layer, reads[layer, :1])[0]  # type: ignore[index]
        return value[None]

    plan = frozen_plan(rm, clean)
    plan.mlp_out = biases_only
    plan.embed = torch.zeros_like
    _, bias_cap = rm.run(ids[None], plan)
    constant = target_values(rm, bias_cap, feats, lv)
    torch.testing.assert_close(graph.edges.sum(1) + constant, actual, rtol=0, atol=1e-9)


def test_batch_size_does_not_change_the_graph() -> None:
    rm = build("qwen3", "clt_skip")
    a = attribute(rm, PROMPT, batch_size=1)
    b = attribute(rm, PROMPT, batch_size=1000)
    torch.testing.assert_close(a.edges, b.edges, rtol=0, atol=1e-12)


def test_partial_graph_under_max_feature_nodes() -> None:
    rm = build("gemma2", "plt_skip")
    full = attribute(rm, PROMPT, batch_size=8)
    k = full.n_active // 3
    part = attribute(rm, PROMPT, max_feature_nodes=k, batch_size=4, update_interval=2)
    again = attribute(rm, PROMPT, max_feature_nodes=k, batch_size=4, update_interval=2)
    assert part.n_selected == k
    assert torch.equal(part.selected_features, again.selected_features)
    assert torch.equal(part.edges, again.edges)
    # Rows and columns kept are those of the full graph (other batch shapes: float64 rounding).
    sel = part.selected_features
    keep_cols = torch.cat([sel, torch.arange(full.n_active, full.n_nodes)])
    keep_rows = torch.cat([sel, torch.arange(full.n_active, full.n_rows)])
    expected = full.edges[keep_rows][:, keep_cols]
    atol = 1e-13 * float(expected.abs().max())
    torch.testing.assert_close(part.edges, expected, rtol=0, atol=atol)
    # The first features chosen are the ones with the largest direct effect on the logits.
    logit_rows = full.edges[full.n_selected :, : full.n_active]
    top = (logit_rows.abs() * full.logit_probabilities[:, None]).sum(0).argmax()
    assert top in sel


def test_salient_logits_cover_the_desired_probability() -> None:
    rm = build("llama")
    graph = attribute(rm, PROMPT, max_n_logits=10, desired_logit_prob=0.5)
    probs = graph.logit_probabilities
    assert probs.sum() >= 0.5 or graph.n_logits == 10
    assert probs[:-1].sum() < 0.5
    assert torch.all(probs[:-1] >= probs[1:])
