"""create_graph_files: the circuit-tracer/Neuronpedia schema, unique ids, labels, metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from circuitlab.graph.export import FeatureStore, cantor, create_graph_files, node_ids

from .helpers import feature_record, small_graph, write_feature_store


def test_files_follow_the_graph_schema(tmp_path: Path) -> None:
    path = create_graph_files(small_graph(), "small", tmp_path, 1.0, 1.0)
    data = json.loads(path.read_text())
    assert set(data) == {"metadata", "qParams", "nodes", "links"}
    meta = data["metadata"]
    for key in ("slug", "scan", "transcoder_list", "prompt_tokens", "prompt", "node_threshold"):
        assert key in meta
    assert meta["schema_version"] == 1 and meta["slug"] == "small" and meta["scan"] == "tiny-plt"
    assert meta["prompt_tokens"] == ["<0>", "<3>", "<4>"]  # no tokenizer: ids
    node_keys = {"node_id", "feature", "layer", "ctx_idx", "feature_type", "jsNodeId", "clerp"}
    assert all(node_keys <= set(n) for n in data["nodes"])
    ids = {n["node_id"] for n in data["nodes"]}
    assert all(link["source"] in ids and link["target"] in ids for link in data["links"])
    listing = json.loads((tmp_path / "graph-metadata.json").read_text())
    assert [g["slug"] for g in listing["graphs"]] == ["small"]


def test_node_ids_never_collide_and_follow_the_conventions() -> None:
    g = small_graph()
    ids = node_ids(g)
    assert len(set(ids)) == len(ids) == g.n_nodes
    assert ids[0] == "0_0_1"  # layer 0, feature 0, pos 1
    assert ids[g.error_node(0, 1)] == "0_-1_1"  # circuit-tracer 0.5.0 wrote "0_0_1" here
    assert ids[g.token_node(2)] == "E_4_2"
    assert ids[g.logit_node(0)] == "3_12_2"


def test_nodes_carry_kind_fields(tmp_path: Path) -> None:
    data = json.loads(create_graph_files(small_graph(), "s", tmp_path, 1.0, 1.0).read_text())
    by_id = {n["node_id"]: n for n in data["nodes"]}
    feat = by_id["1_1_1"]
    assert feat["feature"] == cantor(1, 1) and feat["feature_type"] == "cross layer transcoder"
    assert feat["activation"] == pytest.approx(0.5) and feat["clerp"] == "says capital"
    logit = by_id["3_12_2"]
    assert logit["is_target_logit"] and logit["token_prob"] == pytest.approx(0.7)
    assert logit["clerp"] == 'Output " France" (p=0.700)'
    assert by_id["E_0_0"]["layer"] == "E" and by_id["E_0_0"]["feature_type"] == "embedding"
    assert all(n["influence"] is not None for n in data["nodes"])


def test_pruning_drops_weak_nodes_but_keeps_tokens_and_logits(tmp_path: Path) -> None:
    full = json.loads(create_graph_files(small_graph(), "f", tmp_path, 1.0, 1.0).read_text())
    tight = json.loads(create_graph_files(small_graph(), "t", tmp_path, 0.3, 0.5).read_text())
    assert len(tight["nodes"]) < len(full["nodes"])
    assert len(tight["links"]) < len(full["links"])
    kinds = [n["feature_type"] for n in tight["nodes"]]
    assert kinds.count("embedding") == 3 and kinds.count("logit") == 2


def test_metadata_is_upserted_by_slug(tmp_path: Path) -> None:
    create_graph_files(small_graph(), "a", tmp_path)
    create_graph_files(small_graph(), "b", tmp_path)
    create_graph_files(small_graph(), "a", tmp_path)
    listing = json.loads((tmp_path / "graph-metadata.json").read_text())
    assert sorted(g["slug"] for g in listing["graphs"]) == ["a", "b"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_labels_come_from_dashboards(tmp_path: Path) -> None:
    write_feature_store(tmp_path / "tc", {0: {4: feature_record(0, 4, "capital of")}}, 8)
    path = create_graph_files(
        small_graph(), "l", tmp_path / "g", 1.0, 1.0, features_dir=tmp_path / "tc"
    )
    by_id = {n["node_id"]: n for n in json.loads(path.read_text())["nodes"]}
    assert by_id["0_4_2"]["clerp"] == "capital of"
    assert by_id["1_1_1"]["clerp"] == "says capital"  # graph labels win


def test_feature_store_reads_records(tmp_path: Path) -> None:
    write_feature_store(tmp_path, {1: {2: feature_record(1, 2)}}, 4)
    store = FeatureStore.open(tmp_path)
    assert store is not None
    rec = store.read(1, 2)
    assert rec is not None and rec["index"] == 2
    assert store.read(1, 3) is None and store.read(5, 0) is None


def test_saved_graph_paths_are_accepted(tmp_path: Path) -> None:
    small_graph().save(tmp_path / "g.safetensors")
    path = create_graph_files(tmp_path / "g.safetensors", "from-file", tmp_path / "out")
    assert json.loads(path.read_text())["metadata"]["slug"] == "from-file"


@pytest.mark.parametrize("slug", ["", "../x", "a/b", ".hidden", "a b", "x" * 200])
def test_bad_slugs_are_refused(tmp_path: Path, slug: str) -> None:
    with pytest.raises(ValueError, match="slug"):
        create_graph_files(small_graph(), slug, tmp_path)


def test_prompt_tokens_of_a_model_folder_without_a_tokenizer_show_ids(tmp_path: Path) -> None:
    """transformers 5 gives a one-token placeholder for such a folder, which decodes every id
    but 0 as ''; the page must show the ids instead of blank tokens."""
    import dataclasses

    from circuitlab.graph.export import decode_tokens
    from circuitlab.models.tiny import tiny_model

    tiny_model("gpt2", n_layers=2, d_model=16).save_pretrained(tmp_path / "model")
    g = dataclasses.replace(small_graph(), model_name=str(tmp_path / "model"))
    assert decode_tokens(g) == ["<0>", "<3>", "<4>"]
