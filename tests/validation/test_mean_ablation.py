"""Faithfulness with mean ablation: the result, the CLI flag, and the organism's Dallas circuit."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from circuitlab.attribution import attribute
from circuitlab.cli import main
from circuitlab.interventions import AblationMeans, ablate_outside, ablation_means
from circuitlab.validation import faithfulness

from conftest import PROMPT, WORDS, build, save_to_disk

REFERENCE = [PROMPT, [0, 4, 4, 11], [0, 13, 3, 5, 9, 3, 7, 6, 6, 6, 12]]


@pytest.fixture(scope="module")
def tiny():
    rm = build("llama", "plt")
    graph = attribute(rm, PROMPT, max_n_logits=3, desired_logit_prob=0.99)
    return rm, graph, ablation_means(rm, REFERENCE)


def test_the_result_records_mean_ablation(tiny) -> None:
    rm, graph, means = tiny
    zero = faithfulness(rm, graph, [0.8], edge_threshold=1.0)
    mean = faithfulness(rm, graph, [0.8], edge_threshold=1.0, means=means, pinned=[])
    assert zero.to_json()["ablation"] == "zero" and zero.to_json()["mean_reference"] is None
    data = json.loads(json.dumps(mean.to_json(), allow_nan=False))
    assert data["ablation"] == "mean"
    assert data["mean_reference"] == {"n_prompts": 3, "n_positions": means.n_positions}
    assert "(iterative, mean ablation)" in mean.table()
    assert mean.clean == zero.clean  # the clean run is no ablation at all
    assert mean.all_ablated.logit != pytest.approx(zero.all_ablated.logit, abs=1e-3)
    # Sufficiency of the empty (pinned) circuit is the all-ablated reference: every feature and
    # error node at its mean, as ablate_outside computes it (checked against a direct forward in
    # tests/interventions/test_means.py).
    empty = torch.zeros(graph.n_nodes, dtype=torch.bool)
    at_means = ablate_outside(rm, graph, empty, means=means)
    target = graph.logit_targets[0].vocab_idx
    assert mean.pinned is not None and mean.pinned.n_features == 0
    assert mean.pinned.sufficiency.logit == pytest.approx(float(at_means.logits_after[target]))
    assert mean.all_ablated.logit == mean.pinned.sufficiency.logit


def test_all_zero_means_give_the_zero_ablation_curves_in_direct_mode(tiny) -> None:
    rm, graph, _ = tiny
    tc = rm.transcoders
    zeros = AblationMeans(
        torch.zeros(rm.n_layers, tc.d_transcoder), torch.zeros(rm.n_layers, tc.d_model), 1, 1
    )
    kwargs = dict(edge_threshold=1.0, constrained_layers=range(rm.n_layers))
    a = faithfulness(rm, graph, [0.6, 0.8, 1.0], **kwargs)  # type: ignore[arg-type]
    b = faithfulness(rm, graph, [0.6, 0.8, 1.0], means=zeros, **kwargs)  # type: ignore[arg-type]
    assert b.all_ablated.logit == pytest.approx(a.all_ablated.logit, abs=1e-6)
    for p, q in zip(a.points, b.points, strict=True):
        assert q.necessity.logit == pytest.approx(p.necessity.logit, abs=1e-6)
        assert q.sufficiency.logit == pytest.approx(p.sufficiency.logit, abs=1e-6)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny):
    rm, graph, _ = tiny
    root = tmp_path_factory.mktemp("tiny")
    model_dir, tc_dir = save_to_disk(rm, root)
    graph.save(root / "g.safetensors")
    model = ["-m", str(model_dir), "-t", str(tc_dir), "--dtype", "float64"]
    return root, ["validate", str(root / "g.safetensors"), *model, "--thresholds", "0.8"]


def test_validate_mean_ablation_from_prompts_jsonl_or_saved_means(saved, tiny, capsys) -> None:
    root, argv = saved
    rm, _, _ = tiny
    lines = ["the capital of Texas is Austin", "Dallas is in Texas", "", "a b c d France Paris"]
    (root / "ref.txt").write_text("\n".join(lines) + "\n")
    (root / "ref.jsonl").write_text("".join(json.dumps({"p": t}) + "\n" for t in lines if t))
    out = {}
    for name, ref in [("txt", "ref.txt"), ("jsonl", "ref.jsonl:p"), ("saved", "m.safetensors")]:
        extra = ["--save-means", str(root / "m.safetensors")] if name == "txt" else []
        out_file = ["--json", str(root / f"{name}.json")]
        code = main([*argv, "--mean-ablation", str(root / ref), *extra, *out_file])
        assert code == 0 and "mean ablation" in capsys.readouterr().out
        out[name] = json.loads((root / f"{name}.json").read_text())
    assert out["txt"]["ablation"] == "mean" and out["txt"]["mean_reference"]["n_prompts"] == 3
    assert out["txt"]["points"] == out["jsonl"]["points"] == out["saved"]["points"]
    expected = ablation_means(rm, [t for t in lines if t])
    saved_means = AblationMeans.load(root / "m.safetensors")
    torch.testing.assert_close(saved_means.features, expected.features, atol=1e-12, rtol=0)
    assert main([*argv, "--json", str(root / "zero.json")]) == 0
    assert json.loads((root / "zero.json").read_text())["ablation"] == "zero"


def test_bad_mean_ablation_files_are_one_line_errors(saved, capsys) -> None:
    root, argv = saved
    (root / "empty.txt").write_text("\n\n")
    (root / "nofield.jsonl").write_text(json.dumps({"text": WORDS[0]}) + "\n")
    AblationMeans(torch.zeros(3, 32), torch.zeros(3, 16), 1, 1).save(root / "other.safetensors")
    cases = {
        "missing.txt": "missing.txt: no such file; pass reference prompts",
        "empty.txt": "the file holds no prompts: write one prompt per line",
        "nofield.jsonl:p": "has no 'p' field",
        "g.safetensors": "g.safetensors is not an ablation means file",
        "other.safetensors": "compute them with this model and transcoders",
    }
    for ref, message in cases.items():
        assert main([*argv, "--mean-ablation", str(root / ref)]) == 2
        lines = capsys.readouterr().err.strip().splitlines()  # may start with loading progress
        errors = [line for line in lines if line.startswith("circuitlab validate: error:")]
        assert len(errors) == 1 and errors[0] == lines[-1], lines
        assert errors[0].startswith("circuitlab validate: error: --mean-ablation ")
        assert message in errors[0], errors[0]
    assert main([*argv, "--save-means", str(root / "m.safetensors")]) == 2
    assert "pass both" in capsys.readouterr().err


# ---- the organism: the Dallas circuit stays necessary under mean ablation ----------------------
N_REFERENCE = 256


def test_the_dallas_circuit_is_necessary_under_mean_ablation() -> None:
    from circuitlab.organism import DALLAS, DALLAS_PROMPT, load_organism
    from circuitlab.organism.corpus import texts

    model = load_organism()
    graph = attribute(model, DALLAS_PROMPT)
    assert graph.logit_targets[0].token_str == DALLAS.answer  # Austin
    means = ablation_means(model, itertools.islice(texts(0), N_REFERENCE))
    result = faithfulness(model, graph, [0.8], means=means)
    point, clean = result.points[0], result.clean
    assert result.to_json()["ablation"] == "mean"
    assert point.necessity.prob < 0.1 * clean.prob and point.necessity.rank > 0
    assert point.necessity.effect is not None and point.necessity.effect > 0.5
    assert point.sufficiency.rank == 0  # the circuit alone still answers Austin
