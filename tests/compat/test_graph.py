"""Graphs through the compatibility layer: the same edges, masks and scores as circuitlab's,
with circuit-tracer's shapes, ``to`` semantics and ``.pt`` files."""

from __future__ import annotations

import pickletools
import sys
import types
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch

import circuitlab
from circuitlab.attribution import CustomTarget as NativeCustomTarget
from circuitlab.compat.circuit_tracer import Graph, ReplacementModel, attribute
from circuitlab.compat.circuit_tracer.attribution import CustomTarget
from circuitlab.compat.circuit_tracer.graph import compute_graph_scores, prune_graph
from circuitlab.replacement import ReplacementModel as NativeReplacementModel

from .conftest import PROMPT


@pytest.fixture(scope="module")
def graphs(
    model: ReplacementModel, native: NativeReplacementModel
) -> tuple[Graph, circuitlab.Graph]:
    return (
        attribute(PROMPT, model, batch_size=64),
        circuitlab.attribute(native, PROMPT, batch_size=64),
    )


def test_attribute_in_circuit_tracers_order_matches_native(
    graphs: tuple[Graph, circuitlab.Graph], model: ReplacementModel
) -> None:
    graph, ref = graphs
    assert isinstance(graph, Graph)
    torch.testing.assert_close(graph.adjacency_matrix, ref.adjacency_matrix, rtol=0, atol=0)
    assert graph.logit_targets == ref.logit_targets
    assert graph.cfg == model.cfg
    assert graph.scan == ref.transcoder_name
    swapped = attribute(model, PROMPT, batch_size=64)  # the order of circuit-tracer's README
    torch.testing.assert_close(swapped.adjacency_matrix, ref.adjacency_matrix, rtol=0, atol=0)


def test_custom_and_raw_tuple_targets_become_native_custom_targets(
    model: ReplacementModel, native: NativeReplacementModel
) -> None:
    vec = torch.randn(model.spec.d_model, dtype=torch.float64)
    ref = circuitlab.attribute(
        native, PROMPT, attribution_targets=[NativeCustomTarget("dir", 0.5, vec)], batch_size=64
    )
    for targets in ([CustomTarget(token_str="dir", prob=0.5, vec=vec)], [("dir", 0.5, vec)]):
        graph = attribute(PROMPT, model, attribution_targets=targets, batch_size=64)
        assert graph.logit_targets == ref.logit_targets
        torch.testing.assert_close(graph.adjacency_matrix, ref.adjacency_matrix, rtol=0, atol=0)


def test_prune_graph_masks_have_circuit_tracers_shapes(
    graphs: tuple[Graph, circuitlab.Graph],
) -> None:
    graph, ref = graphs
    n = graph.n_nodes
    node_mask, edge_mask, scores = prune_graph(graph, 0.8, 0.98)
    native = circuitlab.prune_graph(ref, 0.8, 0.98)
    assert node_mask.shape == (n,) and edge_mask.shape == (n, n)
    assert torch.equal(node_mask, native.node_mask)
    assert torch.equal(scores, native.cumulative_scores)
    targets, sources = edge_mask.nonzero().T
    assert torch.equal(targets, native.edge_targets)
    assert torch.equal(sources, native.edge_sources)
    # The dense mask holds the native [n_rows, N] mask at the rows' node indices.
    assert torch.equal(edge_mask[ref.row_nodes], native.edge_mask)


def test_graph_scores_are_a_plain_tuple(graphs: tuple[Graph, circuitlab.Graph]) -> None:
    graph, ref = graphs
    replacement, completeness = compute_graph_scores(graph)
    native = circuitlab.compute_graph_scores(ref)
    assert (replacement, completeness) == (native.replacement, native.completeness)


def test_constructor_takes_circuit_tracers_arguments_in_its_order(
    graphs: tuple[Graph, circuitlab.Graph],
) -> None:
    g = graphs[0]
    built = Graph(
        g.input_string,
        g.input_tokens,
        g.active_features,
        g.adjacency_matrix,
        g.cfg,
        g.selected_features,
        g.activation_values,
        g.logit_targets,
        g.logit_probabilities,
        "tiny-scan",
    )
    torch.testing.assert_close(built.adjacency_matrix, g.adjacency_matrix)
    assert built.cfg == g.cfg and built.scan == "tiny-scan"
    assert built.vocab_size == g.cfg.d_vocab  # vocab_size defaults to cfg.d_vocab
    assert torch.equal(prune_graph(built).edge_mask, prune_graph(g).edge_mask)
    assert built.to("meta") is built and built.input_tokens.is_meta
    bad = g.adjacency_matrix.clone()
    bad[g.n_selected, 0] = 1.0  # an error node with an input
    with pytest.raises(ValueError, match="error or token rows"):
        Graph(
            g.input_string, g.input_tokens, g.active_features, bad, g.cfg,
            g.selected_features, g.activation_values, g.logit_targets, g.logit_probabilities,
        )  # fmt: skip


def test_to_moves_in_place_and_returns_the_same_graph(
    graphs: tuple[Graph, circuitlab.Graph],
) -> None:
    graph = Graph.from_native(graphs[1])
    assert graph.to("meta") is graph  # circuit-tracer's in-place semantics
    assert graph.active_features.is_meta and graph.logit_probabilities.is_meta
    native = graphs[1]
    assert native.active_features.device.type == "cpu"  # tensors replaced, not modified
    moved = native.to("meta")
    assert moved is not native and type(moved) is circuitlab.Graph  # native: a moved copy
    assert moved.active_features.is_meta and native.active_features.device.type == "cpu"


def test_to_pt_round_trips_through_the_restricted_reader(
    graphs: tuple[Graph, circuitlab.Graph], tmp_path: Path
) -> None:
    graph = graphs[0]
    path = tmp_path / "graph.pt"
    graph.to_pt(path)
    back = Graph.from_pt(path)
    torch.testing.assert_close(back.adjacency_matrix, graph.adjacency_matrix.float())
    assert back.logit_targets == graph.logit_targets
    assert back.cfg == graph.cfg
    assert back.scan == graph.scan
    assert torch.equal(back.selected_features, graph.selected_features)
    assert torch.equal(back.input_tokens, graph.input_tokens)


def test_to_pt_names_only_circuit_tracers_two_records(
    graphs: tuple[Graph, circuitlab.Graph], tmp_path: Path
) -> None:
    path = tmp_path / "graph.pt"
    graphs[0].to_pt(path)
    with zipfile.ZipFile(path) as z:
        pickle_bytes = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    names = {
        str(arg).replace(" ", ".")
        for op, arg, _ in pickletools.genops(pickle_bytes)
        if op.name == "GLOBAL"
    }
    classes = {n for n in names if n.startswith("circuit_tracer")}
    assert classes == {
        "circuit_tracer.utils.tl_nnsight_mapping.UnifiedConfig",
        "circuit_tracer.attribution.targets.LogitTarget",
    }
    assert all(n.startswith(("circuit_tracer.", "torch.", "collections.")) for n in names)


# Stand-ins with circuit-tracer 0.5.0's class names, to read a file as its own reader does
# (a full unpickle, then Graph(**d)); circuit-tracer itself is not a test dependency.
class _CtLogitTarget(NamedTuple):
    token_str: str
    vocab_idx: int


@dataclass
class _CtUnifiedConfig:
    n_layers: int
    d_model: int
    d_head: int
    n_heads: int
    d_mlp: int
    d_vocab: int
    tokenizer_name: str
    model_name: str
    original_architecture: str
    n_key_value_heads: int | None = None
    dtype: Any | None = None


def test_to_pt_reads_as_circuit_tracer_reads_it(
    graphs: tuple[Graph, circuitlab.Graph], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph = graphs[0]
    path = tmp_path / "graph.pt"
    graph.to_pt(path)
    for name, attr, cls in (
        ("circuit_tracer.attribution.targets", "LogitTarget", _CtLogitTarget),
        ("circuit_tracer.utils.tl_nnsight_mapping", "UnifiedConfig", _CtUnifiedConfig),
    ):
        for parent in ("circuit_tracer", "circuit_tracer.attribution", "circuit_tracer.utils"):
            monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
        module = types.ModuleType(name)
        setattr(module, attr, cls)
        monkeypatch.setitem(sys.modules, name, module)
    data = torch.load(path, weights_only=False)  # what circuit-tracer's Graph.from_pt does
    assert isinstance(data["cfg"], _CtUnifiedConfig)
    assert data["cfg"].n_layers == graph.n_layers
    assert all(isinstance(t, _CtLogitTarget) for t in data["logit_targets"])
    n = graph.n_nodes
    assert data["adjacency_matrix"].shape == (n, n)
    assert data["activation_values"].shape == (graph.n_active,)


def test_influence_helpers_match_the_power_series(graphs: tuple[Graph, circuitlab.Graph]) -> None:
    from circuitlab.compat.circuit_tracer.graph import (
        compute_edge_influence,
        compute_node_influence,
        find_threshold,
        normalize_matrix,
    )

    graph = graphs[0]
    A = graph.adjacency_matrix.double()
    w = torch.zeros(A.shape[0], dtype=A.dtype)
    w[-graph.n_logits :] = graph.logit_probabilities.to(w)
    a_hat = normalize_matrix(A)
    eye = torch.eye(A.shape[0], dtype=A.dtype)
    expected = w @ (torch.linalg.inv(eye - a_hat) - eye)
    torch.testing.assert_close(compute_node_influence(A, w), expected)
    torch.testing.assert_close(compute_edge_influence(A, w), a_hat * (expected + w)[:, None])
    scores = expected.clamp(min=0)
    cut = find_threshold(scores, 0.8)
    kept = scores[scores >= cut].sum() / scores.sum()
    assert kept >= 0.8 and (scores[scores > cut].sum() / scores.sum()) < 0.8


def test_partial_influences_from_rows_match_the_whole_matrix(
    graphs: tuple[Graph, circuitlab.Graph],
) -> None:
    from circuitlab.compat.circuit_tracer.graph import (
        compute_node_influence,
        compute_partial_influences,
    )

    graph = graphs[0]
    A = graph.adjacency_matrix.double()
    w = torch.zeros(A.shape[0], dtype=A.dtype)
    w[-graph.n_logits :] = graph.logit_probabilities.to(w)
    has_inputs = torch.nonzero(A.abs().sum(1)).flatten()  # circuit-tracer's rows: nodes with inputs
    partial = compute_partial_influences(
        A[has_inputs], graph.logit_probabilities, has_inputs, device="cpu"
    )
    torch.testing.assert_close(partial, compute_node_influence(A, w))
    with pytest.raises(RuntimeError):
        compute_partial_influences(A[has_inputs], graph.logit_probabilities, has_inputs, 1, "cpu")


def test_attribution_targets_resolve_as_attribute_does(
    model: ReplacementModel, graphs: tuple[Graph, circuitlab.Graph]
) -> None:
    from circuitlab.compat.circuit_tracer.attribution import AttributionTargets

    logits, _ = model.get_activations(PROMPT)
    unembed = model.unembed_weight.T  # TransformerLens' [d_model, vocab]
    salient = AttributionTargets(None, logits[0, -1], unembed, model.tokenizer)
    assert salient.logit_targets == graphs[0].logit_targets
    torch.testing.assert_close(salient.logit_probabilities, graphs[0].logit_probabilities)
    vec = torch.ones(model.spec.d_model, dtype=torch.float64)
    custom = AttributionTargets([("x", 0.25, vec)], logits[0, -1], unembed.T, model.tokenizer)
    assert custom.tokens == ["x"] and len(custom) == 1
    assert int(custom.token_ids[0]) >= custom.vocab_size  # a virtual index
    torch.testing.assert_close(custom.logit_vectors[0], vec)
