"""Offloading MLPs and transcoders during the sweep changes nothing and always restores them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuitlab.attribution import attribute
from circuitlab.attribution.backward import FrozenBackward
from circuitlab.graph import compute_graph_scores, prune_graph
from circuitlab.graph.export import graph_json

from conftest import PROMPT, build


def _state(rm) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in rm.state_dict().items()}


@pytest.mark.parametrize("kind", ["plt_skip", "clt_skip"])
@pytest.mark.parametrize("mode", ["cpu", "disk"])
def test_offload_gives_the_same_graph_and_restores_weights(mode: str, kind: str) -> None:
    rm = build("gemma2", kind)
    before = _state(rm)
    plain = attribute(rm, PROMPT, max_feature_nodes=20, batch_size=8)
    off = attribute(rm, PROMPT, max_feature_nodes=20, batch_size=8, offload=mode)
    assert torch.equal(plain.edges, off.edges)
    after = _state(rm)
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    # The model still works after the round trip, lazily read rows included.
    again = attribute(rm, PROMPT, max_feature_nodes=20, batch_size=8)
    assert torch.equal(plain.edges, again.edges)


def test_disk_offload_restores_weights_after_an_interruption(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rm = build("llama", "plt_skip")
    before = _state(rm)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(FrozenBackward, "rows", interrupted)
    with pytest.raises(KeyboardInterrupt):
        attribute(rm, PROMPT, offload="disk")
    monkeypatch.undo()
    after = _state(rm)
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert not any(p.is_meta for p in rm.parameters())


def test_unknown_offload_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="offload must be None, 'cpu' or 'disk'"):
        attribute(build("llama"), PROMPT, offload="gpu")


def test_disk_offload_keeps_the_edges_in_a_mapped_file() -> None:
    rm = build("llama", "plt")
    ref = attribute(rm, PROMPT)
    off = attribute(rm, PROMPT, offload="disk", edge_dtype=torch.bfloat16)
    again = attribute(rm, PROMPT, edge_dtype=torch.bfloat16)
    assert off.edge_blocks.equal(again.edge_blocks)
    assert torch.equal(off.edges.double(), ref.edges.to(torch.bfloat16).double())
    pruned, pruned_again = prune_graph(off), prune_graph(again)
    assert torch.equal(pruned.node_mask, pruned_again.node_mask)
    assert torch.equal(pruned.edge_targets, pruned_again.edge_targets)
    assert compute_graph_scores(off) == compute_graph_scores(again)
    pages = [graph_json(g, "g") for g in (off, again)]
    assert pages[0]["nodes"] == pages[1]["nodes"] and pages[0]["links"] == pages[1]["links"]
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert "circuitlab-edges-" in maps.read_text()
    capped = attribute(rm, PROMPT, offload="disk", max_feature_nodes=10, batch_size=4)
    assert torch.equal(
        capped.edges, attribute(rm, PROMPT, max_feature_nodes=10, batch_size=4).edges
    )


def test_capture_hands_each_pattern_to_the_sink_as_it_is_computed() -> None:
    """``capture(pattern_sink=...)`` (what ``offload="disk"`` uses to write each layer's
    pattern to the spill file during the forward): called once per layer, in layer order, with
    that layer's pattern; the capture keeps what the sink returns, and the forward is unchanged."""
    from circuitlab.attribution.offload import SpillFile

    rm = build("gemma2", "plt_skip")
    _, plain = rm.capture(PROMPT)
    spill, seen = SpillFile(), []

    def sink(layer: int, pattern: torch.Tensor) -> torch.Tensor:
        seen.append(layer)
        return spill.put(pattern)

    _, spilled = rm.capture(PROMPT, pattern_sink=sink)
    assert seen == list(range(rm.n_layers))
    assert spill.nbytes == sum(p.numel() * p.element_size() for p in plain.patterns.values())
    for layer, pattern in plain.patterns.items():
        assert torch.equal(spilled.patterns[layer], pattern)
    assert plain.logits is not None and spilled.logits is not None
    assert torch.equal(spilled.logits, plain.logits)
