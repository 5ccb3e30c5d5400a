"""Attribution targets: tokens, logit differences, custom directions, and bad input."""

from __future__ import annotations

import pytest
import torch

from circuitlab.attribution import CustomTarget, LogitDiff, attribute
from circuitlab.attribution.targets import resolve_targets
from circuitlab.graph import Graph

from conftest import PROMPT, build
from perturb import direct_effects


def test_explicit_targets_by_string_id_and_difference() -> None:
    rm = build("gemma2", "plt_skip")
    austin, dallas = rm.tokenizer.convert_tokens_to_ids(["Austin", "Dallas"])  # type: ignore[union-attr]
    graph = attribute(
        rm, PROMPT, attribution_targets=["Austin", dallas, LogitDiff("Austin", "Dallas")]
    )
    assert [t.vocab_idx for t in graph.logit_targets[:2]] == [austin, dallas]
    assert graph.logit_targets[2].token_str == "logit(Austin)-logit(Dallas)"
    assert graph.logit_targets[2].vocab_idx >= graph.vocab_size  # virtual
    rows = graph.edges[graph.n_selected :]
    # De-meaned directions: the difference row is exactly row(Austin) - row(Dallas).
    torch.testing.assert_close(rows[2], rows[0] - rows[1], rtol=0, atol=1e-12)
    probs = torch.softmax(rm.get_activations(PROMPT).logits[-1].double(), -1)
    torch.testing.assert_close(
        graph.logit_probabilities[:2], probs[[austin, dallas]].to(graph.logit_probabilities)
    )
    assert graph.logit_probabilities[2].item() == pytest.approx(
        abs(probs[austin] - probs[dallas]).item()
    )


def test_custom_direction_edges_match_perturbation() -> None:
    rm = build("qwen3", "clt_skip")
    vec = torch.randn(16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    graph = attribute(rm, PROMPT, attribution_targets=[CustomTarget("my direction", 0.5, vec)])
    assert graph.logit_targets[0].token_str == "my direction"
    assert graph.logit_probabilities.tolist() == [0.5]
    ids = torch.tensor(PROMPT)
    _, cap = rm.capture(ids)
    reads, writes = cap.stacked_reads(), cap.stacked_writes()
    feats = rm.transcoders.encode_sparse(reads)
    errors = writes - rm.transcoders.decode_sparse(feats, reads)
    errors[:, 0] = 0
    truth = direct_effects(rm, ids, feats, errors, vec[None])[-1]
    torch.testing.assert_close(graph.edges[-1, : truth.shape[0]], truth, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (["Austin Texas"], "is 2 tokens"),
        ([999], "outside the vocabulary"),
        ([], "empty"),
        ([CustomTarget("bad", 1.0, torch.zeros(3))], "expected \\(16,\\)"),
        ([3.5], "Unsupported target"),
    ],
)
def test_bad_targets_get_clear_errors(targets: list, message: str) -> None:
    rm = build("llama")
    with pytest.raises((ValueError, TypeError), match=message):
        attribute(rm, PROMPT, attribution_targets=targets)


def test_text_prompt_and_ids_give_the_same_graph() -> None:
    rm = build("mistral")
    a = attribute(rm, "the capital of state containing Dallas is")
    b = attribute(rm, [0] + rm.tokenizer.encode("the capital of state containing Dallas is"))  # type: ignore[union-attr]
    assert a.input_tokens.tolist()[0] == 0
    assert torch.equal(a.edges, b.edges)


def test_verbose_shows_progress_and_a_timing_report(capsys: pytest.CaptureFixture[str]) -> None:
    rm = build("llama")
    graph = attribute(rm, PROMPT, verbose=True, batch_size=8)
    out = capsys.readouterr()
    assert "attribution phases:" in out.out
    for phase in ("forward", "sources", "targets", "logit rows", "feature rows", "graph", "total"):
        assert phase in out.out
    assert "attribution" in out.err  # tqdm's bar
    assert set(graph.settings["timings"]) >= {"forward", "feature rows"}


def test_attributed_graph_round_trips_through_safe_storage(tmp_path) -> None:
    rm = build("gemma3", "clt_skip")
    graph = attribute(rm, "the capital of Texas is")
    path = tmp_path / "g.safetensors"
    graph.save(path)
    back = Graph.load(path)
    assert torch.equal(back.edges, graph.edges)
    assert back.logit_targets == graph.logit_targets
    assert back.input_string == graph.input_string
    assert back.settings["max_n_logits"] == 10


def test_a_target_outside_the_vocabulary_is_refused_not_traced_as_unk() -> None:
    rm = build("llama")  # tiny_tokenizer reads unknown words as <pad>
    with pytest.raises(ValueError, match=r"'Houston' is not in the vocabulary.*'<pad>'.*token id"):
        attribute(rm, PROMPT, attribution_targets=["Houston"])
    with pytest.raises(ValueError, match="'Houston' is not in the vocabulary"):
        attribute(rm, PROMPT, attribution_targets=[LogitDiff("Austin", "Houston")])


def test_a_target_read_as_the_unk_token_is_refused() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<bos>": 0, "<unk>": 1, "Austin": 2, "Dallas": 3}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", unk_token="<unk>")
    logits, unembed = torch.zeros(4), torch.randn(4, 8)
    assert resolve_targets(["Austin"], logits, unembed, tok).logit_targets[0].vocab_idx == 2
    with pytest.raises(ValueError, match=r"'Paris' is not in the vocabulary: it reads as '<unk>'"):
        resolve_targets(["Paris"], logits, unembed, tok)


def test_a_single_target_is_one_target_not_its_characters() -> None:
    rm = build("llama")
    austin = rm.tokenizer.convert_tokens_to_ids("Austin")  # type: ignore[union-attr]
    graph = attribute(rm, PROMPT, attribution_targets="Austin")
    assert [t.vocab_idx for t in graph.logit_targets] == [austin]
    graph = attribute(rm, PROMPT, attribution_targets=LogitDiff("Austin", "Dallas"))  # type: ignore[arg-type]
    assert [t.token_str for t in graph.logit_targets] == ["logit(Austin)-logit(Dallas)"]
