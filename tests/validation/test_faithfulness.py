"""Faithfulness curves on a tiny random model: exact limits, pinned nodes, files."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from circuitlab.attribution import attribute
from circuitlab.graph.export import node_ids
from circuitlab.validation import faithfulness, plot_faithfulness

from conftest import PROMPT, build


@pytest.fixture(scope="module")
def tiny():
    rm = build("llama", "plt")
    graph = attribute(rm, PROMPT, max_n_logits=3, desired_logit_prob=0.99)
    assert graph.n_selected == graph.n_active  # every active feature is a node
    result = faithfulness(rm, graph, [1.0, 0.8], edge_threshold=1.0, slug="tiny")
    return rm, graph, result


def test_the_whole_graph_is_sufficient_and_ablating_it_ablates_everything(tiny) -> None:
    _, _, result = tiny
    whole = result.points[-1]
    assert whole.node_threshold == 1.0
    # Ablating what lies outside the full graph (only nodes without influence) changes nothing.
    assert whole.sufficiency.logit == pytest.approx(result.clean.logit, abs=1e-9)
    assert whole.sufficiency.effect == pytest.approx(1.0)
    assert whole.necessity.logit == pytest.approx(result.all_ablated.logit, abs=1e-9)
    assert whole.necessity.effect == pytest.approx(1.0)
    assert [p.node_threshold for p in result.points] == [0.8, 1.0]  # measured ascending
    assert result.points[0].n_features <= whole.n_features


def test_ablating_every_feature_leaves_the_error_and_token_logit(tiny) -> None:
    rm, graph, _ = tiny
    direct = faithfulness(rm, graph, [0.8], constrained_layers=range(rm.n_layers), errors=False)
    assert direct.mode == "direct"
    # In the local replacement model the de-meaned target logit is the sum of its edges plus a
    # constant; without features only the error and token edges remain.
    features_in = float(graph.edges[graph.n_selected, : graph.n_selected].sum())
    expected = direct.clean.logit_demeaned - features_in
    assert direct.all_ablated.logit_demeaned == pytest.approx(expected, abs=1e-6)


def test_a_pinned_subgraph_is_measured_like_the_same_circuit(tiny) -> None:
    rm, graph, result = tiny
    point = result.points[0]
    pinned = faithfulness(rm, graph, [0.8], edge_threshold=1.0, pinned=point.node_ids).pinned
    assert pinned is not None and pinned.node_ids == point.node_ids
    assert pinned.necessity == point.necessity and pinned.sufficiency == point.sufficiency
    assert pinned.replacement == pytest.approx(point.replacement)
    assert pinned.completeness == pytest.approx(point.completeness)
    with pytest.raises(ValueError, match="'0_9999_3' is not a node of this graph"):
        faithfulness(rm, graph, [0.8], pinned=["0_9999_3"])


def test_the_result_file_and_plot(tiny, tmp_path) -> None:
    _, graph, result = tiny
    data = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert data["kind"] == "circuitlab.faithfulness" and "metadata" not in data
    assert data["target"]["token_id"] == graph.logit_targets[0].vocab_idx
    assert set(data["points"][0]) >= {"node_threshold", "n_features", "n_errors", "n_edges",
                                      "replacement", "completeness", "necessity", "sufficiency",
                                      "node_ids"}  # fmt: skip
    assert set(data["points"][1]["node_ids"]) <= set(node_ids(graph))
    assert result.save(tmp_path / "tiny.faithfulness.json").is_file()

    svg = plot_faithfulness(result, tmp_path / "curves.svg")
    root = ET.parse(svg).getroot()
    lines = root.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 2 * 4 + 2  # logit and prob: 2 curves + 2 references; 2 scores
    with pytest.raises(ValueError, match=".svg or .png"):
        plot_faithfulness(result, tmp_path / "curves.pdf")


def test_png_plots_use_matplotlib_when_installed(tiny, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    _, _, result = tiny
    png = plot_faithfulness(result, tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
