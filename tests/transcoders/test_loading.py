"""load_transcoders: local paths, hub references (offline cache), shortcuts and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from circuitlab.transcoders import (
    CrossLayerTranscoder,
    TranscoderSet,
    load_transcoders,
    random_cross_layer_transcoder,
    random_transcoder_set,
)
from circuitlab.transcoders.loading import HubRef, files_needed, parse_hub_ref

from .conftest import Equivalent, HubCache


@pytest.mark.parametrize(
    ("ref", "expected", "name"),
    [
        ("owner/repo", HubRef("owner/repo"), "owner/repo"),
        ("owner/repo@v2", HubRef("owner/repo", "", "v2"), "owner/repo@v2"),
        (
            "owner/re.po-1/sub/folder",
            HubRef("owner/re.po-1", "sub/folder"),
            "owner/re.po-1//sub/folder",
        ),
        (
            "owner/repo/sub@refs/pr/3",
            HubRef("owner/repo", "sub", "refs/pr/3"),
            "owner/repo//sub@refs/pr/3",
        ),
        ("owner/repo/sub/config.yaml", HubRef("owner/repo", "sub"), "owner/repo//sub"),
        (
            "hf://owner/repo/sub?revision=abc",
            HubRef("owner/repo", "sub", "abc"),
            "owner/repo//sub@abc",
        ),
        ("hf://owner/repo", HubRef("owner/repo"), "owner/repo"),
        ("gemma", HubRef("mwhanna/gemma-scope-transcoders"), "mwhanna/gemma-scope-transcoders"),
        ("llama", HubRef("mntss/transcoder-Llama-3.2-1B"), "mntss/transcoder-Llama-3.2-1B"),
    ],
)
def test_parse_hub_ref(ref: str, expected: HubRef, name: str) -> None:
    parsed = parse_hub_ref(ref)
    assert parsed == expected
    assert parsed.name == name


def test_hub_ref_config_path() -> None:
    assert HubRef("o/r", "a/b").config_path == "a/b/config.yaml"
    assert HubRef("o/r").config_path == "config.yaml"


@pytest.mark.parametrize("ref", ["not a ref", "justname", "owner/repo@", "a/b c"])
def test_ref_that_is_neither_path_nor_hub_id(ref: str) -> None:
    with pytest.raises(ValueError, match="neither an existing path nor a hub id"):
        load_transcoders(ref)


def test_missing_local_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_transcoders(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_transcoders(str(tmp_path / "nothing"))


def test_local_directory_and_config_file(tmp_path: Path, assert_equivalent: Equivalent) -> None:
    ts = random_transcoder_set(2, 4, 8, skip=True)
    ts.save(str(tmp_path / "plt"))
    by_dir = load_transcoders(str(tmp_path / "plt"))
    by_file = load_transcoders(tmp_path / "plt" / "config.yaml")
    assert by_dir.name == by_file.name == str((tmp_path / "plt").resolve())
    assert_equivalent(ts, by_dir)
    assert_equivalent(ts, by_file)


def test_relative_local_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, assert_equivalent: Equivalent
) -> None:
    clt = random_cross_layer_transcoder(2, 4, 8)
    clt.save(str(tmp_path / "owner" / "repo"))
    monkeypatch.chdir(tmp_path)
    loaded = load_transcoders("owner/repo")  # an existing path wins over the hub id
    assert loaded.name == str((tmp_path / "owner" / "repo").resolve())
    assert_equivalent(clt, loaded)


def test_directory_without_config_names_the_fix(tmp_path: Path) -> None:
    random_transcoder_set(2, 4, 8).save(str(tmp_path / "plt"))
    (tmp_path / "plt" / "config.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="No config.yaml .*model_kind: transcoder_set"):
        load_transcoders(tmp_path / "plt")


def test_weight_file_instead_of_directory(tmp_path: Path) -> None:
    random_transcoder_set(1, 4, 8).save(str(tmp_path / "plt"))
    with pytest.raises(ValueError, match="pass its directory"):
        load_transcoders(tmp_path / "plt" / "layer_0.safetensors")


def test_hub_ref_loads_from_offline_cache(
    tmp_path: Path, hub_cache: HubCache, assert_equivalent: Equivalent
) -> None:
    ts = random_transcoder_set(2, 4, 8, activation="topk", k=3)
    ts.model_name = "tiny/model"
    ts.save(str(tmp_path / "src"))
    cache = hub_cache("someone/transcoders", tmp_path / "src", subfolder="plt", revision="v1")
    loaded = load_transcoders("someone/transcoders/plt@v1", cache_dir=str(cache))
    assert loaded.name == "someone/transcoders//plt@v1"
    assert loaded.model_name == "tiny/model"
    assert_equivalent(ts, loaded)
    by_uri = load_transcoders("hf://someone/transcoders/plt?revision=v1", cache_dir=str(cache))
    assert by_uri.name == loaded.name


def test_hub_clt_at_repo_root(
    tmp_path: Path, hub_cache: HubCache, assert_equivalent: Equivalent
) -> None:
    clt = random_cross_layer_transcoder(3, 4, 8, skip=True)
    clt.save(str(tmp_path / "src"))
    cache = hub_cache("someone/clt", tmp_path / "src")
    loaded = load_transcoders("someone/clt", cache_dir=str(cache))
    assert isinstance(loaded, CrossLayerTranscoder) and loaded.name == "someone/clt"
    assert_equivalent(clt, loaded)


def test_hub_config_listing_other_repos(
    tmp_path: Path, hub_cache: HubCache, assert_equivalent: Equivalent
) -> None:
    ts = random_transcoder_set(2, 4, 8)
    ts.save(str(tmp_path / "weights"))
    hub_cache("big/weights", tmp_path / "weights")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "model_kind": "transcoder_set",
                "feature_input_hook": "mlp.hook_in",
                "feature_output_hook": "hook_mlp_out",
                "transcoders": [f"hf://big/weights/layer_{i}.safetensors" for i in range(2)],
            }
        )
    )
    cache = hub_cache("small/config", tmp_path / "cfg")
    loaded = load_transcoders("small/config", cache_dir=str(cache))
    assert isinstance(loaded, TranscoderSet)
    assert_equivalent(ts, loaded)


def test_hub_repo_missing_from_offline_cache(tmp_path: Path, hub_cache: HubCache) -> None:
    cache = hub_cache("someone/other", tmp_path)
    with pytest.raises(OSError, match="Could not fetch .*nobody/nothing.*pass a local directory"):
        load_transcoders("nobody/nothing", cache_dir=str(cache))


def test_hub_subfolder_without_config(tmp_path: Path, hub_cache: HubCache) -> None:
    random_transcoder_set(1, 4, 8).save(str(tmp_path / "src"))
    cache = hub_cache("someone/repo", tmp_path / "src")
    with pytest.raises(FileNotFoundError, match="someone/repo//nested has no nested/config.yaml"):
        load_transcoders("someone/repo/nested", cache_dir=str(cache))


def test_files_needed_asks_only_for_what_the_config_uses() -> None:
    assert files_needed({"model_kind": "transcoder_set"}, "sub") == ["sub/layer_*.safetensors"]
    assert files_needed({"model_kind": "cross_layer_transcoder"}) == [
        "W_enc_*.safetensors",
        "W_dec_*.safetensors",
        "W_skip.safetensors",
    ]
    listed = {"transcoders": ["a/params.npz", "../b.safetensors", "hf://x/y/z.npz", "/abs/c.npz"]}
    assert files_needed(listed, "sub/dir") == ["sub/dir/a/params.npz", "sub/b.safetensors"]


def test_dtype_and_lazy_options_pass_through(tmp_path: Path) -> None:
    random_transcoder_set(2, 4, 8).save(str(tmp_path / "plt"))
    loaded = load_transcoders(tmp_path / "plt", dtype=torch.float64, lazy_decoder=False)
    assert loaded.decoder_rows(0, torch.tensor([0])).dtype == torch.float64
