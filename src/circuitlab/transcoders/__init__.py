"""Transcoders: per-layer and cross-layer, their activation functions and on-disk formats."""

from .activations import JumpReLU, ReLU, TopK, make_activation
from .base import SparseActivations, Transcoders, register_writer
from .cross_layer import CrossLayerTranscoder
from .formats.circuit_tracer import save_cross_layer_transcoder, save_transcoder_set
from .identity import transcoder_fingerprint
from .loading import load_transcoders
from .per_layer import SingleLayerTranscoder, TranscoderSet
from .random import random_cross_layer_transcoder, random_transcoder_set

# ``save`` writes circuit-tracer's layout; the classes do not import their format (it imports them).
register_writer(TranscoderSet, save_transcoder_set)
register_writer(CrossLayerTranscoder, save_cross_layer_transcoder)

__all__ = [
    "CrossLayerTranscoder",
    "JumpReLU",
    "ReLU",
    "SingleLayerTranscoder",
    "SparseActivations",
    "TopK",
    "TranscoderSet",
    "Transcoders",
    "load_transcoders",
    "make_activation",
    "random_cross_layer_transcoder",
    "random_transcoder_set",
    "transcoder_fingerprint",
]
