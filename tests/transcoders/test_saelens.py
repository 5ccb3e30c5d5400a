"""SAELens per-layer directories load as one TranscoderSet with circuit-tracer hook names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from circuitlab.transcoders import JumpReLU, ReLU, TopK, TranscoderSet, load_transcoders
from circuitlab.transcoders.formats.saelens import load_saelens, relative_hook
from circuitlab.transcoders.rows import SafetensorsRows

D, D_T = 4, 8


def _write_layer(
    directory: Path, layer: int, cfg: dict[str, Any], *, threshold: bool = False, skip: bool = False
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(layer)
    w = {
        "W_enc": torch.randn(D, D_T, generator=g, dtype=torch.float64),  # [d_in, d_sae]
        "W_dec": torch.randn(D_T, D, generator=g, dtype=torch.float64),
        "b_enc": torch.randn(D_T, generator=g, dtype=torch.float64),
        "b_dec": torch.randn(D, generator=g, dtype=torch.float64),
    }
    if threshold:
        w["threshold"] = torch.rand(D_T, generator=g, dtype=torch.float64) * 0.5
    if skip:
        w["W_skip"] = torch.randn(D, D, generator=g, dtype=torch.float64)  # [d_out, d_in]
    directory.mkdir(parents=True)
    save_file(w, str(directory / "sae_weights.safetensors"))
    (directory / "cfg.json").write_text(json.dumps({"d_in": D, "d_sae": D_T, **cfg}))
    return w


def _reference(w: dict[str, torch.Tensor], x: torch.Tensor, act: str, k: int = 0) -> torch.Tensor:
    """SAELens' own math for one layer."""
    pre = x @ w["W_enc"] + w["b_enc"]
    if act == "jumprelu":
        acts = torch.relu(pre) * (pre > w["threshold"])
    elif act == "topk":
        v, i = pre.topk(k, dim=-1)
        acts = torch.zeros_like(pre).scatter(-1, i, torch.relu(v))
    else:
        acts = torch.relu(pre)
    out = acts @ w["W_dec"] + w["b_dec"]
    return out + x @ w["W_skip"].T if "W_skip" in w else out


def _check(ts: TranscoderSet, weights: list[dict[str, torch.Tensor]], act: str, k: int = 0) -> None:
    x = torch.randn(len(weights), 5, D, dtype=torch.float64)
    for layer, w in enumerate(weights):
        acts = ts.encode(layer, x[layer])
        out = acts @ ts._layer(layer).W_dec + ts.decoder_bias(layer)
        sk = ts.skip(layer, x[layer])
        out = out if sk is None else out + sk
        torch.testing.assert_close(out, _reference(w, x[layer], act, k))


def test_jumprelu_skip_transcoders_in_saelens_6_layout(tmp_path: Path) -> None:
    weights = [
        _write_layer(
            tmp_path / f"layer_{i}",
            i,
            {
                "architecture": "jumprelu_transcoder",
                "d_out": D,
                "metadata": {
                    "hook_name": f"blocks.{i}.ln2.hook_normalized",
                    "hook_name_out": f"blocks.{i}.hook_mlp_out",
                    "model_name": "gpt2",
                },
            },
            threshold=True,
            skip=True,
        )
        for i in range(2)
    ]
    ts = load_transcoders(tmp_path, dtype=torch.float64)
    assert isinstance(ts, TranscoderSet) and isinstance(ts.activation, JumpReLU)
    assert (ts.input_hook, ts.output_hook) == ("ln2.hook_normalized", "hook_mlp_out")
    assert ts.model_name == "gpt2" and ts.has_skip
    assert ts.name == str(tmp_path.resolve())
    assert isinstance(ts._layer(0).dec, SafetensorsRows)
    _check(ts, weights, "jumprelu")


def test_topk_transcoders_with_old_style_cfg_sorted_by_hook_layer(tmp_path: Path) -> None:
    # directory names sort opposite to layers: hook_layer decides
    weights = {
        i: _write_layer(
            tmp_path / name,
            i,
            {
                "architecture": "standard",
                "activation_fn_str": "topk",
                "activation_fn_kwargs": {"k": 3},
                "hook_name": f"blocks.{i}.hook_mlp_in",
                "hook_layer": i,
                "hook_name_out": f"blocks.{i}.hook_mlp_out",
            },
        )
        for i, name in [(0, "z"), (1, "a")]
    }
    ts = load_saelens(tmp_path, dtype=torch.float64, lazy_encoder=True)
    assert isinstance(ts.activation, TopK) and ts.activation.k == 3
    assert ts.input_hook == "hook_resid_mid"  # TL's hook_mlp_in is before ln2
    _check(ts, [weights[0], weights[1]], "topk", 3)


def test_relu_transcoder_with_top_level_k_architecture(tmp_path: Path) -> None:
    w = _write_layer(
        tmp_path / "l0", 0, {"architecture": "topk", "k": 2, "hook_name": "blocks.0.mlp.hook_in"}
    )
    ts = load_saelens(tmp_path, dtype=torch.float64)
    assert isinstance(ts.activation, TopK) and ts.activation.k == 2
    assert ts.output_hook == "hook_mlp_out"
    _check(ts, [w], "topk", 2)


def test_single_saelens_directory_loads_as_one_layer(tmp_path: Path) -> None:
    w = _write_layer(
        tmp_path / "sae",
        0,
        {"architecture": "transcoder", "hook_name": "blocks.0.ln2.hook_normalized"},
    )
    ts = load_transcoders(tmp_path / "sae", dtype=torch.float64)
    assert isinstance(ts, TranscoderSet) and isinstance(ts.activation, ReLU)
    _check(ts, [w], "relu")


def test_apply_b_dec_to_input_is_folded_into_b_enc(tmp_path: Path) -> None:
    w = _write_layer(
        tmp_path / "sae", 0,
        {"architecture": "standard", "apply_b_dec_to_input": True, "hook_name": "blocks.0.hook_resid_mid"},
    )  # fmt: skip
    ts = load_saelens(tmp_path, dtype=torch.float64)
    x = torch.randn(3, D, dtype=torch.float64)
    expected = torch.relu((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
    torch.testing.assert_close(ts.encode(0, x), expected)


def test_relative_hook_names() -> None:
    assert relative_hook("blocks.3.ln2.hook_normalized", "x") == (3, "ln2.hook_normalized")
    assert relative_hook("blocks.12.hook_mlp_in", "x") == (12, "hook_resid_mid")
    assert relative_hook("blocks.0.hook_mlp_out", "x") == (0, "hook_mlp_out")
    with pytest.raises(ValueError, match="per-block"):
        relative_hook("hook_embed", "x")


def test_missing_layer_is_named(tmp_path: Path) -> None:
    for i in (0, 2):
        _write_layer(tmp_path / f"l{i}", i, {"hook_name": f"blocks.{i}.ln2.hook_normalized"})
    with pytest.raises(FileNotFoundError, match=r"none for \[1\]"):
        load_saelens(tmp_path)


def test_duplicate_layer_is_an_error(tmp_path: Path) -> None:
    for name in ("a", "b"):
        _write_layer(tmp_path / name, 0, {"hook_name": "blocks.0.ln2.hook_normalized"})
    with pytest.raises(ValueError, match="are layer 0"):
        load_saelens(tmp_path)


def test_mixed_hooks_are_an_error(tmp_path: Path) -> None:
    _write_layer(tmp_path / "a", 0, {"hook_name": "blocks.0.ln2.hook_normalized"})
    _write_layer(tmp_path / "b", 1, {"hook_name": "blocks.1.hook_resid_mid"})
    with pytest.raises(ValueError, match="differ from layer 0"):
        load_saelens(tmp_path)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"architecture": "gated", "hook_name": "blocks.0.hook_resid_mid"}, "not supported"),
        (
            {
                "hook_name": "blocks.0.hook_resid_mid",
                "normalize_activations": "expected_average_only_in",
            },
            "normalize_activations",
        ),
        ({"architecture": "topk", "hook_name": "blocks.0.hook_resid_mid"}, "needs `k`"),
        ({"architecture": "jumprelu", "hook_name": "blocks.0.hook_resid_mid"}, "threshold"),
        ({"d_out": D}, "no hook_name"),
        (
            {"hook_name": "blocks.0.ln2.hook_normalized", "hook_name_out": "blocks.1.hook_mlp_out"},
            "writes layer 1",
        ),
    ],
)
def test_unsupported_cfgs_give_clear_errors(
    tmp_path: Path, cfg: dict[str, Any], message: str
) -> None:
    _write_layer(tmp_path / "l0", 0, cfg)
    with pytest.raises(ValueError, match=message):
        load_saelens(tmp_path)


def test_missing_weights_file(tmp_path: Path) -> None:
    (tmp_path / "l0").mkdir()
    (tmp_path / "l0" / "cfg.json").write_text(json.dumps({"hook_name": "blocks.0.hook_resid_mid"}))
    with pytest.raises(FileNotFoundError, match="no sae_weights.safetensors"):
        load_saelens(tmp_path)
