"""``circuit_tracer.transcoder.single_layer_transcoder``: circuitlab's per-layer classes."""

from circuitlab.transcoders import SingleLayerTranscoder, TranscoderSet

__all__ = ["SingleLayerTranscoder", "TranscoderSet"]
