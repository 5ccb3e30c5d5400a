"""Training per-layer (PLT) and cross-layer (CLT) transcoders on a model's streamed activations.

``train_transcoders(model, texts, out_dir, TrainConfig(...))`` is the entry point (the CLI's
``circuitlab train``); ``TrainableTranscoders`` is the trainable module, ``jump_relu`` / ``step``
the straight-through JumpReLU pieces and ``ActivationBuffer`` the shuffling activation stream.
"""

from .activations import ActivationBuffer, mlp_io
from .jumprelu import jump_relu, rectangle, step
from .model import TrainableTranscoders
from .trainer import TrainConfig, TrainingInterrupted, export_checkpoint, train_transcoders

__all__ = [
    "ActivationBuffer",
    "TrainConfig",
    "TrainableTranscoders",
    "TrainingInterrupted",
    "export_checkpoint",
    "jump_relu",
    "mlp_io",
    "rectangle",
    "step",
    "train_transcoders",
]
