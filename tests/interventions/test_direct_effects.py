"""In direct-effects mode an intervention changes every target by exactly its column of the
attribution graph, on tiny random models of every family and transcoder kind."""

from __future__ import annotations

import pytest
import torch

from circuitlab.attribution import attribute
from circuitlab.graph import Graph
from circuitlab.interventions import InterventionResult, feature_intervention, scale_error
from circuitlab.replacement import ReplacementModel

from conftest import FAMILIES, PROMPT, TRANSCODER_KINDS, build


def _direct(rm: ReplacementModel, interventions: list) -> InterventionResult:
    return feature_intervention(
        rm,
        PROMPT,
        interventions,
        constrained_layers=range(rm.n_layers),
        apply_activation_function=False,
    )


def _changes(graph: Graph, base: InterventionResult, new: InterventionResult) -> torch.Tensor:
    """``[n_sel + n_logits]``: change of each feature row's pre-activation and de-meaned logit."""
    assert isinstance(base.activations, torch.Tensor) and isinstance(new.activations, torch.Tensor)
    c = graph.selected_feature_coords
    feats = (new.activations - base.activations)[c[:, 0], c[:, 1], c[:, 2]]
    logits = new.logits[-1] - base.logits[-1]
    logits = logits - logits.mean()
    return torch.cat([feats, logits[graph.logit_token_ids]])


def _sample(n: int, k: int) -> list[int]:
    return sorted({0, n - 1, *torch.randperm(n)[:k].tolist()})


@pytest.mark.parametrize("kind", TRANSCODER_KINDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_doubling_a_node_changes_every_target_by_its_graph_column(family: str, kind: str) -> None:
    rm = build(family, kind)
    with rm.zero_softcap():  # graph logits are pre-softcap
        graph = attribute(rm, PROMPT, max_n_logits=4, desired_logit_prob=0.99)
        clean = rm.get_activations(PROMPT, apply_activation_function=False).dense()
        base = _direct(rm, [])
        scale = float(graph.edges.abs().max())
        for i in _sample(graph.n_selected, 1):
            layer, pos, feat = graph.selected_feature_coords[i].tolist()
            new = _direct(rm, [(layer, pos, feat, 2 * clean[layer, pos, feat])])
            got, want = _changes(graph, base, new), graph.edges[:, i].clone()
            got[i] = want[i] = 0  # the intervened feature itself was set, not driven
            torch.testing.assert_close(got, want, rtol=0, atol=1e-10 * scale)
        for layer, pos in [(0, 1), (rm.n_layers - 1, len(PROMPT) - 1)]:
            new = _direct(rm, [scale_error(layer, pos, 2.0)])
            want = graph.edges[:, graph.error_node(layer, pos)]
            torch.testing.assert_close(_changes(graph, base, new), want, rtol=0, atol=1e-10 * scale)
