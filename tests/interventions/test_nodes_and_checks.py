"""Interventions by UI node ids and supernodes; circuit checks by ablation."""

from __future__ import annotations

import json

import pytest
import torch

from circuitlab.attribution import attribute
from circuitlab.graph import prune_graph
from circuitlab.interventions import (
    NodeRef,
    ablate_nodes,
    ablate_outside,
    feature_intervention,
    node_interventions,
    parse_node_id,
    read_qparams,
    resolve_node,
    supernode_members,
)

from conftest import PROMPT, build


@pytest.fixture(scope="module")
def model_and_graph():
    rm = build("gemma2", "clt_skip")
    return rm, attribute(rm, PROMPT, max_n_logits=3, desired_logit_prob=0.99)


def test_node_ids_name_features_and_error_nodes() -> None:
    assert parse_node_id("12_4031_5") == NodeRef("feature", 12, 5, 4031)
    assert parse_node_id("3_-1_2") == NodeRef("error", 3, 2)
    assert NodeRef("error", 3, 2).node_id == "3_-1_2"
    for bad, message in [
        ("E_17_3", "token"),
        ("12_4031", "cannot read node id"),
        ("a_b_c", "cannot read node id"),
        ("1_-2_0", "cannot read node id"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_node_id(bad)


def test_node_indices_and_ids_resolve_to_the_same_nodes(model_and_graph) -> None:
    _, g = model_and_graph
    for i in [0, g.n_selected - 1, g.error_node(1, 3)]:
        ref = resolve_node(i, g)
        assert resolve_node(ref.node_id, g) == ref
    with pytest.raises(ValueError, match="logit node"):
        resolve_node(f"{g.n_layers + 1}_{g.logit_token_ids[0]}_{g.n_pos - 1}", g)
    with pytest.raises(ValueError, match="token"):
        resolve_node(g.token_node(2), g)
    with pytest.raises(ValueError, match="outside the graph"):
        resolve_node(f"0_1_{g.n_pos}", g)
    with pytest.raises(ValueError, match="needs its graph"):
        resolve_node(0)


def test_node_interventions_group_features_and_scale_them(model_and_graph) -> None:
    rm, g = model_and_graph
    coords = g.selected_feature_coords.tolist()
    layer, pos, _ = coords[0]
    same = [c for c in coords if c[0] == layer and c[1] == pos][:3]
    ids = [f"{lay}_{f}_{p}" for lay, p, f in same] + ["1_-1_2"]
    ivs = node_interventions(ids, scale=-2.0)
    assert len(ivs) == 2 and ivs[0].op == "scale" and ivs[1].feature is None
    # One grouped intervention equals the same interventions one by one.
    one_by_one = [(lay, p, f, -2.0 * a) for (lay, p, f), a in _values(rm, same)]
    a = feature_intervention(rm, PROMPT, ivs[:1]).logits
    b = feature_intervention(rm, PROMPT, one_by_one).logits
    torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="not both"):
        node_interventions(ids, value=1.0, scale=2.0)


def _values(rm, coords):
    acts = rm.get_activations(PROMPT).dense()
    return [((lay, p, f), float(acts[lay, p, f])) for lay, p, f in coords]


def test_supernodes_come_from_saved_qparams(tmp_path) -> None:
    graph_json = {
        "qParams": {
            "pinnedIds": "0_3_1,1_-1_2",
            "supernodes": [["Texas", "0_3_1", "0_4_1"], ["say Austin", "1_7_5"]],
        }
    }
    path = tmp_path / "g.json"
    path.write_text(json.dumps(graph_json))
    pinned, supers = read_qparams(path)
    assert pinned == ["0_3_1", "1_-1_2"]
    assert supernode_members(supers, ["Texas", "say Austin"]) == ["0_3_1", "0_4_1", "1_7_5"]
    with pytest.raises(ValueError, match="no supernode labelled 'Ohio'; known: 'Texas'"):
        supernode_members(supers, ["Ohio"])


def test_ablating_nodes_reports_the_target_and_top_k(model_and_graph) -> None:
    rm, g = model_and_graph
    top = g.edges[g.n_selected, : g.n_selected].topk(3).indices.tolist()
    with rm.zero_softcap():  # graph logits are pre-softcap
        check = ablate_nodes(rm, g, top, constrained_layers=range(rm.n_layers))
    assert check.target.token_id == g.logit_targets[0].vocab_idx
    assert check.target.rank_before == 0 and len(check.top_before) == 10
    # Direct effects: ablating features moves the de-meaned target logit by minus their edges.
    moved = check.logits_after - check.logits_before
    moved = moved - moved.mean()
    expected = -g.edges[g.n_selected, top].sum()
    assert abs(float(moved[check.target.token_id]) - float(expected)) < 1e-5
    assert "target" in check.report() and "->" in check.report()


def test_ablating_nothing_outside_the_whole_graph_changes_nothing(model_and_graph) -> None:
    rm, g = model_and_graph
    everything = torch.ones(g.n_nodes, dtype=torch.bool)
    check = ablate_outside(rm, g, everything)
    assert check.n_interventions == 0 and check.logit_change == 0.0


def test_ablating_outside_a_pruned_circuit_ablates_the_rest(model_and_graph) -> None:
    rm, g = model_and_graph
    kept = prune_graph(g, node_threshold=0.5, edge_threshold=0.9).node_mask
    check = ablate_outside(rm, g, kept)
    assert check.n_interventions > 0
    assert check.logits_after.shape == check.logits_before.shape
    with pytest.raises(ValueError, match="bool node mask"):
        ablate_outside(rm, g, kept.float())
