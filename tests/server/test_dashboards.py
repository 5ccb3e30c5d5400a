"""Each graph gets the dashboards of its own transcoder set, never another set's."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from circuitlab.attribution import attribute
from circuitlab.features.build import BuildSettings, build_dashboards
from circuitlab.features.store import decode_record, read_build_info, read_feature
from circuitlab.graph.export import create_graph_files
from circuitlab.models.tiny import tiny_model
from circuitlab.replacement import ReplacementModel
from circuitlab.server import create_app
from circuitlab.transcoders import random_transcoder_set, transcoder_fingerprint

from .helpers import circuit_tracer_graph, feature_record, write_feature_store
from conftest import WORDS, tiny_tokenizer  # pyright: ignore[reportAttributeAccessIssue]

SETTINGS = BuildSettings(n_tokens=300, context=12, batch_size=4)
PROMPT = "the capital of state containing Dallas is"


def _model(seed: int) -> ReplacementModel:
    """The same tiny model with transcoder set number ``seed`` (all named ``random-plt``)."""
    torch.manual_seed(0)
    hf = tiny_model("llama", dtype=torch.float32, n_layers=2, d_model=16)
    tc = random_transcoder_set(2, 16, 24, seed=seed)
    return ReplacementModel.from_pretrained(hf, tc, tokenizer=tiny_tokenizer())


def _texts() -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 20))) for _ in range(30)]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stores ``set_a``/``set_b`` of two transcoder sets; graphs ``ga``, ``gb`` of those sets
    and ``gc`` of a third set without a store."""
    root = tmp_path_factory.mktemp("dashboards")
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        model = _model(seed)
        if name != "c":
            build_dashboards(
                model, _texts(), root / "stores" / f"set_{name}", SETTINGS, verbose=False
            )
        create_graph_files(attribute(model, PROMPT), f"g{name}", root / "graphs", 0.9, 0.98)
    return root


def _client(lab: Path, *features: Path, graphs: Path | None = None) -> TestClient:
    app = create_app(graphs or lab / "graphs", list(features) if features else None)
    return TestClient(app, base_url="http://127.0.0.1")


def _features(lab: Path, slug: str) -> list[tuple[int, int]]:
    nodes = json.loads((lab / "graphs" / f"{slug}.json").read_text())["nodes"]
    out = []
    for n in nodes:
        if n["feature_type"] == "cross layer transcoder":
            layer, feat, _pos = n["node_id"].split("_")
            out.append((int(layer), int(feat)))
    return out


def _served_record(c: TestClient, store: str, layer: int, feature: int) -> dict:
    """One feature's record fetched as the page fetches it: index, then one byte range."""
    import gzip

    index = json.loads(gzip.decompress(c.get(f"/feature_stores/{store}/index.json.gz").content))
    entry = index[layer]
    start, end = entry["offsets"][feature], entry["offsets"][feature + 1]
    r = c.get(
        f"/feature_stores/{store}/{entry['filename']}",
        headers={"Range": f"bytes={start}-{end - 1}"},
    )
    assert r.status_code == 206
    return decode_record(r.content)


def test_a_store_records_the_transcoder_set_it_was_built_from(lab: Path) -> None:
    for name, seed in (("a", 1), ("b", 2)):
        tset = (read_build_info(lab / "stores" / f"set_{name}") or {})["transcoder_set"]
        assert tset["fingerprint"] == transcoder_fingerprint(_model(seed).transcoders)
        assert tset["name"] == "random-plt" and tset["d_transcoder"] == 24
    graph = json.loads((lab / "graphs" / "ga.json").read_text())["metadata"]["transcoder_set"]
    assert graph["fingerprint"] == transcoder_fingerprint(_model(1).transcoders)


def test_each_graph_gets_its_own_sets_dashboards(lab: Path) -> None:
    a, b = lab / "stores" / "set_a", lab / "stores" / "set_b"
    with _client(lab, a, b) as c:
        assert [s["key"] for s in c.get("/api/info").json()["feature_stores"]] == ["set_a", "set_b"]
        for slug, store, own, other in (("ga", "set_a", a, b), ("gb", "set_b", b, a)):
            served = c.get(f"/api/features/{slug}").json()
            assert served["store"] == store and served["match"] == "fingerprint", served
            feats = _features(lab, slug)
            assert feats
            differs = 0
            for layer, feat in feats:
                rec = _served_record(c, store, layer, feat)
                assert rec == read_feature(own, layer, feat)
                differs += rec != read_feature(other, layer, feat)
            assert differs  # the other set's store would have shown other dashboards
        none = c.get("/api/features/gc").json()
        assert none["store"] is None and none["match"] is None
        assert none["note"].startswith("No dashboard for this transcoder set")
        assert c.get("/features/index.json.gz").status_code == 404  # no single store to default to


def test_a_folder_of_stores_is_read_as_several(lab: Path) -> None:
    with _client(lab, lab / "stores") as c:
        assert c.get("/api/features/gb").json()["store"] == "set_b"
        assert c.get("/api/features/gc").json()["store"] is None


def test_a_single_store_of_another_set_is_not_served(lab: Path) -> None:
    with _client(lab, lab / "stores" / "set_a") as c:
        assert c.get("/api/features/ga").json()["store"] == "set_a"
        assert c.get("/api/features/gb").json()["store"] is None


def test_stores_of_unknown_set_serve_only_graphs_of_unknown_set(lab: Path, tmp_path: Path) -> None:
    """A store written before sets were recorded (no ``build.json``) is never shown for a graph
    that records its set; a graph that records none (circuit-tracer's) gets the only store,
    with a note; with several stores it gets none."""
    legacy = write_feature_store(tmp_path / "legacy", {0: {0: feature_record(0, 0)}}, 8).parent
    graphs = tmp_path / "graphs"
    graphs.mkdir()
    shutil.copy(lab / "graphs" / "ga.json", graphs)
    (graphs / "ct.json").write_text(json.dumps(circuit_tracer_graph("ct")))
    with _client(lab, legacy, graphs=graphs) as c:
        assert c.get("/api/features/ga").json()["store"] is None
        served = c.get("/api/features/ct").json()
        assert served["store"] == "legacy" and served["match"] == "unknown"
        assert "Dashboard store of unknown transcoder set" in served["note"]
    with _client(lab, legacy, lab / "stores" / "set_a", graphs=graphs) as c:
        assert c.get("/api/features/ct").json()["store"] is None
        assert c.get("/api/features/ga").json()["store"] == "set_a"


def test_a_store_that_records_only_a_name_matches_by_name(lab: Path, tmp_path: Path) -> None:
    store = tmp_path / "named"
    shutil.copytree(lab / "stores" / "set_a", store)
    info = read_build_info(store) or {}
    info.pop("transcoder_set")  # as circuitlab wrote build.json before recording the set
    (store / "features" / "build.json").write_text(json.dumps(info))
    with _client(lab, store) as c:
        served = c.get("/api/features/ga").json()  # the graph's set is named random-plt too
        assert served["store"] == "named" and served["match"] == "name"
        assert "name only" in served["note"]


def test_graph_labels_are_not_read_from_another_sets_store(lab: Path, tmp_path: Path) -> None:
    model = _model(2)
    graph = attribute(model, PROMPT)
    with pytest.warns(UserWarning, match="another transcoder set"):
        create_graph_files(graph, "x", tmp_path, features_dir=lab / "stores" / "set_a")


def test_the_organisms_graphs_get_its_shipped_dashboards(lab: Path, tmp_path: Path) -> None:
    from circuitlab.organism import DALLAS_PROMPT, load_organism, organism_paths

    organism = load_organism()
    create_graph_files(attribute(organism, DALLAS_PROMPT), "dallas", tmp_path)
    shutil.copy(lab / "graphs" / "ga.json", tmp_path)
    (tmp_path / "graph-metadata.json").unlink()  # rebuilt from both graph files
    with _client(lab, organism_paths().features, lab / "stores" / "set_a", graphs=tmp_path) as c:
        assert c.get("/api/features/dallas").json()["match"] == "fingerprint"
        assert c.get("/api/features/dallas").json()["store"] == "weights"
        assert c.get("/api/features/ga").json()["store"] == "set_a"
