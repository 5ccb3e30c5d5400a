"""``circuit_tracer.utils`` helpers: ``decode_url_features``, ``load_transcoder_from_hub``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from circuitlab.compat.circuit_tracer.utils.decode_url_features import (
    Feature,
    decode_url_features,
)
from circuitlab.compat.circuit_tracer.utils.hf_utils import load_transcoder_from_hub

URL = (
    "https://www.neuronpedia.org/gemma-2-2b/graph?slug=x&pinnedIds="
    + quote("27_22605_10,E_26865_9,20_15589_9,27_L_10")
    + "&supernodes="
    + quote('[["state","6_4012_7","0_13727_7"],["state","1_2_3"],["Texas","20_15589_10"]]')
)


def test_decode_url_features_reads_pinned_nodes_and_supernodes() -> None:
    supernodes, singles = decode_url_features(URL)
    assert supernodes == {
        "state": [Feature(6, 7, 4012), Feature(0, 7, 13727)],
        "state (2)": [Feature(1, 3, 2)],
        "Texas": [Feature(20, 10, 15589)],
    }
    assert singles == [Feature(27, 10, 22605), Feature(-1, 9, 26865), Feature(20, 9, 15589)]
    assert decode_url_features("https://example.org/graph") == ({}, [])


def test_load_transcoder_from_hub_returns_transcoders_and_config(
    tiny_dirs: tuple[Path, Path],
) -> None:
    transcoders, config = load_transcoder_from_hub(str(tiny_dirs[1]), device="cpu")
    assert transcoders.n_layers == 2
    assert config["scan"] == transcoders.name
    assert "model_name" in config  # read from the folder's config.yaml
