"""``circuit_tracer.transcoder``: circuitlab's transcoder classes under circuit-tracer's names.

The classes are circuitlab's own (``isinstance`` checks and attribute reads such as
``d_transcoder`` work; their constructors are circuitlab's). Load transcoders with
``ReplacementModel.from_pretrained`` or ``utils.hf_utils.load_transcoder_from_hub``.
"""

from circuitlab.transcoders import SingleLayerTranscoder, TranscoderSet

__all__ = ["SingleLayerTranscoder", "TranscoderSet"]
