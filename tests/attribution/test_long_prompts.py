"""What keeps long prompts small gives the same graph: the decoder vectors rebuilt a few
positions at a time, the causal blocks of the transposed attention, the patterns taken out of
the capture, and a smaller sweep batch chosen when the requested one does not fit."""

from __future__ import annotations

import pytest
import torch

from circuitlab.attribution import attribute, backward, sources
from circuitlab.attribution.backward import causal_matmul
from circuitlab.attribution.memory_check import AVAILABLE_MEMORY_ENV, AttributionPlan, _needs

from conftest import PROMPT, build


@pytest.mark.parametrize("kind", ["plt_skip", "clt_skip"])
@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_chunked_projection_and_causal_blocks_equal_the_whole(
    family: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rm = build(family, kind)
    whole = attribute(rm, PROMPT, batch_size=5)
    # One position per projection chunk, three keys per attention block (PROMPT has 8).
    monkeypatch.setattr(sources, "READ_CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(backward, "ATTENTION_BLOCK", 3)
    chunked = attribute(rm, PROMPT, batch_size=5)
    assert torch.equal(whole.active_features, chunked.active_features)
    torch.testing.assert_close(chunked.edges, whole.edges, rtol=1e-12, atol=1e-14)
    assert whole.edges.abs().sum() > 0


def test_causal_matmul_is_the_dense_product(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(0)
    pattern = torch.rand(11, 11, generator=gen, dtype=torch.float64).tril()  # [q, k]
    x = torch.randn(7, 11, generator=gen, dtype=torch.float64)  # [n, q]
    for block in (1, 4, 11, 64):
        monkeypatch.setattr(backward, "ATTENTION_BLOCK", block)
        out = torch.ones(7, 11, dtype=torch.float64)
        causal_matmul(x, pattern, out)
        torch.testing.assert_close(out, 1 + x @ pattern)


def test_attribute_leaves_one_copy_of_the_patterns() -> None:
    rm = build("llama", "plt")
    _, cap = rm.capture(torch.tensor(PROMPT))
    n_patterns = len(cap.patterns)
    bw = backward.FrozenBackward(rm, cap, rm.dtype, consume=True)
    assert n_patterns == rm.n_layers and cap.patterns == {}
    kept = backward.FrozenBackward(rm, rm.capture(torch.tensor(PROMPT))[1], rm.dtype)
    for a, b in zip(bw.layers, kept.layers, strict=True):
        assert torch.equal(a.pattern_t, b.pattern_t)


def test_a_sweep_batch_that_does_not_fit_is_made_smaller(monkeypatch: pytest.MonkeyPatch) -> None:
    rm = build("llama", "plt_skip", dtype=torch.float32)
    ref = attribute(rm, PROMPT, batch_size=16, max_feature_nodes=12, update_interval=1)
    n_active = ref.n_active
    plan = AttributionPlan.of(rm, len(PROMPT), batch_size=16, max_feature_nodes=12)
    plan.n_active = n_active
    plan.settings["max_n_logits"] = ref.n_logits

    def needed(batch: int) -> int:
        return _needs(plan.estimate(batch_size=batch), "sweep", False)["ram"][1]

    # Room for a sweep of 4 rows but not of 8 (the forward needs less than either).
    monkeypatch.setenv(AVAILABLE_MEMORY_ENV, str((needed(4) + needed(8)) // 2))
    lines: list[str] = []
    monkeypatch.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(map(str, a))))
    small = attribute(
        rm, PROMPT, batch_size=16, max_feature_nodes=12, update_interval=1, verbose=True
    )
    assert small.settings["sweep_batch"] == 4 and ref.settings["sweep_batch"] == 16
    assert any("4 rows per backward sweep instead of 16" in line for line in lines)
    assert torch.equal(small.selected_features, ref.selected_features)
    torch.testing.assert_close(small.edges, ref.edges, rtol=1e-5, atol=1e-6)
