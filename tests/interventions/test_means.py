"""Mean ablation: reference means, and ablations that set nodes to them."""

from __future__ import annotations

import pytest
import torch

from circuitlab.attribution import attribute
from circuitlab.interventions import (
    AblationMeans,
    NodeRef,
    ablate_nodes,
    ablate_outside,
    ablation_means,
    feature_intervention,
    mean_ablations,
)
from circuitlab.models.session import Plan
from circuitlab.replacement import ReplacementModel

from conftest import PROMPT, build

REFERENCE = [PROMPT, [0, 4, 4, 11], [0, 13, 3, 5, 9, 3, 7, 6, 6, 6, 12], [0, 8]]
CASES = [("llama", "plt"), ("gemma2", "clt_skip")]


@pytest.fixture(scope="module", params=CASES, ids=["-".join(c) for c in CASES])
def tiny(request):
    torch.manual_seed(0)
    rm = build(*request.param)
    graph = attribute(rm, PROMPT, max_n_logits=3, desired_logit_prob=0.99)
    return rm, graph


def dense_decoders(rm: ReplacementModel, src: int, layer: int) -> torch.Tensor:
    """``W_dec[src -> layer]``: ``[d_transcoder, d_model]``."""
    tc = rm.transcoders
    return tc.decoder_rows(src, torch.arange(tc.d_transcoder))[:, layer - src]


def reconstruct(rm: ReplacementModel, acts: torch.Tensor, reads: torch.Tensor) -> torch.Tensor:
    """Transcoder outputs ``[layer, pos, d]`` from dense ``acts [layer, pos, feature]``."""
    tc = rm.transcoders
    out = []
    for layer in range(rm.n_layers):
        skip = tc.skip(layer, reads[layer])
        value = tc.decoder_bias(layer) + (skip if skip is not None else 0)
        for src in range(layer + 1) if tc.is_cross_layer else (layer,):
            value = value + acts[src] @ dense_decoders(rm, src, layer)
        out.append(value)
    return torch.stack(out)


def test_means_are_the_mean_activation_and_error_over_reference_positions(tiny) -> None:
    rm, _ = tiny
    means = ablation_means(rm, REFERENCE, batch_size=3)  # batches of unequal lengths
    feats, errors = [], []
    for prompt in REFERENCE:
        acts = rm.get_activations(prompt).dense()  # [layer, pos, feature], BOS zeroed
        _, cap = rm.capture(prompt)
        reads, writes = cap.stacked_reads(), cap.stacked_writes()
        feats.append(acts[:, 1:])
        errors.append((writes - reconstruct(rm, acts, reads))[:, 1:])
    assert means.n_prompts == 4 and means.n_positions == sum(len(p) - 1 for p in REFERENCE)
    assert means.features.shape == (rm.n_layers, rm.transcoders.d_transcoder)
    assert means.errors.shape == (rm.n_layers, rm.transcoders.d_model)
    torch.testing.assert_close(means.features, torch.cat(feats, 1).mean(1), atol=1e-12, rtol=0)
    torch.testing.assert_close(means.errors, torch.cat(errors, 1).mean(1), atol=1e-12, rtol=0)
    assert means.features.abs().sum() > 0 and means.errors.abs().sum() > 0

    with_bos = ablation_means(rm, REFERENCE, skip_bos=False, batch_size=1)
    assert with_bos.n_positions == sum(len(p) for p in REFERENCE) and not with_bos.skip_bos


def test_means_load_back_exactly_and_other_files_are_refused(tiny, tmp_path) -> None:
    rm, graph = tiny
    means = ablation_means(rm, REFERENCE)
    back = AblationMeans.load(means.save(tmp_path / "means.safetensors"))
    assert torch.equal(back.features, means.features) and torch.equal(back.errors, means.errors)
    assert (back.n_prompts, back.n_positions, back.skip_bos) == (4, means.n_positions, True)
    graph.save(tmp_path / "graph.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    for name in ("graph.safetensors", "junk.safetensors"):
        with pytest.raises(ValueError, match="is not an ablation means file"):
            AblationMeans.load(tmp_path / name)
    other = AblationMeans(torch.zeros(3, 32), torch.zeros(3, 16), 1, 1)
    with pytest.raises(ValueError, match=r"features \[3, 32\].*compute them with this model"):
        ablate_nodes(rm, graph, ["1_-1_3"], means=other)
    with pytest.raises(ValueError, match="no token position"):
        ablation_means(rm, [[0]])


def test_mean_ablating_nodes_at_their_own_value_changes_nothing(tiny) -> None:
    rm, graph = tiny
    # By causality, position 1 of PROMPT sees exactly the reference prompt PROMPT[:2], so the
    # means over that one position are every node's own value there.
    means = ablation_means(rm, [PROMPT[:2]])
    assert means.n_positions == 1
    d_t = rm.transcoders.d_transcoder
    nodes = [NodeRef("feature", layer, 1, f) for layer in range(rm.n_layers) for f in range(d_t)]
    nodes += [NodeRef("error", layer, 1) for layer in range(rm.n_layers)]
    check = ablate_nodes(rm, graph, nodes, means=means)
    torch.testing.assert_close(check.logits_after, check.logits_before, atol=1e-12, rtol=0)
    clean = feature_intervention(rm, PROMPT, []).logits  # the same in float64, every position
    after = feature_intervention(rm, PROMPT, mean_ablations(nodes, means)).logits
    assert after.dtype == torch.float64
    torch.testing.assert_close(after, clean, atol=1e-12, rtol=0)
    # The same nodes zero-ablated do move the logits (the identity above is not vacuous).
    zero = ablate_nodes(rm, graph, nodes)
    assert (zero.logits_after - zero.logits_before).abs().max() > 1e-3


def test_all_zero_means_are_zero_ablation(tiny) -> None:
    rm, graph = tiny
    tc = rm.transcoders
    zeros = AblationMeans(
        torch.zeros(rm.n_layers, tc.d_transcoder), torch.zeros(rm.n_layers, tc.d_model), 1, 1
    )
    circuit = [i for i in range(graph.n_selected) if i % 2] + [graph.error_offset + 3]
    a, b = ablate_nodes(rm, graph, circuit), ablate_nodes(rm, graph, circuit, means=zeros)
    assert torch.equal(a.logits_after, b.logits_after)
    # Outside a circuit, mean ablation also holds the features inactive on the prompt at their
    # mean (0 here), where zero ablation leaves them free to switch on under iterative patching;
    # with every layer constrained (direct effects) they cannot switch on, and the two agree.
    mask = torch.zeros(graph.n_nodes, dtype=torch.bool)
    mask[circuit] = True
    direct = range(rm.n_layers)
    for errors in (True, False):
        a = ablate_outside(rm, graph, mask, errors=errors, constrained_layers=direct)
        b = ablate_outside(rm, graph, mask, errors=errors, constrained_layers=direct, means=zeros)
        torch.testing.assert_close(b.logits_after, a.logits_after, atol=1e-12, rtol=0)


def run_at_means(rm: ReplacementModel, prompt: list[int], means: AblationMeans) -> torch.Tensor:
    """Logits ``[vocab]`` at the last position with every feature and error node after BOS at its
    mean, attention frozen at the clean prompt's: each layer's MLP output is written directly as
    ``b_dec + skip(read) + Σ_src means[src] @ W_dec[src -> layer] + mean error``."""
    tc = rm.transcoders
    ids, cap = rm.capture(prompt)

    def write(layer: int, read: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        value = tc.decoder_bias(layer) + means.errors[layer]
        for src in range(layer + 1) if tc.is_cross_layer else (layer,):
            value = value + means.features[src] @ dense_decoders(rm, src, layer)
        new = value.expand_as(out[0]).clone()
        skip = tc.skip(layer, read[0])
        if skip is not None:
            new = new + skip
        new[0] = out[0, 0]  # BOS is left alone
        return new[None]

    logits, _ = rm.run(ids[None], Plan(attention="replay", frozen=cap, mlp_out=write))
    return logits[0, -1]


def test_mean_ablating_outside_an_empty_circuit_runs_the_model_at_the_means(tiny) -> None:
    rm, graph = tiny
    means = ablation_means(rm, REFERENCE)
    empty = torch.zeros(graph.n_nodes, dtype=torch.bool)
    check = ablate_outside(rm, graph, empty, means=means)
    expected = run_at_means(rm, PROMPT, means).float()  # CircuitCheck holds float32 logits
    torch.testing.assert_close(check.logits_after, expected, atol=1e-6, rtol=0)
    zero = ablate_outside(rm, graph, empty)  # zero ablation lands elsewhere
    assert (zero.logits_after - expected).abs().max() > 1e-3
