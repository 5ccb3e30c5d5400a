"""Saving and loading graphs: exact round trip, atomic writes, clear errors on bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import circuitlab.graph.storage as storage
from circuitlab.graph import Graph, LogitTarget, load_graph

from .builders import hand_graph, random_graph

TENSORS = (
    "input_tokens",
    "logit_probabilities",
    "active_features",
    "activation_values",
    "selected_features",
)


def _rich_graph() -> Graph:
    g = hand_graph(torch.float64)
    g.input_string = "Ünïcødé prompt → «x»"
    g.logit_targets[1] = LogitTarget("logit(a)-logit(b)", g.vocab_size)
    g.transcoder_name = "tiny/plt"
    g.settings = {"max_n_logits": 10, "desired_logit_prob": 0.95, "dtype": "float64", "nest": [1]}
    g.feature_labels = {0: "say Austin", 2: "Texas"}
    return g


def assert_same_graph(a: Graph, b: Graph) -> None:
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if name == "edge_blocks":
            assert x.equal(y), name
        elif isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor)
            assert x.dtype == y.dtype, name
            assert torch.equal(x, y), name
        else:
            assert x == y, name
            assert type(x) is type(y), name


@pytest.mark.parametrize("make", [_rich_graph, lambda: random_graph(0)])
def test_round_trip_keeps_every_field_exactly(tmp_path: Path, make) -> None:
    g = make()
    path = tmp_path / "g.safetensors"
    g.save(path)
    loaded = Graph.load(path)
    assert_same_graph(g, loaded)
    assert all(isinstance(t, LogitTarget) for t in loaded.logit_targets)


def test_round_trip_of_graph_without_features(tmp_path: Path) -> None:
    g = random_graph(1, n_features=0)
    g.save(tmp_path / "empty.safetensors")
    assert_same_graph(g, load_graph(tmp_path / "empty.safetensors"))


def test_failed_write_leaves_existing_file_intact(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "g.safetensors"
    g = hand_graph()
    g.save(path)
    before = path.read_bytes()

    def broken_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(storage, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        random_graph(2).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["g.safetensors"]  # no temp file left


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a readable circuitlab graph"),
        (b"\x00" * 64, "not a readable circuitlab graph"),
        (b"this is plainly not a graph file at all", "not a readable circuitlab graph"),
    ],
)
def test_corrupt_file_gives_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_graph(path)


def test_truncated_file_gives_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    random_graph(0).save(path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="not a readable circuitlab graph"):
        load_graph(path)


def test_other_safetensors_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.safetensors"
    save_file({"W_enc": torch.zeros(2, 2)}, str(path))
    with pytest.raises(ValueError, match="not a circuitlab graph"):
        load_graph(path)


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    g = hand_graph()
    path = tmp_path / "future.safetensors"
    tensors = {name: getattr(g, name).contiguous() for name in TENSORS}
    meta = {"format": "circuitlab.graph", "format_version": "99", "graph": json.dumps({})}
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(ValueError, match="upgrade circuitlab"):
        load_graph(path)


def test_pt_file_points_to_the_import_path(tmp_path: Path) -> None:
    path = tmp_path / "graph.pt"
    torch.save({"adjacency_matrix": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError, match="import_circuit_tracer_pt"):
        load_graph(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_graph(tmp_path / "nope.safetensors")


def test_file_is_smaller_than_circuit_tracer_pt(tmp_path: Path) -> None:
    g = random_graph(4, n_layers=6, n_pos=12, n_features=200, n_logits=5)
    ours = tmp_path / "g.safetensors"
    g.save(ours)
    theirs = tmp_path / "g.pt"
    torch.save(
        {
            "input_string": g.input_string,
            "adjacency_matrix": g.adjacency_matrix,
            "cfg": {"n_layers": g.n_layers, "model_name": g.model_name},
            "active_features": g.active_features,
            "logit_targets": g.logit_token_ids,
            "logit_probabilities": g.logit_probabilities,
            "vocab_size": g.vocab_size,
            "input_tokens": g.input_tokens,
            "selected_features": g.selected_features,
            "activation_values": g.activation_values,
            "scan": None,
        },
        theirs,
    )
    assert ours.stat().st_size < theirs.stat().st_size
    # n_rows = 205 of N = 289 rows: the saving is the error and token rows
    assert ours.stat().st_size < theirs.stat().st_size * 205 / 289 + 4096


def test_format_version_1_with_dense_edges_still_loads(tmp_path: Path) -> None:
    g = _rich_graph()
    path = tmp_path / "v1.safetensors"
    tensors = {name: getattr(g, name).contiguous() for name in TENSORS}
    tensors["edges"] = g.edges
    header = storage._header(g)
    meta = {"format": "circuitlab.graph", "format_version": "1", "graph": json.dumps(header)}
    save_file(tensors, str(path), metadata=meta)
    loaded = load_graph(path)
    assert torch.equal(loaded.edges, g.edges)
    assert loaded.edge_blocks.equal(g.edge_blocks)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_edges_round_trip(tmp_path: Path, dtype: torch.dtype) -> None:
    g = random_graph(3, n_layers=6, n_pos=12, n_features=300)
    fields = {k: getattr(g, k) for k in g.__dataclass_fields__ if k != "edge_blocks"}
    half = Graph(**fields, edges=g.edges.to(dtype))
    half.save(tmp_path / "half.safetensors")
    g.save(tmp_path / "full.safetensors")
    loaded = load_graph(tmp_path / "half.safetensors")
    assert loaded.edge_dtype == dtype and loaded.edge_blocks.equal(half.edge_blocks)
    size = (tmp_path / "half.safetensors").stat().st_size
    assert size < 0.75 * (tmp_path / "full.safetensors").stat().st_size


def test_edges_load_as_a_private_memory_map(tmp_path: Path) -> None:
    g = random_graph(5, n_layers=4, n_pos=6, n_features=40)
    path = tmp_path / "g.safetensors"
    g.save(path)
    mapped, copied = load_graph(path), load_graph(path, mmap=False)
    assert mapped.edge_blocks.equal(copied.edge_blocks) and mapped.edge_blocks.equal(g.edge_blocks)
    before = path.read_bytes()
    mapped.edge_blocks.blocks[0].values.add_(1.0)  # copy-on-write: the file is untouched
    assert path.read_bytes() == before
    g.save(path)  # replacing the file under a loaded graph is safe (a new inode)
    assert load_graph(path).edge_blocks.equal(g.edge_blocks)
