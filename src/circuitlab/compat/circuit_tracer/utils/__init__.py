"""``circuit_tracer.utils``: ``create_graph_files`` and ``get_default_device``."""

import torch

from .create_graph_files import create_graph_files


def get_default_device() -> torch.device:
    """CUDA when there is a GPU, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


__all__ = ["create_graph_files", "get_default_device"]
