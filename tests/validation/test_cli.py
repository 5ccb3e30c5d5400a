"""``circuitlab validate`` and ``circuitlab compare`` on a tiny model saved to disk."""

from __future__ import annotations

import json

import pytest

from circuitlab.attribution import attribute
from circuitlab.cli import main

from conftest import build, save_to_disk


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    rm = build("llama", "plt")
    root = tmp_path_factory.mktemp("tiny")
    model_dir, tc_dir = save_to_disk(rm, root)
    graphs = []
    for name, prompt in [
        ("dallas", "the capital of the state containing Dallas is"),
        ("texas", "the capital of Texas is"),
        ("france", "the capital of France is"),
    ]:
        path = root / f"{name}.safetensors"
        attribute(rm, prompt, max_n_logits=3, desired_logit_prob=0.99).save(path)
        graphs.append(str(path))
    model = ["-m", str(model_dir), "-t", str(tc_dir), "--dtype", "float64"]
    return model, graphs


def test_validate_writes_the_lab_file_the_graph_file_and_a_plot(saved, tmp_path, capsys) -> None:
    model, graphs = saved
    lab = tmp_path / "lab"
    argv = ["validate", graphs[0], *model, "--thresholds", "0.8", "1.0", "--edge_threshold", "1.0"]
    code = main([*argv, "--graph_file_dir", str(lab), "--plot", str(tmp_path / "c.svg")])
    out = capsys.readouterr().out
    assert code == 0 and "necessity" in out and "full graph: replacement" in out
    data = json.loads((lab / "dallas.faithfulness.json").read_text())
    assert data["slug"] == "dallas" and [p["node_threshold"] for p in data["points"]] == [0.8, 1.0]
    assert (lab / "dallas.json").is_file() and (tmp_path / "c.svg").is_file()
    lab_ids = {n["node_id"] for n in json.loads((lab / "dallas.json").read_text())["nodes"]}

    # Pins saved by the lab in dallas.json are measured too.
    graph_file = json.loads((lab / "dallas.json").read_text())
    pins = [i for i in lab_ids if not i.startswith("E_")][:2]
    graph_file["qParams"]["pinnedIds"] = pins
    (lab / "dallas.json").write_text(json.dumps(graph_file))
    assert main([*argv, "--graph_file_dir", str(lab), "--json", str(tmp_path / "f.json")]) == 0
    assert json.loads((tmp_path / "f.json").read_text())["pinned"]["node_ids"] == pins


def test_compare_writes_the_diff_file_next_to_the_graph_files(saved, tmp_path, capsys) -> None:
    _, graphs = saved
    lab = tmp_path / "lab"
    assert main(["compare", graphs[0], graphs[1], "--graph_file_dir", str(lab)]) == 0
    out = capsys.readouterr().out
    assert "node overlap" in out and "spectral distance" in out
    diff = json.loads((lab / "dallas__vs__texas.diff.json").read_text())
    assert diff["kind"] == "circuitlab.diff" and diff["a"]["slug"] == "dallas"
    # Every id in the diff is a node of the lab's graph files.
    for side, slug in (("a", "dallas"), ("b", "texas")):
        ids = {n["node_id"] for n in json.loads((lab / f"{slug}.json").read_text())["nodes"]}
        listed = {i for group in diff["nodes"].values() for n in group for i in n[side]}
        assert listed and listed <= ids
    assert (
        main(
            [
                "compare",
                graphs[0],
                graphs[0],
                "--slugs",
                "x",
                "y",
                "--json",
                str(tmp_path / "d.json"),
            ]
        )
        == 0
    )
    same = json.loads((tmp_path / "d.json").read_text())
    assert same["node_overlap"] == pytest.approx(1.0) and same[
        "spectral_distance"
    ] == pytest.approx(0.0, abs=1e-9)


def test_compare_aggregates_three_or_more_graphs(saved, tmp_path, capsys) -> None:
    _, graphs = saved
    assert (
        main(
            [
                "compare",
                *graphs,
                graphs[0],
                "--slugs",
                "a",
                "b",
                "c",
                "a2",
                "--json",
                str(tmp_path / "agg.json"),
            ]
        )
        == 0
    )
    agg = json.loads((tmp_path / "agg.json").read_text())
    assert agg["kind"] == "circuitlab.aggregate" and len(agg["similarity"]) == 4
    assert any(0 in c and 3 in c for c in agg["clusters"])  # a graph clusters with its copy
    assert "cluster(s)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["validate", "missing.safetensors", "-t", "x"], "no graph file at missing.safetensors"),
        (["validate", "dallas.json", "-t", "x"], "lab file holding only the pruned graph"),
        (["validate", "g.safetensors", "--slug", "s"], "--slug names the graph in a lab folder"),
        (["validate", "g.safetensors", "-t", "x", "--thresholds", "0.5", "1.5"], "got 1.5"),
        (["compare", "a.safetensors"], "give at least two graphs"),
        (["compare", "a", "b", "c", "--graph_file_dir", "d"], "write it with --json FILE"),
        (["compare", "a.safetensors", "b.safetensors", "--node_threshold", "2"], "between 0 and 1"),
    ],
)
def test_bad_input_is_one_line(argv, message, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1
        and message in err
        and err.startswith(f"circuitlab {argv[0]}: error")
    )


def test_validate_without_a_model_says_how_to_give_one(saved, capsys) -> None:
    _, graphs = saved
    assert main(["validate", graphs[0]]) == 2
    assert "no model: pass -t/--transcoders" in capsys.readouterr().err


def test_compare_aligns_features_when_asked(saved, tmp_path) -> None:
    model, graphs = saved
    tc = model[model.index("-t") + 1]
    out = tmp_path / "aligned.json"
    argv = ["compare", graphs[0], graphs[0], "--slugs", "a", "b", "--align", "yes"]
    assert main([*argv, "--transcoders-a", tc, "--transcoders-b", tc, "--json", str(out)]) == 0
    diff = json.loads(out.read_text())
    assert diff["settings"]["aligned"] is True and diff["node_overlap"] == pytest.approx(1.0)
    assert all(n["cosine"] == pytest.approx(1.0) for n in diff["nodes"]["shared"])
    assert main([*argv, "--json", str(out)]) == 2  # alignment needs both transcoders
