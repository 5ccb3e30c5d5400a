"""config.yaml handling: file lists, activation choice, and clear errors for broken sets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from circuitlab.transcoders import JumpReLU, ReLU, TopK, TranscoderSet, random_transcoder_set
from circuitlab.transcoders.formats import load_circuit_tracer, parse_hf_uri
from circuitlab.transcoders.formats.circuit_tracer import HfUri

from .conftest import Equivalent, HubCache


def _write_config(directory: Path, **config: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.yaml"
    base = {
        "model_kind": "transcoder_set",
        "feature_input_hook": "mlp.hook_in",
        "feature_output_hook": "hook_mlp_out",
    }
    path.write_text(yaml.safe_dump({**base, **config}))
    return path


def _layer_tensors(d_t: int = 8, d: int = 4, /, **extra: torch.Tensor) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(d_t * 100 + d)
    t = {
        "W_enc": torch.randn(d_t, d, generator=g),
        "b_enc": torch.randn(d_t, generator=g),
        "W_dec": torch.randn(d_t, d, generator=g),
        "b_dec": torch.randn(d, generator=g),
    }
    return {**t, **extra}


@pytest.fixture
def saved_set(tmp_path: Path) -> tuple[TranscoderSet, Path]:
    ts = random_transcoder_set(3, 4, 8, activation="jump_relu", seed=4)
    ts.save(str(tmp_path / "weights"))
    return ts, tmp_path / "weights"


def test_transcoders_list_with_relative_paths(
    tmp_path: Path, saved_set: tuple[TranscoderSet, Path], assert_equivalent: Equivalent
) -> None:
    ts, weights = saved_set
    cfg = _write_config(
        tmp_path / "configs" / "mine",
        feature_input_hook="mlp.hook_in",
        feature_output_hook="hook_mlp_out",
        transcoders=[f"../../weights/layer_{i}.safetensors" for i in range(3)],
    )
    loaded = load_circuit_tracer(cfg)
    assert loaded.name == str(cfg.parent.resolve())
    assert_equivalent(ts, loaded)


def test_transcoders_list_with_absolute_paths(
    tmp_path: Path, saved_set: tuple[TranscoderSet, Path], assert_equivalent: Equivalent
) -> None:
    ts, weights = saved_set
    cfg = _write_config(
        tmp_path / "elsewhere",
        transcoders=[str((weights / f"layer_{i}.safetensors").resolve()) for i in range(3)],
    )
    assert_equivalent(ts, load_circuit_tracer(tmp_path / "elsewhere"))
    assert cfg.is_file()


def test_transcoders_list_with_hf_uris(
    tmp_path: Path,
    saved_set: tuple[TranscoderSet, Path],
    hub_cache: HubCache,
    assert_equivalent: Equivalent,
) -> None:
    ts, weights = saved_set
    cache = hub_cache("someone/weights", weights, subfolder="deep/dir", revision="v1")
    _write_config(
        tmp_path / "cfg",
        transcoders=[
            f"hf://someone/weights/deep/dir/layer_{i}.safetensors?revision=v1" for i in range(3)
        ],
    )
    assert_equivalent(ts, load_circuit_tracer(tmp_path / "cfg", cache_dir=str(cache)))


def test_parse_hf_uri() -> None:
    assert parse_hf_uri("hf://a/b/c/d.npz?revision=r1") == HfUri("a/b", "c/d.npz", "r1")
    assert parse_hf_uri("hf://a/b") == HfUri("a/b", "", None)
    with pytest.raises(ValueError, match="hf://owner/repo"):
        parse_hf_uri("hf://justowner")


def test_missing_config_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="No config.yaml .*model_kind: transcoder_set"):
        load_circuit_tracer(tmp_path)


def test_unknown_model_kind(tmp_path: Path) -> None:
    _write_config(tmp_path, model_kind="sparse_autoencoder")
    with pytest.raises(ValueError, match="unknown model_kind 'sparse_autoencoder'.*transcoder_set"):
        load_circuit_tracer(tmp_path)


def test_missing_required_keys_are_named_with_the_layout(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("feature_input_hook: mlp.hook_in\n")
    with pytest.raises(ValueError) as e:
        load_circuit_tracer(tmp_path)
    text = str(e.value)
    assert "config.yaml has no `model_kind`, `feature_output_hook`" in text
    assert "model_kind: transcoder_set" in text and "feature_input_hook: mlp.hook_in" in text


@pytest.mark.parametrize(
    "text, where, problem",
    [
        ("model_kind: transcoder_set\nfeature_input_hook: [mlp.hook_in\n", "line 3", "flow"),
        (
            "model_kind: transcoder_set\n\tfeature_input_hook: x\n",
            "line 2",
            "'\\t' that cannot start",
        ),
        ("model_kind: transcoder_set\nfeature_input_hook: 'x\n", "line 3", "quoted"),
        ("model_kind: a: b\n", "line 1, column 14", "mapping values"),
    ],
)
def test_broken_yaml_names_the_file_the_line_and_the_layout(
    tmp_path: Path, text: str, where: str, problem: str
) -> None:
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(ValueError) as e:
        load_circuit_tracer(tmp_path)
    message = str(e.value)
    assert f"config.yaml {where}" in message and "not valid YAML" in message
    assert problem in message and "Expected circuit-tracer's layout" in message
    assert e.value.__cause__ is None and e.value.__suppress_context__


@pytest.mark.parametrize(
    "extra, fragment",
    [
        ({"transcoders": "layer_0.safetensors"}, "`transcoders` must be a list"),
        ({"transcoders": [1, 2]}, "entry must be a file path"),
        ({"k": "many"}, "`k` must be an integer"),
        ({"feature_input_hook": ["a"]}, "`feature_input_hook` must be a hook name"),
    ],
)
def test_keys_of_the_wrong_type_are_named(tmp_path: Path, extra: dict, fragment: str) -> None:
    _write_config(tmp_path, **extra)
    with pytest.raises(ValueError, match=fragment):
        load_circuit_tracer(tmp_path)


def test_a_config_that_is_not_a_mapping_or_not_text(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("- model_kind\n- transcoder_set\n")
    with pytest.raises(ValueError, match="must hold a YAML mapping .*got list"):
        load_circuit_tracer(tmp_path)
    (tmp_path / "config.yaml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="not a UTF-8 text file"):
        load_circuit_tracer(tmp_path)


def test_missing_layer_file_is_named(saved_set: tuple[TranscoderSet, Path]) -> None:
    _, weights = saved_set
    (weights / "layer_1.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing layer_1\.safetensors"):
        load_circuit_tracer(weights)


def test_no_layer_files_at_all(tmp_path: Path) -> None:
    _write_config(tmp_path)
    with pytest.raises(FileNotFoundError, match="No layer_"):
        load_circuit_tracer(tmp_path)


def test_listed_file_that_does_not_exist_is_named(tmp_path: Path) -> None:
    _write_config(tmp_path, transcoders=["a.safetensors", "gone.safetensors"])
    save_file(_layer_tensors(), str(tmp_path / "a.safetensors"))
    with pytest.raises(FileNotFoundError, match=r"layer 1: .*gone\.safetensors"):
        load_circuit_tracer(tmp_path)


def test_inconsistent_width_names_layer_and_shape(tmp_path: Path) -> None:
    _write_config(tmp_path)
    save_file(_layer_tensors(8, 4), str(tmp_path / "layer_0.safetensors"))
    save_file(_layer_tensors(6, 4), str(tmp_path / "layer_1.safetensors"))
    with pytest.raises(
        ValueError, match=r"Layer 1 .*layer_1.safetensors.* \[6, 4\] .*layer 0.* \[8, 4\]"
    ):
        load_circuit_tracer(tmp_path)


def test_inconsistent_tensor_in_one_file_is_named(tmp_path: Path) -> None:
    _write_config(tmp_path)
    save_file(_layer_tensors(b_dec=torch.zeros(5)), str(tmp_path / "layer_0.safetensors"))
    with pytest.raises(
        ValueError, match=r"layer_0.safetensors: b_dec has shape \[5\].*needs \[4\]"
    ):
        load_circuit_tracer(tmp_path)


def test_partial_skip_is_an_error(tmp_path: Path) -> None:
    _write_config(tmp_path)
    save_file(_layer_tensors(W_skip=torch.zeros(4, 4)), str(tmp_path / "layer_0.safetensors"))
    save_file(_layer_tensors(), str(tmp_path / "layer_1.safetensors"))
    with pytest.raises(ValueError, match="skip connection"):
        load_circuit_tracer(tmp_path)


def test_activation_defaults_follow_the_threshold(tmp_path: Path) -> None:
    _write_config(tmp_path / "thr")
    save_file(
        _layer_tensors(**{"activation_function.threshold": torch.ones(8)}),
        str(tmp_path / "thr" / "layer_0.safetensors"),
    )
    loaded = load_circuit_tracer(tmp_path / "thr")
    assert isinstance(loaded, TranscoderSet) and isinstance(loaded.activation, JumpReLU)
    _write_config(tmp_path / "plain")
    save_file(_layer_tensors(), str(tmp_path / "plain" / "layer_0.safetensors"))
    loaded = load_circuit_tracer(tmp_path / "plain")
    assert isinstance(loaded, TranscoderSet) and isinstance(loaded.activation, ReLU)


def test_scalar_k_tensor_is_consumed(tmp_path: Path) -> None:
    _write_config(tmp_path, activation="topk")
    save_file(_layer_tensors(k=torch.tensor(3)), str(tmp_path / "layer_0.safetensors"))
    loaded = load_circuit_tracer(tmp_path)
    assert isinstance(loaded, TranscoderSet)
    assert isinstance(loaded.activation, TopK) and loaded.activation.k == 3
    assert (loaded.encode(0, torch.randn(2, 4)) != 0).sum(-1).le(3).all()


def test_config_k_wins_over_file_k(tmp_path: Path) -> None:
    _write_config(tmp_path, activation="topk", k=2)
    save_file(_layer_tensors(k=torch.tensor(3)), str(tmp_path / "layer_0.safetensors"))
    loaded = load_circuit_tracer(tmp_path)
    assert isinstance(loaded, TranscoderSet) and isinstance(loaded.activation, TopK)
    assert loaded.activation.k == 2


def test_topk_without_k_names_the_file(tmp_path: Path) -> None:
    _write_config(tmp_path, activation="topk")
    save_file(_layer_tensors(), str(tmp_path / "layer_0.safetensors"))
    with pytest.raises(ValueError, match=r"layer_0.safetensors: .*k: 64"):
        load_circuit_tracer(tmp_path)


def test_unexpected_tensor_is_an_error(tmp_path: Path) -> None:
    _write_config(tmp_path)
    save_file(_layer_tensors(w_enc=torch.zeros(2)), str(tmp_path / "layer_0.safetensors"))
    with pytest.raises(ValueError, match="unexpected w_enc"):
        load_circuit_tracer(tmp_path)


def test_missing_tensor_is_an_error(tmp_path: Path) -> None:
    _write_config(tmp_path)
    t = _layer_tensors()
    del t["b_enc"]
    save_file(t, str(tmp_path / "layer_0.safetensors"))
    with pytest.raises(ValueError, match="missing b_enc"):
        load_circuit_tracer(tmp_path)


def test_model_name_relative_to_config_becomes_absolute(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    _write_config(tmp_path / "tc", model_name="../model")
    save_file(_layer_tensors(), str(tmp_path / "tc" / "layer_0.safetensors"))
    assert load_circuit_tracer(tmp_path / "tc").model_name == str((tmp_path / "model").resolve())
    _write_config(tmp_path / "tc", model_name="google/gemma-2-2b")
    assert load_circuit_tracer(tmp_path / "tc").model_name == "google/gemma-2-2b"


def test_clt_missing_decoder_file_is_named(tmp_path: Path) -> None:
    from circuitlab.transcoders import random_cross_layer_transcoder

    random_cross_layer_transcoder(3, 4, 8).save(str(tmp_path / "clt"))
    (tmp_path / "clt" / "W_dec_2.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing W_dec_2\.safetensors"):
        load_circuit_tracer(tmp_path / "clt")
    (tmp_path / "clt" / "W_enc_1.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing W_enc_1\.safetensors"):
        load_circuit_tracer(tmp_path / "clt")


def test_clt_with_inconsistent_encoder_is_named(tmp_path: Path) -> None:
    from circuitlab.transcoders import random_cross_layer_transcoder

    random_cross_layer_transcoder(2, 4, 8).save(str(tmp_path / "clt"))
    save_file(
        {"W_enc_1": torch.zeros(6, 4), "b_enc_1": torch.zeros(6), "b_dec_1": torch.zeros(4)},
        str(tmp_path / "clt" / "W_enc_1.safetensors"),
    )
    with pytest.raises(ValueError, match=r"W_enc_1 has shape \[6, 4\].*needs \[8, 4\]"):
        load_circuit_tracer(tmp_path / "clt")


def test_clt_rejects_transcoders_list(tmp_path: Path) -> None:
    _write_config(tmp_path, model_kind="cross_layer_transcoder", transcoders=["a"])
    with pytest.raises(ValueError, match="only supported for transcoder_set"):
        load_circuit_tracer(tmp_path)


def test_missing_hook_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("model_kind: transcoder_set\nfeature_input_hook: x\n")
    with pytest.raises(ValueError, match="no `feature_output_hook`.*hook_mlp_out"):
        load_circuit_tracer(tmp_path)


def test_encoder_with_wrong_rank_is_named(tmp_path: Path) -> None:
    _write_config(tmp_path)
    save_file(_layer_tensors(W_enc=torch.zeros(8, 4, 1)), str(tmp_path / "layer_0.safetensors"))
    with pytest.raises(ValueError, match=r"W_enc has shape \[8, 4, 1\]; expected \[d_t, d_model\]"):
        load_circuit_tracer(tmp_path, lazy_decoder=False)
