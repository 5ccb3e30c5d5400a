"""Head loadings: per-head parts plus the bypass equal the graph's edge at every layer; the
path form equals the per-layer calls; zeroing a head in the frozen model (its pattern, so it
passes nothing) changes the measured edge by exactly its loading; bad nodes are refused."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from circuitlab.attention import FrozenPrompt, head_loadings, path_head_loadings
from circuitlab.attribution import attribute
from circuitlab.attribution.backward import FrozenBackward
from circuitlab.graph.export import node_ids
from circuitlab.models.session import Capture

from conftest import FAMILIES, PROMPT, build
from perturb import frozen_plan


def _graph(family: str, kind: str = "plt_skip"):
    rm = build(family, kind, n_layers=3)
    return rm, attribute(rm, PROMPT, max_n_logits=2, desired_logit_prob=0.99, batch_size=64)


def _strong_edges(graph, n: int = 4) -> list[tuple[str, str, float]]:
    """The ``n`` largest edges of the graph whose path crosses at least one attention layer."""
    ids = node_ids(graph)
    dense = graph.edges
    rows = graph.row_nodes.tolist()
    order = torch.argsort(dense.abs().flatten(), descending=True).tolist()
    out = []
    for i in order:
        r, c = divmod(i, dense.shape[1])
        src, tgt = ids[c], ids[rows[r]]
        if src.endswith(f"_{tgt.split('_')[2]}") and not src.startswith("E_"):
            continue  # same position, not a token: may not cross attention
        out.append((src, tgt, float(dense[r, c])))
        if len(out) == n:
            break
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_heads_plus_bypass_equal_the_edge_and_the_path_form_matches(family: str) -> None:
    rm, graph = _graph(family, "clt_skip" if family == "gemma2" else "plt_skip")
    fp = FrozenPrompt.build(rm, graph)
    for src, tgt, value in _strong_edges(graph):
        path = path_head_loadings(rm, fp, src, tgt)
        assert path.edge == pytest.approx(value, rel=1e-6, abs=1e-9)
        sums = path.heads.sum(1) + path.bypass
        torch.testing.assert_close(sums, torch.full_like(sums, value), rtol=1e-6, atol=1e-9)
        for layer in range(rm.n_layers):
            one = head_loadings(rm, fp, src, tgt, layer)
            torch.testing.assert_close(one.heads[0], path.heads[layer], rtol=1e-9, atol=1e-12)
            assert one.bypass[0] == pytest.approx(float(path.bypass[layer]), abs=1e-12)
    assert (path.heads != 0).any()


def _without_head(bw: FrozenBackward, layer: int, head: int) -> FrozenBackward:
    """A copy of the engine's backward sweep in which ``head`` of ``layer`` passes nothing."""
    clone = copy.copy(bw)
    clone.layers = list(bw.layers)
    pattern_t = bw.layers[layer].pattern_t.clone()
    pattern_t[head] = 0
    clone.layers[layer] = dataclasses.replace(bw.layers[layer], pattern_t=pattern_t)
    return clone


@pytest.mark.parametrize("family", FAMILIES)
def test_each_loading_is_the_edge_lost_without_that_head(family: str) -> None:
    """Reference: the engine's edge minus the edge with one head's pattern zeroed."""
    rm, graph = _graph(family, "clt_skip" if family in ("gpt2", "gemma3") else "plt_skip")
    fp = FrozenPrompt.build(rm, graph)
    for src, tgt, value in _strong_edges(graph, 2):
        path = path_head_loadings(rm, fp, src, tgt)
        layer_, feat, pos = (int(x) for x in tgt.split("_"))
        if layer_ == rm.n_layers + 1:  # a logit
            t_layer, t_pos = rm.n_layers, fp.n_pos - 1
            U = rm.unembed_weight
            vec = U[feat] - U.mean(0)
        else:
            t_layer, t_pos = layer_, pos
            vec = rm.transcoders.encoder_rows(t_layer, torch.tensor([feat]))[0]
        args = (torch.tensor([t_layer]), torch.tensor([t_pos]), vec[None])
        col = fp.node_ids().index(src)
        for layer in range(rm.n_layers):
            for head in range(rm.spec.n_heads):
                ablated = _without_head(fp.backward, layer, head).rows(fp.sources, *args)
                lost = value - float(ablated[0, col])
                assert float(path.heads[layer, head]) == pytest.approx(
                    lost, rel=1e-7, abs=1e-10 * abs(value)
                )


def _measured_edge(rm, clean: Capture, src: str, tgt: str, features, errors) -> float:
    """Target change when the source's value is added once more in the frozen model whose
    patterns are replayed from ``clean`` (``perturb.frozen_plan``)."""
    delta = torch.zeros_like(errors)
    embed = None
    a, b, pos = src.split("_")
    if a == "E":
        assert clean.embed is not None
        embed = torch.zeros_like(clean.embed[0])
        embed[int(pos)] = clean.embed[0, int(pos)]
    elif b == "-1":
        delta[int(a), int(pos)] = errors[int(a), int(pos)]
    else:
        row = ((features.indices == torch.tensor([int(a), int(pos), int(b)])).all(1)).nonzero()
        dec = rm.transcoders.decoder_rows(int(a), torch.tensor([int(b)]))[0].to(errors.dtype)
        delta[int(a) : int(a) + dec.shape[0], int(pos)] = features.values[row[0, 0]] * dec
    ids = torch.tensor(PROMPT)[None]

    def value(cap: Capture) -> float:
        t_layer, t_what, t_pos = (int(x) for x in tgt.split("_"))
        if t_layer == rm.n_layers + 1:
            U = rm.unembed_weight
            assert cap.final is not None
            return float(cap.final[0, -1] @ (U[t_what] - U.mean(0)))
        enc = rm.transcoders.encoder_rows(t_layer, torch.tensor([t_what]))[0]
        return float(cap.reads[t_layer][0, t_pos] @ enc.to(errors.dtype))

    base = rm.run(ids, frozen_plan(rm, clean))[1]
    moved = rm.run(ids, frozen_plan(rm, clean, delta, embed))[1]
    return value(moved) - value(base)


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen3", "gemma2", "gemma3"])
def test_zeroing_a_head_changes_the_edge_by_its_loading(family: str) -> None:
    rm, graph = _graph(family)
    fp = FrozenPrompt.build(rm, graph)
    clean = fp.capture
    tc = rm.transcoders
    reads, writes = clean.stacked_reads(), clean.stacked_writes()
    errors = writes - tc.decode_sparse(fp.features, reads)
    errors[:, 0] = 0
    src, tgt, value = _strong_edges(graph, 1)[0]
    assert _measured_edge(rm, clean, src, tgt, fp.features, errors) == pytest.approx(
        value, rel=1e-6
    )
    path = path_head_loadings(rm, fp, src, tgt)
    layer, head, loading = path.top_heads(1)[0]
    assert loading != 0
    ablated = Capture(**{f: getattr(clean, f) for f in Capture.__dataclass_fields__})
    ablated.patterns = dict(clean.patterns)
    ablated.patterns[layer] = clean.patterns[layer].clone()
    ablated.patterns[layer][:, head] = 0
    measured = _measured_edge(rm, ablated, src, tgt, fp.features, errors)
    assert measured == pytest.approx(value - loading, rel=1e-6, abs=1e-9 * abs(value))


def test_edges_sum_over_a_set_and_bad_requests() -> None:
    rm, graph = _graph("llama")
    fp = FrozenPrompt.build(rm, graph)
    edges = [(s, t) for s, t, _ in _strong_edges(graph, 3)]
    total = head_loadings(rm, fp, edges)
    parts = [path_head_loadings(rm, fp, s, t) for s, t in edges]
    torch.testing.assert_close(total.heads, sum(p.heads for p in parts), rtol=1e-9, atol=1e-12)
    assert total.edge == pytest.approx(sum(p.edge for p in parts))
    src, tgt = edges[0]
    with pytest.raises(ValueError, match="Unknown source node '9_9_9'"):
        head_loadings(rm, fp, "9_9_9", tgt, 1)
    with pytest.raises(ValueError, match="Unknown target node 'x'"):
        head_loadings(rm, fp, src, "x", 1)
    with pytest.raises(ValueError, match="no such logit node"):
        head_loadings(rm, fp, src, f"{rm.n_layers + 1}_63_{len(PROMPT) - 1}", 1)
    with pytest.raises(ValueError, match="layer=3 is out of range"):
        head_loadings(rm, fp, src, tgt, 3)
    with pytest.raises(ValueError, match="Name the edge's target"):
        head_loadings(rm, fp, src)


def test_edges_no_path_can_carry_split_into_zeros() -> None:
    """A source after the target's position, or at the target's read layer, has edge 0 (as the
    engine's row says) and every loading 0; a token node must name the prompt's own token."""
    rm, graph = _graph("llama")
    fp = FrozenPrompt.build(rm, graph)
    idx = fp.features.indices
    early = idx[(idx[:, 1] > 1) & (idx[:, 1] < fp.n_pos - 1)][0].tolist()  # (layer, pos, feat)
    target = f"{early[0]}_{early[2]}_{early[1]}"
    late = f"E_{int(fp.ids[-1])}_{fp.n_pos - 1}"
    same_layer = idx[(idx[:, 0] == early[0]) & (idx[:, 1] > 0) & (idx[:, 1] < early[1])][0].tolist()
    col = fp.node_ids().index(late)
    enc = rm.transcoders.encoder_rows(early[0], torch.tensor([early[2]]))
    row = fp.backward.rows(fp.sources, torch.tensor([early[0]]), torch.tensor([early[1]]), enc)
    assert float(row[0, col]) == 0.0
    for src in (late, f"{same_layer[0]}_{same_layer[2]}_{same_layer[1]}"):
        loads = path_head_loadings(rm, fp, src, target)
        assert loads.edge == 0.0 and not loads.heads.any() and not loads.bypass.any()
    wrong = (int(fp.ids[1]) + 1) % rm.spec.vocab_size
    with pytest.raises(ValueError, match="Unknown source node"):
        path_head_loadings(rm, fp, f"E_{wrong}_1", target)
