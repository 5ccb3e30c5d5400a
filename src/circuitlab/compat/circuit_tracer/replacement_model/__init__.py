"""``circuit_tracer.replacement_model``: ``ReplacementModel``."""

from .replacement_model import AttributionSetup, ReplacementModel

__all__ = ["AttributionSetup", "ReplacementModel"]
