"""On-disk transcoder formats: circuit-tracer (read/write), GemmaScope npz and SAELens (read)."""

from .circuit_tracer import (
    load_circuit_tracer,
    parse_hf_uri,
    read_config,
    save_cross_layer_transcoder,
    save_transcoder_set,
)
from .gemmascope import read_gemmascope_npz
from .saelens import is_saelens_dir, load_saelens

__all__ = [
    "is_saelens_dir",
    "load_circuit_tracer",
    "load_saelens",
    "parse_hf_uri",
    "read_config",
    "read_gemmascope_npz",
    "save_cross_layer_transcoder",
    "save_transcoder_set",
]
