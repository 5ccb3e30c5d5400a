"""circuit-tracer's README quick start and ``attribute_demo`` cells, run unmodified except
for the model and transcoders they load (the tiny ones on disk instead of hub models), after
``circuitlab.compat.install()``; each checked against circuitlab's native results.

The README cells are circuit-tracer 0.5.0's (its PyPI description); the ``attribute_demo``
cells are the notebook's code cells (its Colab set-up cell and the IPython ``IFrame`` display
left out).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import circuitlab


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # the cells write relative paths
    return tmp_path


@pytest.mark.usefixtures("installed")
def test_readme_quick_start(disk_model: tuple[str, str], workdir: Path) -> None:
    model_name, transcoder_set = disk_model
    # ---- the README's cell; hub names replaced by the tiny model's folders ----
    from circuit_tracer import Graph, ReplacementModel, attribute  # pyright: ignore[reportMissingImports]

    # Load a model with transcoders
    model = ReplacementModel.from_pretrained(model_name, transcoder_set)

    # Find the circuit for a prompt
    graph = attribute(model, "The capital of France is")

    # Save for later analysis
    graph.to_pt("france_capital.pt")

    # Or load an existing graph
    graph = Graph.from_pt("france_capital.pt")
    # ---- end of cell ----

    native = circuitlab.attribute(
        circuitlab.ReplacementModel.from_pretrained(model_name, transcoder_set),
        "The capital of France is",
        batch_size=512,
    )
    torch.testing.assert_close(graph.adjacency_matrix, native.adjacency_matrix)
    assert graph.logit_targets == native.logit_targets
    assert (workdir / "france_capital.pt").is_file()


@pytest.mark.usefixtures("installed")
def test_readme_backend_choice(disk_model: tuple[str, str]) -> None:
    model_name, transcoder_set = disk_model
    from circuit_tracer import ReplacementModel  # pyright: ignore[reportMissingImports]

    tl = ReplacementModel.from_pretrained(model_name, transcoder_set)
    nn = ReplacementModel.from_pretrained(model_name, transcoder_set, backend="nnsight")
    prompt = "The capital of France is"
    assert torch.equal(tl.get_activations(prompt)[0], nn.get_activations(prompt)[0])


@pytest.mark.usefixtures("installed")
def test_attribute_demo(disk_model: tuple[str, str], workdir: Path) -> None:
    model_name, transcoder_name = disk_model
    # ---- attribute_demo's cells; model names replaced ----
    from circuit_tracer import ReplacementModel, attribute  # pyright: ignore[reportMissingImports]
    from circuit_tracer.utils import create_graph_files  # pyright: ignore[reportMissingImports]

    model = ReplacementModel.from_pretrained(
        model_name, transcoder_name, dtype=torch.bfloat16, backend="nnsight"
    )

    prompt = "The capital of state containing Dallas is"  # What you want to get the graph for
    max_n_logits = 10
    desired_logit_prob = 0.95
    max_feature_nodes = 8192
    batch_size = 256
    offload = "cpu"
    verbose = True

    graph = attribute(
        prompt=prompt,
        model=model,
        max_n_logits=max_n_logits,
        desired_logit_prob=desired_logit_prob,
        batch_size=batch_size,
        max_feature_nodes=max_feature_nodes,
        offload=offload,
        verbose=verbose,
    )

    graph_dir = "graphs"
    graph_name = "example_graph.pt"
    graph_dir = Path(graph_dir)
    graph_dir.mkdir(exist_ok=True)
    graph_path = graph_dir / graph_name
    graph.to_pt(graph_path)

    slug = "dallas-austin"
    graph_file_dir = "./graph_files"
    node_threshold = 0.8
    edge_threshold = 0.98

    create_graph_files(
        graph_or_path=graph_path,
        slug=slug,
        output_path=graph_file_dir,
        node_threshold=node_threshold,
        edge_threshold=edge_threshold,
    )

    from circuit_tracer.frontend.local_server import serve  # pyright: ignore[reportMissingImports]

    port = _free_port()  # the notebook's fixed port, made free for parallel test runs
    server = serve(data_dir="./graph_files/", port=port)
    server.stop()

    from circuit_tracer.graph import prune_graph  # pyright: ignore[reportMissingImports]

    pruned = prune_graph(graph, node_threshold=0.7, edge_threshold=0.95)
    # ---- end of cells ----

    native_model = circuitlab.ReplacementModel.from_pretrained(
        model_name, transcoder_name, dtype=torch.bfloat16
    )
    native = circuitlab.attribute(native_model, prompt, batch_size=256, max_feature_nodes=8192)
    torch.testing.assert_close(graph.adjacency_matrix, native.adjacency_matrix)
    data = json.loads((workdir / "graph_files" / f"{slug}.json").read_text())
    assert data["metadata"]["slug"] == slug
    native_pruned = circuitlab.prune_graph(native, 0.7, 0.95)
    assert torch.equal(pruned.node_mask, native_pruned.node_mask)
    assert int(pruned.edge_mask.sum()) == native_pruned.n_edges
    kept = circuitlab.prune_graph(native, node_threshold, edge_threshold).node_mask
    features = {
        n["node_id"] for n in data["nodes"] if n["feature_type"] == "cross layer transcoder"
    }
    assert len(features) <= int(kept[: native.n_selected].sum())


def _free_port() -> int:
    from circuitlab.server.running import free_port

    return free_port()
