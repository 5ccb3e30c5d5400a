"""Saving in circuit-tracer's layout and loading back gives the same transcoders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from circuitlab.transcoders import (
    CrossLayerTranscoder,
    JumpReLU,
    TopK,
    TranscoderSet,
    random_cross_layer_transcoder,
    random_transcoder_set,
)
from circuitlab.transcoders.formats import load_circuit_tracer
from circuitlab.transcoders.rows import ParameterRows, SafetensorsRows

from .conftest import Equivalent


@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("activation", ["relu", "jump_relu", "topk"])
def test_transcoder_set_round_trips(
    tmp_path: Path, activation: str, skip: bool, assert_equivalent: Equivalent
) -> None:
    ts = random_transcoder_set(3, 8, 16, activation=activation, skip=skip, k=4, seed=3)
    ts.model_name = "tiny/model"
    ts.save(str(tmp_path / "plt"))
    loaded = load_circuit_tracer(tmp_path / "plt")
    assert isinstance(loaded, TranscoderSet)
    assert loaded.model_name == "tiny/model"
    assert loaded.name == str((tmp_path / "plt").resolve())
    assert loaded.activation.kind == activation
    if activation == "topk":
        assert isinstance(loaded.activation, TopK) and loaded.activation.k == 4
    assert_equivalent(ts, loaded)


@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("activation", ["relu", "jump_relu", "topk"])
def test_cross_layer_transcoder_round_trips(
    tmp_path: Path, activation: str, skip: bool, assert_equivalent: Equivalent
) -> None:
    clt = random_cross_layer_transcoder(3, 8, 16, activation=activation, skip=skip, k=4, seed=5)
    clt.save(str(tmp_path / "clt"))
    loaded = load_circuit_tracer(tmp_path / "clt")
    assert isinstance(loaded, CrossLayerTranscoder)
    assert_equivalent(clt, loaded)


def test_plt_files_hold_circuit_tracer_keys_and_config(tmp_path: Path) -> None:
    ts = random_transcoder_set(2, 8, 16, activation="jump_relu", skip=True)
    ts.save(str(tmp_path / "plt"))
    config = yaml.safe_load((tmp_path / "plt" / "config.yaml").read_text())
    assert config == {
        "model_kind": "transcoder_set",
        "feature_input_hook": "mlp.hook_in",
        "feature_output_hook": "hook_mlp_out",
        "activation": "jump_relu",
    }
    with safe_open(str(tmp_path / "plt" / "layer_1.safetensors"), framework="pt") as f:
        assert set(f.keys()) == {
            "W_enc", "b_enc", "W_dec", "b_dec", "W_skip", "activation_function.threshold"
        }  # fmt: skip
        assert f.get_slice("W_enc").get_shape() == [16, 8]
        torch.testing.assert_close(f.get_tensor("W_skip"), ts._layer(1).W_skip)


def test_clt_files_hold_circuit_tracer_keys_and_skip_orientation(tmp_path: Path) -> None:
    clt = random_cross_layer_transcoder(3, 8, 16, activation="jump_relu", skip=True)
    clt.save(str(tmp_path / "clt"))
    d = tmp_path / "clt"
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ["config.yaml", "W_skip.safetensors"]
        + [f"W_enc_{i}.safetensors" for i in range(3)]
        + [f"W_dec_{i}.safetensors" for i in range(3)]
    )
    with safe_open(str(d / "W_enc_2.safetensors"), framework="pt") as f:
        assert set(f.keys()) == {"W_enc_2", "b_enc_2", "b_dec_2", "threshold_2"}
    with safe_open(str(d / "W_dec_1.safetensors"), framework="pt") as f:
        assert f.get_slice("W_dec_1").get_shape() == [16, 2, 8]
    with safe_open(str(d / "W_skip.safetensors"), framework="pt") as f:
        on_disk = f.get_tensor("W_skip")  # circuit-tracer: skip = x @ W_skip[l]
    x = torch.randn(5, 8)
    assert clt.W_skip is not None
    torch.testing.assert_close(x @ on_disk[1], clt.skip(1, x))
    assert yaml.safe_load((d / "config.yaml").read_text())["model_kind"] == "cross_layer_transcoder"


def test_lazy_decoder_rows_equal_eager_rows(tmp_path: Path) -> None:
    ts = random_transcoder_set(2, 8, 16, seed=1)
    ts.save(str(tmp_path / "plt"))
    lazy = load_circuit_tracer(tmp_path / "plt", lazy_decoder=True, lazy_encoder=True)
    eager = load_circuit_tracer(tmp_path / "plt", lazy_decoder=False)
    assert isinstance(lazy, TranscoderSet) and isinstance(eager, TranscoderSet)
    assert isinstance(lazy._layer(0).dec, SafetensorsRows)
    assert isinstance(lazy._layer(0).enc, SafetensorsRows)
    assert isinstance(eager._layer(0).dec, ParameterRows)
    idx = torch.tensor([15, 0, 15, 7])
    for layer in range(2):
        assert torch.equal(lazy.decoder_rows(layer, idx), eager.decoder_rows(layer, idx))
        assert torch.equal(lazy.encoder_rows(layer, idx), eager.encoder_rows(layer, idx))


def test_lazy_clt_decoder_rows_equal_eager_rows(tmp_path: Path) -> None:
    clt = random_cross_layer_transcoder(3, 8, 16, seed=2)
    clt.save(str(tmp_path / "clt"))
    lazy = load_circuit_tracer(tmp_path / "clt", lazy_decoder=True)
    eager = load_circuit_tracer(tmp_path / "clt", lazy_decoder=False)
    assert isinstance(lazy, CrossLayerTranscoder)
    assert isinstance(lazy.dec[1], SafetensorsRows)
    idx = torch.tensor([3, 3, 1, 14])
    for layer in range(3):
        assert torch.equal(lazy.decoder_rows(layer, idx), eager.decoder_rows(layer, idx))


def test_load_casts_to_requested_dtype(tmp_path: Path) -> None:
    ts = random_transcoder_set(2, 8, 16, dtype=torch.float64)
    ts.save(str(tmp_path / "plt"))
    loaded = load_circuit_tracer(tmp_path / "plt", dtype=torch.float64)
    assert loaded.encoder_bias(0).dtype == torch.float64
    assert loaded.decoder_rows(0, torch.tensor([1])).dtype == torch.float64
    torch.testing.assert_close(
        loaded.decoder_rows(1, torch.tensor([2])), ts.decoder_rows(1, torch.tensor([2]))
    )
    assert isinstance(loaded, TranscoderSet)
    act = loaded.activation
    assert isinstance(act, JumpReLU) and act.threshold.dtype == torch.float64


def test_lazily_loaded_set_saves_again(tmp_path: Path, assert_equivalent: Equivalent) -> None:
    ts = random_transcoder_set(2, 8, 16, skip=True)
    ts.save(str(tmp_path / "a"))
    lazy = load_circuit_tracer(tmp_path / "a", lazy_encoder=True, lazy_decoder=True)
    lazy.save(str(tmp_path / "b"))
    assert_equivalent(ts, load_circuit_tracer(tmp_path / "b"))
