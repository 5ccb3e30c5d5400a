"""GemmaScope params.npz files load right, memory-mapped, from config.yaml lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from circuitlab.transcoders import JumpReLU, TranscoderSet, load_transcoders
from circuitlab.transcoders.formats.gemmascope import MemmapRows, open_npz, read_gemmascope_npz
from circuitlab.transcoders.rows import TensorRows

D, D_T = 4, 8


def _write_npz(path: Path, seed: int, compressed: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = {
        "W_enc": rng.standard_normal((D, D_T)).astype(np.float32),  # [d_model, d_t]
        "W_dec": rng.standard_normal((D_T, D)).astype(np.float32),
        "b_enc": rng.standard_normal(D_T).astype(np.float32),
        "b_dec": rng.standard_normal(D).astype(np.float32),
        "threshold": rng.uniform(0, 0.5, D_T).astype(np.float32),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    if compressed:
        np.savez_compressed(path, allow_pickle=False, **params)
    else:
        np.savez(path, allow_pickle=False, **params)
    return params


def _gemmascope_dir(root: Path, n_layers: int = 2) -> list[dict[str, np.ndarray]]:
    params = [
        _write_npz(root / f"layer_{i}" / "width_16k" / "average_l0_7" / "params.npz", seed=i)
        for i in range(n_layers)
    ]
    (root / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "model_name": "google/gemma-2-2b",
                "model_kind": "transcoder_set",
                "feature_input_hook": "ln2.hook_normalized",
                "feature_output_hook": "hook_mlp_out",
                "transcoders": [
                    f"layer_{i}/width_16k/average_l0_7/params.npz" for i in range(n_layers)
                ],
            }
        )
    )
    return params


def _reference(p: dict[str, np.ndarray], x: torch.Tensor) -> torch.Tensor:
    """GemmaScope's own math: JumpReLU(x @ W_enc + b_enc) @ W_dec + b_dec, in float64."""
    t = {k: torch.from_numpy(v).double() for k, v in p.items()}
    pre = x @ t["W_enc"] + t["b_enc"]
    acts = pre * (pre > t["threshold"])
    return acts @ t["W_dec"] + t["b_dec"]


def test_gemmascope_config_loads_and_matches_reference_math(tmp_path: Path) -> None:
    params = _gemmascope_dir(tmp_path / "gs")
    ts = load_transcoders(tmp_path / "gs", dtype=torch.float64)
    assert isinstance(ts, TranscoderSet)
    assert (ts.n_layers, ts.d_model, ts.d_transcoder) == (2, D, D_T)
    assert ts.input_hook == "ln2.hook_normalized" and ts.model_name == "google/gemma-2-2b"
    assert isinstance(ts.activation, JumpReLU)
    x = torch.randn(2, 5, D, dtype=torch.float64)
    for layer in range(2):
        acts = ts.encode(layer, x[layer])
        dec = acts @ ts._layer(layer).W_dec + ts.decoder_bias(layer)
        torch.testing.assert_close(dec, _reference(params[layer], x[layer]))


def test_lazy_npz_rows_are_memory_mapped(tmp_path: Path) -> None:
    params = _write_npz(tmp_path / "params.npz", seed=3)
    layer = read_gemmascope_npz(tmp_path / "params.npz", dtype=torch.float64, lazy_encoder=True)
    assert isinstance(layer.W_dec, MemmapRows) and isinstance(layer.W_dec.array, np.memmap)
    assert isinstance(layer.W_enc, MemmapRows)
    idx = torch.tensor([5, 1, 5, 0])
    expected_dec = torch.from_numpy(params["W_dec"][[5, 1, 5, 0]]).double()
    torch.testing.assert_close(layer.W_dec.rows(idx), expected_dec)
    expected_enc = torch.from_numpy(params["W_enc"].T[[5, 1, 5, 0]]).double()
    torch.testing.assert_close(layer.W_enc.rows(idx), expected_enc)
    assert layer.W_enc.shape == (D_T, D)
    torch.testing.assert_close(layer.W_enc.full(), torch.from_numpy(params["W_enc"].T).double())


def test_eager_npz_is_copied_into_tensors(tmp_path: Path) -> None:
    params = _write_npz(tmp_path / "params.npz", seed=4)
    layer = read_gemmascope_npz(tmp_path / "params.npz", dtype=torch.float32, lazy_decoder=False)
    assert isinstance(layer.W_dec, TensorRows) and isinstance(layer.W_enc, TensorRows)
    torch.testing.assert_close(layer.W_dec.full(), torch.from_numpy(params["W_dec"]))
    assert layer.threshold is not None
    torch.testing.assert_close(layer.threshold, torch.from_numpy(params["threshold"]))


def test_compressed_npz_falls_back_to_reading_whole_arrays(tmp_path: Path) -> None:
    params = _write_npz(tmp_path / "params.npz", seed=5, compressed=True)
    arrays = open_npz(tmp_path / "params.npz")
    assert not isinstance(arrays["W_dec"], np.memmap)
    np.testing.assert_array_equal(arrays["W_dec"], params["W_dec"])


def test_npz_without_required_arrays_is_rejected(tmp_path: Path) -> None:
    np.savez(tmp_path / "params.npz", W_enc=np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="lacks W_dec, b_enc, b_dec"):
        read_gemmascope_npz(tmp_path / "params.npz", dtype=torch.float32)
