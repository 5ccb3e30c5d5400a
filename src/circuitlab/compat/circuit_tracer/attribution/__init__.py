"""``circuit_tracer.attribution``: ``attribute`` and the target records."""

from .attribute import attribute
from .targets import CustomTarget, LogitTarget, TargetSpec

__all__ = ["CustomTarget", "LogitTarget", "TargetSpec", "attribute"]
