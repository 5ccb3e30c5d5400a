"""The attribution engine: ``attribute`` and its targets."""

from .attribute import attribute
from .targets import CustomTarget, LogitDiff, TargetSpec

__all__ = ["CustomTarget", "LogitDiff", "TargetSpec", "attribute"]
