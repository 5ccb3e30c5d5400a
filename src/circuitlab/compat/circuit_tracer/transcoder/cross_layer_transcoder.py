"""``circuit_tracer.transcoder.cross_layer_transcoder``: circuitlab's cross-layer class."""

from circuitlab.transcoders import CrossLayerTranscoder

__all__ = ["CrossLayerTranscoder"]
