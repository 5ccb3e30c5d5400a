"""``circuit_tracer.attribution``: ``attribute`` and the target records."""

from .attribute import attribute
from .targets import AttributionTargets, CustomTarget, LogitTarget, TargetSpec

__all__ = ["AttributionTargets", "CustomTarget", "LogitTarget", "TargetSpec", "attribute"]
