"""The compact feature store: records round-trip, and one byte range holds one feature."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from circuitlab.features.store import (
    decode_record,
    encode_record,
    feature_range,
    read_feature,
    read_index,
    write_store,
)


def _records(layer: int, n: int) -> list[dict]:
    return [
        {"index": f, "layer": layer, "act_max": f * 0.5, "tokens": ["a", "é"] * (f + 1)}
        for f in range(n)
    ]


def test_store_round_trips_every_feature(tmp_path: Path) -> None:
    layers = [_records(0, 5), _records(1, 3)]
    write_store(tmp_path / "features", layers)
    for layer, records in enumerate(layers):
        for f, rec in enumerate(records):
            assert read_feature(tmp_path, layer, f) == rec
            assert read_feature(tmp_path / "features", layer, f) == rec


def test_index_is_gzip_json_list_of_filename_and_offsets(tmp_path: Path) -> None:
    write_store(tmp_path, [_records(0, 4), _records(1, 2)])
    with gzip.open(tmp_path / "index.json.gz", "rt") as f:
        index = json.load(f)
    assert [e["filename"] for e in index] == ["layer_0.bin", "layer_1.bin"]
    assert [len(e["offsets"]) for e in index] == [5, 3]
    for e in index:
        assert e["offsets"][0] == 0
        assert e["offsets"][-1] == (tmp_path / e["filename"]).stat().st_size
    assert read_index(tmp_path) == index


def test_a_byte_range_holds_exactly_one_record(tmp_path: Path) -> None:
    layers = [_records(0, 6)]
    write_store(tmp_path, layers)
    index = read_index(tmp_path)
    data = (tmp_path / "layer_0.bin").read_bytes()
    for f in range(6):
        name, start, end = feature_range(index, 0, f)
        assert name == "layer_0.bin"
        # length prefix (little-endian) + zlib JSON fill the range exactly
        assert int.from_bytes(data[start : start + 4], "little") == end - start - 4
        assert decode_record(data[start:end]) == layers[0][f]
        # an HTTP range end is inclusive, so a server may hand one byte more
        assert decode_record(data[start : end + 1]) == layers[0][f]


def test_bad_reads_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="features build"):
        read_feature(tmp_path, 0, 0)
    write_store(tmp_path, [_records(0, 2)])
    with pytest.raises(IndexError, match="Layer 3"):
        read_feature(tmp_path, 3, 0)
    with pytest.raises(IndexError, match="Feature 2"):
        read_feature(tmp_path, 0, 2)
    with pytest.raises(ValueError, match="Truncated"):
        decode_record(encode_record({"a": 1})[:-2])
