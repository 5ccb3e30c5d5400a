"""TranscoderSet, SingleLayerTranscoder and CrossLayerTranscoder reject inconsistent shapes."""

from __future__ import annotations

import pytest
import torch

from circuitlab.transcoders import (
    CrossLayerTranscoder,
    ReLU,
    SingleLayerTranscoder,
    TranscoderSet,
    random_cross_layer_transcoder,
    random_transcoder_set,
)


def _layer(d_t: int, d: int, skip: bool = False) -> SingleLayerTranscoder:
    return SingleLayerTranscoder(
        torch.zeros(d_t, d),
        torch.zeros(d_t),
        torch.zeros(d_t, d),
        torch.zeros(d),
        ReLU(),
        torch.zeros(d, d) if skip else None,
    )


def test_single_layer_rejects_encoder_decoder_mismatch() -> None:
    with pytest.raises(ValueError, match="same shape"):
        SingleLayerTranscoder(
            torch.zeros(4, 3), torch.zeros(4), torch.zeros(5, 3), torch.zeros(3), ReLU()
        )


def test_transcoder_set_rejects_mixed_widths() -> None:
    with pytest.raises(ValueError, match="share d_transcoder"):
        TranscoderSet([_layer(4, 3), _layer(5, 3)])


def test_transcoder_set_rejects_mixed_d_model() -> None:
    with pytest.raises(ValueError, match="d_model"):
        TranscoderSet([_layer(4, 3), _layer(4, 2)])


def test_transcoder_set_rejects_partial_skip() -> None:
    with pytest.raises(ValueError, match="W_skip"):
        TranscoderSet([_layer(4, 3, skip=True), _layer(4, 3)])


def test_transcoder_set_rejects_no_layers() -> None:
    with pytest.raises(ValueError, match="at least one layer"):
        TranscoderSet([])


def test_random_sets_report_their_shapes() -> None:
    ts = random_transcoder_set(3, 8, 16)
    assert (ts.n_layers, ts.d_model, ts.d_transcoder) == (3, 8, 16)
    assert ts.decoder_rows(1, torch.tensor([0, 2])).shape == (2, 1, 8)
    clt = random_cross_layer_transcoder(3, 8, 16)
    assert clt.decoder_rows(1, torch.tensor([0, 2])).shape == (2, 2, 8)


def test_clt_rejects_wrong_decoder_shape() -> None:
    with pytest.raises(ValueError, match=r"W_dec_1 has shape \(4, 1, 3\); expected \(4, 2, 3\)"):
        CrossLayerTranscoder(
            torch.zeros(3, 4, 3),
            torch.zeros(3, 4),
            [torch.zeros(4, 3, 3), torch.zeros(4, 1, 3), torch.zeros(4, 1, 3)],
            torch.zeros(3, 3),
            [ReLU(), ReLU(), ReLU()],
        )


def test_clt_rejects_wrong_number_of_decoders() -> None:
    with pytest.raises(ValueError, match="needs 2 decoders"):
        CrossLayerTranscoder(
            torch.zeros(2, 4, 3),
            torch.zeros(2, 4),
            [torch.zeros(4, 2, 3)],
            torch.zeros(2, 3),
            [ReLU(), ReLU()],
        )
