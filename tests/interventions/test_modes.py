"""Iterative, constrained and direct-effects patching; scale and error interventions; results."""

from __future__ import annotations

import pytest
import torch

from circuitlab.interventions import (
    ablate_error,
    feature_intervention,
    scale_feature,
    set_feature,
)
from circuitlab.models.session import Plan
from circuitlab.replacement import ReplacementModel
from circuitlab.transcoders.base import SparseActivations

from conftest import PROMPT, build


def _active(rm: ReplacementModel, layer: int) -> tuple[int, int, float]:
    acts = rm.get_activations(PROMPT)
    idx, vals = acts.features.indices, acts.features.values
    i = int((idx[:, 0] == layer).nonzero()[0])
    _, pos, feat = idx[i].tolist()
    return pos, feat, float(vals[i])


def test_no_interventions_reproduce_the_model() -> None:
    rm = build("llama", "plt")
    plain = rm.get_activations(PROMPT)
    for mode in (None, range(rm.n_layers)):
        res = feature_intervention(rm, PROMPT, [], constrained_layers=mode)
        torch.testing.assert_close(res.logits, plain.logits, rtol=0, atol=1e-6)
        torch.testing.assert_close(res.activations, plain.dense(), rtol=0, atol=1e-6)


def test_result_unpacks_like_circuit_tracer_and_shows_the_set_value() -> None:
    rm = build("qwen3", "plt")
    pos, feat, _ = _active(rm, 0)
    logits, acts = rm.feature_intervention(PROMPT, [(0, pos, feat, 5.0)])
    assert isinstance(logits, torch.Tensor) and isinstance(acts, torch.Tensor)
    assert logits.shape == (len(PROMPT), rm.spec.vocab_size)
    assert acts.shape == (rm.n_layers, len(PROMPT), rm.transcoders.d_transcoder)
    assert acts[0, pos, feat] == 5.0
    assert (acts[:, 0] == 0).all()  # BOS features are zeroed, as in get_activations


def test_sparse_and_dense_activations_agree_and_can_be_skipped() -> None:
    rm = build("mistral", "plt_skip")
    pos, feat, _ = _active(rm, 0)
    iv = [scale_feature(0, pos, feat, -2.0)]
    dense = rm.feature_intervention(PROMPT, iv).activations
    sparse = rm.feature_intervention(PROMPT, iv, sparse=True).activations
    assert isinstance(sparse, SparseActivations) and isinstance(dense, torch.Tensor)
    torch.testing.assert_close(sparse.to_dense(*dense.shape), dense)
    none = rm.feature_intervention(PROMPT, iv, return_activations=False)
    assert none.activations is None
    torch.testing.assert_close(none.logits, rm.feature_intervention(PROMPT, iv).logits)


def test_scaling_equals_setting_the_scaled_clean_value() -> None:
    rm = build("gemma2", "clt_skip")
    pos, feat, value = _active(rm, 0)
    for mode in (None, range(rm.n_layers)):
        a = feature_intervention(
            rm, PROMPT, [scale_feature(0, pos, feat, -4.0)], constrained_layers=mode
        )
        b = feature_intervention(
            rm, PROMPT, [set_feature(0, pos, feat, -4.0 * value)], constrained_layers=mode
        )
        torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=1e-9)


def test_setting_a_feature_to_its_own_value_changes_nothing() -> None:
    rm = build("qwen2", "clt_skip")
    pos, feat, value = _active(rm, 1)
    plain = rm.get_activations(PROMPT).logits
    res = feature_intervention(rm, PROMPT, [set_feature(1, pos, feat, value)])
    torch.testing.assert_close(res.logits, plain, rtol=0, atol=1e-9)


def test_iterative_patching_lets_downstream_features_react() -> None:
    rm = build("llama", "plt", n_layers=3)
    pos, feat, _ = _active(rm, 0)
    iv = [set_feature(0, pos, feat, 0.0)]
    base = feature_intervention(rm, PROMPT, []).activations
    iterative = feature_intervention(rm, PROMPT, iv).activations
    direct = feature_intervention(rm, PROMPT, iv, constrained_layers=range(3)).activations
    assert isinstance(base, torch.Tensor)
    assert isinstance(iterative, torch.Tensor) and isinstance(direct, torch.Tensor)
    # Both change layer 1 and 2 readings, and they differ: in iterative mode layer 1's MLP
    # reacts and moves layer 2 too; in direct mode layer 1's output stays frozen.
    assert not torch.allclose(iterative[1:, pos:], base[1:, pos:])
    assert not torch.allclose(iterative[2], direct[2])
    torch.testing.assert_close(iterative[:, :pos], base[:, :pos])  # causal


def _constrained_truth(rm: ReplacementModel, layers: range, delta: torch.Tensor) -> torch.Tensor:
    """Logits with attention frozen, the MLP outputs of ``layers`` at their clean values (skip
    path live) plus ``delta[layer, pos, d]``, other layers live."""
    ids = torch.tensor(PROMPT)
    _, clean = rm.run(ids[None], Plan(record=True))
    assert clean is not None
    reads, writes, tc = clean.stacked_reads(), clean.stacked_writes(), rm.transcoders

    def write(layer: int, read: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if layer not in layers:
            return out
        value = writes[layer] + delta[layer]
        if tc.has_skip:
            value = value + tc.skip(layer, read[0]) - tc.skip(layer, reads[layer])  # type: ignore[operator]
        return value[None]

    logits, _ = rm.run(ids[None], Plan(attention="replay", frozen=clean, mlp_out=write))
    return logits[0]


def test_constrained_layers_hold_clean_outputs_plus_the_decoded_change() -> None:
    rm = build("qwen3", "clt_skip", n_layers=4)
    pos, feat, value = _active(rm, 0)
    layers = range(1, 3)
    res = feature_intervention(
        rm, PROMPT, [scale_feature(0, pos, feat, 3.0)], constrained_layers=layers
    )
    dec = rm.transcoders.decoder_rows(0, torch.tensor([feat]))[0]  # [4, d]: layers 0..3
    delta = torch.zeros(4, len(PROMPT), dec.shape[-1], dtype=dec.dtype)
    delta[:, pos] = 2.0 * value * dec  # the CLT writes only into layers 1 and 2
    torch.testing.assert_close(res.logits, _constrained_truth(rm, layers, delta), rtol=0, atol=1e-9)


def test_constrained_intervention_outside_the_range_is_refused() -> None:
    rm = build("llama", "plt", n_layers=3)
    pos, feat, _ = _active(rm, 0)
    with pytest.raises(ValueError, match="constrained_layers"):
        feature_intervention(rm, PROMPT, [(0, pos, feat, 0.0)], constrained_layers=range(1, 3))


@pytest.mark.parametrize("kind", ["plt", "plt_skip", "plt_resid_mid"])
def test_ablating_every_error_leaves_the_transcoder_reconstruction(kind: str) -> None:
    rm = build("gemma3", kind)
    tc, n = rm.transcoders, len(PROMPT)
    ablations = [
        ablate_error(
            layer,
            slice(None),
        )
        for layer in range(rm.n_layers)
    ]
    res = feature_intervention(rm, PROMPT, ablations)
    ids = torch.tensor(PROMPT)
    _, clean = rm.run(ids[None], Plan(record=True))

    def reconstruction(layer: int, read: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        x = read[0]
        value = tc.decode_sparse(
            tc.encode_sparse(torch.stack([x] * rm.n_layers), slice(0, 0)),
            torch.stack([x] * rm.n_layers),
        )[layer]
        return value[None]

    truth, _ = rm.run(ids[None], Plan(attention="replay", frozen=clean, mlp_out=reconstruction))
    torch.testing.assert_close(res.logits, truth[0], rtol=0, atol=1e-9)
    assert n == res.logits.shape[0]
