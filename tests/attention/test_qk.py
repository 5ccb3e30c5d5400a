"""QK attributions: the pairs and bias terms sum to the model's own score, each node's share is
the first-order change of the frozen model's score when that node moves, and bad requests are
refused, on tiny random models of every family (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from circuitlab.attention import FrozenPrompt, qk_attribution, qk_sweep, top_attention
from circuitlab.models.session import Plan
from circuitlab.replacement import ReplacementModel

from .scores import qk_norms_frozen, recorded_scores
from conftest import FAMILIES, PROMPT, build
from perturb import frozen_plan

CASES = [(0, 1, 7, 4), (1, 3, 7, 5), (1, 0, 6, 6), (2, 2, 7, 3)]  # layer, head, query, key


def _model_scores(rm: ReplacementModel, plan: Plan | None = None, qk_scales=None) -> dict:
    """The model's scores; ``qk_scales`` (filled by the first call) freezes q/k norms."""
    with recorded_scores() as rec, qk_norms_frozen(rm, {} if qk_scales is None else qk_scales):
        rm.run(torch.tensor(PROMPT)[None], plan or Plan())
    return rec


@pytest.mark.parametrize("family", FAMILIES)
def test_pairs_and_bias_terms_sum_to_the_models_score(family: str) -> None:
    rm = build(family, "clt_skip" if family == "llama" else "plt_skip", n_layers=3)
    fp = FrozenPrompt.build(rm, PROMPT)
    truth = _model_scores(rm)
    for layer, head, q, k in CASES:
        r = qk_attribution(rm, fp, layer, head, q, k, top_k=None)
        score = float(truth[layer]["scores"][head, q, k])
        assert r.total == pytest.approx(score, rel=1e-5, abs=1e-8)
        parts = float(r.pair_matrix().sum()) + sum(r.bias_terms.values())
        assert parts == pytest.approx(score, rel=1e-5, abs=1e-8)
        assert sum(p.value for p in r.pairs) == pytest.approx(float(r.pair_matrix().sum()))
        q_side = sum(r.query_marginals.values()) + r.bias_terms["query_bias*key_bias"]
        q_side += r.bias_terms["query_bias*key_nodes"]
        k_side = sum(r.key_marginals.values()) + r.bias_terms["query_bias*key_bias"]
        k_side += r.bias_terms["query_nodes*key_bias"]
        assert q_side == pytest.approx(score, rel=1e-5, abs=1e-8)
        assert k_side == pytest.approx(score, rel=1e-5, abs=1e-8)
        if r.softcap is None:
            assert r.logit == r.total
        else:
            assert r.logit == pytest.approx(r.softcap * math.tanh(score / r.softcap))


@pytest.mark.parametrize("family", FAMILIES)
def test_sweep_over_keys_gives_the_attention_row(family: str) -> None:
    """softmax of the sweep's logits over the keys the head can see = the recorded pattern."""
    rm = build(family, "plt", n_layers=2)
    fp = FrozenPrompt.build(rm, PROMPT)
    layer, head, q = 1, 2, 7
    sweep = qk_sweep(rm, fp, layer, head, q, top_k=10)
    keys = [r.key_pos for r in sweep]
    logits = torch.tensor([r.logit for r in sweep], dtype=torch.float64)
    pattern = fp.capture.patterns[layer][0, head, q]
    torch.testing.assert_close(torch.softmax(logits, 0), pattern[keys], rtol=1e-5, atol=1e-7)
    assert float(pattern[keys].sum()) == pytest.approx(1.0)
    one = qk_attribution(rm, fp, layer, head, q, keys[1], top_k=10)
    assert one.total == pytest.approx(sweep[1].total, rel=1e-12)
    # the same pairs; values to rounding (a batch of other rows may sum in another order)
    assert [(p.query_node, p.key_node) for p in one.pairs] == [
        (p.query_node, p.key_node) for p in sweep[1].pairs
    ]
    assert [p.value for p in one.pairs] == pytest.approx([p.value for p in sweep[1].pairs])
    top2 = qk_sweep(rm, fp, layer, head, q, keys=2)
    assert [r.attention for r in top2] == sorted((r.attention for r in sweep), reverse=True)[:2]


@pytest.mark.parametrize("family", ["gpt2", "qwen3", "gemma2"])
def test_sweep_without_pairs_gives_the_same_marginals_and_bias_terms(family: str) -> None:
    rm = build(family, "plt_skip", n_layers=2)
    fp = FrozenPrompt.build(rm, PROMPT)
    full = qk_sweep(rm, fp, 1, 3, 6)
    fast = qk_sweep(rm, fp, 1, 3, 6, pairs=False)
    assert [r.key_pos for r in fast] == [r.key_pos for r in full]
    for a, b in zip(full, fast, strict=True):
        assert b.pairs == [] and b.key_vectors is None and b.total == a.total
        assert b.query_marginals == pytest.approx(a.query_marginals, rel=1e-9, abs=1e-12)
        nonzero = {n: v for n, v in a.key_marginals.items() if v != 0}
        assert b.key_marginals == pytest.approx(nonzero, rel=1e-9, abs=1e-12)
        assert b.bias_terms == pytest.approx(a.bias_terms, rel=1e-9, abs=1e-12)
        key_side = sum(b.key_marginals.values()) + b.bias_terms["query_bias*key_bias"]
        key_side += b.bias_terms["query_nodes*key_bias"]
        assert key_side == pytest.approx(b.total, rel=1e-9)
    with pytest.raises(ValueError, match="pairs=False"):
        fast[0].pair_matrix()


def _clean_nodes(rm: ReplacementModel):
    ids = torch.tensor(PROMPT)
    _, cap = rm.capture(ids)
    tc = rm.transcoders
    reads, writes = cap.stacked_reads(), cap.stacked_writes()
    feats = tc.encode_sparse(reads)
    errors = writes - tc.decode_sparse(feats, reads)
    errors[:, 0] = 0
    return cap, feats, errors


def _moved_score(rm, cap, feats, errors, node: str, eps: float, at: tuple[int, int, int, int]):
    """The frozen model's score at ``at`` with node ``node``'s value scaled by ``1 + eps``
    (patterns and every norm scale, q/k norms included, frozen at the clean run's)."""
    delta = torch.zeros_like(errors)
    embed = None
    kind_layer, feat, pos = node.split("_")
    if kind_layer == "E":
        assert cap.embed is not None
        embed = torch.zeros_like(cap.embed[0])
        embed[int(pos)] = eps * cap.embed[0, int(pos)]
    elif feat == "-1":
        delta[int(kind_layer), int(pos)] = eps * errors[int(kind_layer), int(pos)]
    else:
        layer, pos_, f = int(kind_layer), int(pos), int(feat)
        row = ((feats.indices == torch.tensor([layer, pos_, f])).all(1)).nonzero()[0, 0]
        dec = rm.transcoders.decoder_rows(layer, torch.tensor([f]))[0].to(errors.dtype)
        delta[layer : layer + dec.shape[0], pos_] = eps * feats.values[row] * dec
    qk_scales: dict = {}
    _model_scores(rm, qk_scales=qk_scales)  # records the clean q/k norm scales
    rec = _model_scores(rm, frozen_plan(rm, cap, delta, embed), qk_scales)
    layer, head, q, k = at
    return float(rec[layer]["scores"][head, q, k])


def _pick(marginals: dict[str, float], where) -> str:
    names = [n for n in marginals if where(n)]
    assert names, "no node of the wanted kind contributes"
    return max(names, key=lambda n: abs(marginals[n]))


@pytest.mark.parametrize("layer", [1, 2])
@pytest.mark.parametrize("family", FAMILIES)
def test_moving_a_node_changes_the_score_by_its_share(family: str, layer: int) -> None:
    """First order: scaling a node's value by (1 + eps) changes the frozen model's score by
    eps * (its query marginal + its key marginal). Nodes of layer ``layer - 1`` at the key
    position are key-side only (and those at the query position query-side only); at layer 2
    the contributions cross a whole lower block (layer 0) as well as the one below."""
    rm = build(family, "plt_skip", n_layers=layer + 1)
    cap, feats, errors = _clean_nodes(rm)
    at = (layer, 1, 7, 4)
    r = qk_attribution(rm, PROMPT, *at, top_k=None)
    base = _moved_score(rm, cap, feats, errors, "E_0_0", 0.0, at)
    assert base == pytest.approx(r.total, rel=1e-5)
    below = f"{layer - 1}_"
    key_only = _pick(r.key_marginals, lambda n: n.startswith(below) and n.endswith("_4"))
    query_only = _pick(r.query_marginals, lambda n: n.startswith(below) and n.endswith("_7"))
    assert key_only not in r.query_marginals and query_only not in r.key_marginals
    token = _pick(r.key_marginals, lambda n: n.startswith("E_"))
    # at layer 2, a layer-0 node reaches both sides through layer 1's attention
    both = [n for n in r.key_marginals if n.startswith("0_") and n in r.query_marginals]
    assert bool(both) == (layer == 2)
    eps = 1e-4
    for node in (key_only, query_only, token, *both[:1]):
        share = r.query_marginals.get(node, 0.0) + r.key_marginals.get(node, 0.0)
        moved = _moved_score(rm, cap, feats, errors, node, eps, at)
        assert (moved - base) / eps == pytest.approx(share, rel=1e-3, abs=1e-6 * abs(r.total))


@pytest.mark.parametrize("layer", [1, 2])
@pytest.mark.parametrize("family", FAMILIES)
def test_bias_terms_are_the_query_and_key_of_the_model_without_nodes(
    family: str, layer: int
) -> None:
    """With every node at zero the frozen model's query and key are the bias vectors (so the
    nodes' contributions, carried through every block below ``layer``, sum to the rest)."""
    rm = build(family, "plt_skip", n_layers=layer + 1)
    cap, feats, errors = _clean_nodes(rm)
    head, q, k = 3, 6, 2
    r = qk_attribution(rm, PROMPT, layer, head, q, k)
    tc = rm.transcoders
    reads = cap.stacked_reads()
    delta = torch.zeros_like(errors)
    for lay in range(rm.n_layers):
        recon = tc.decode_sparse(feats, reads)[lay] - tc.decoder_bias(lay).to(errors.dtype)
        skip = tc.skip(lay, reads[lay])
        if skip is not None:
            recon = recon - skip
        delta[lay, 1:] = -(recon[1:] + errors[lay, 1:])
    assert cap.embed is not None
    qk_scales: dict = {}
    _model_scores(rm, qk_scales=qk_scales)
    rec = _model_scores(rm, frozen_plan(rm, cap, delta, -cap.embed[0]), qk_scales)
    torch.testing.assert_close(rec[layer]["query"][head, q], r.query_bias, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(rec[layer]["key"][head, k], r.key_bias, rtol=1e-5, atol=1e-7)


def test_graph_gives_the_same_attribution_as_its_prompt() -> None:
    from circuitlab.attribution import attribute

    rm = build("llama", "plt_skip")
    graph = attribute(rm, PROMPT, max_n_logits=2, max_feature_nodes=5)
    a = qk_attribution(rm, graph, 1, 0, -1, 3)
    b = qk_attribution(rm, PROMPT, 1, 0, -1, 3)
    assert a.total == b.total and a.pairs == b.pairs
    other = build("llama", "plt")
    with pytest.raises(ValueError, match="made with another model or transcoder set"):
        qk_attribution(other, graph, 1, 0, -1, 3)


def test_top_attention_lists_the_strongest_heads() -> None:
    rm = build("qwen2", "plt")
    fp = FrozenPrompt.build(rm, PROMPT)
    top = top_attention(rm, fp, n=3)
    assert len(top) == 3
    weights = [w for *_, w in top]
    assert weights == sorted(weights, reverse=True)
    for layer, head, key, w in top:
        assert key >= 1
        assert w == pytest.approx(float(fp.capture.patterns[layer][0, head, -1, key]))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((2, 0, 7, 3), "layer=2 is out of range"),
        ((1, 4, 7, 3), "head=4 is out of range"),
        ((1, 0, 8, 3), "query_pos=8 is outside"),
        ((1, 0, 7, -9), "key_pos=-9 is outside"),
        ((1, 0, 3, 5), "comes after query_pos=3"),
        ((1, 0, 7, 1), "masked for query_pos=7"),
    ],
)
def test_bad_requests_are_refused(args: tuple[int, int, int, int], message: str) -> None:
    rm = build("mistral", "plt")  # sliding window of 5
    with pytest.raises(ValueError, match=message):
        qk_attribution(rm, PROMPT, *args)
    fp = FrozenPrompt.build(rm, PROMPT)
    with pytest.raises(ValueError, match="top keys"):
        qk_sweep(rm, fp, 1, 0, 7, keys=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_pairs_are_the_largest_pair_terms(seed: int) -> None:
    """The pruned search (norm bound) finds the same top pairs as the full matrix."""
    from circuitlab.attention.qk import _top_pairs

    g = torch.Generator().manual_seed(seed)
    qv = torch.randn(700, 8, generator=g, dtype=torch.float64) * torch.rand(700, 1, generator=g)
    kv = torch.randn(500, 8, generator=g, dtype=torch.float64) ** 3
    names_q, names_k = [f"q{i}" for i in range(700)], [f"k{i}" for i in range(500)]
    full = -0.3 * qv @ kv.T
    for k, block in ((1, 16), (25, 16), (300, 64), (25, 1024)):
        got = _top_pairs(qv, kv, -0.3, names_q, names_k, k, block=block)
        want = torch.topk(full.abs().flatten(), k).values
        torch.testing.assert_close(
            torch.tensor([abs(p.value) for p in got], dtype=want.dtype), want
        )
        for p in got:
            assert p.value == pytest.approx(float(full[int(p.query_node[1:]), int(p.key_node[1:])]))
    everything = _top_pairs(qv[:20], kv[:30], 2.0, names_q, names_k, None)
    assert len(everything) == 600
