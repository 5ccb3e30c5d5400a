"""circuit-tracer's API (0.5.0) on circuitlab: ``attribute``, ``Graph``, ``ReplacementModel``.

Every module here mirrors one of circuit-tracer's import paths (``circuit_tracer.graph``,
``circuit_tracer.utils.create_graph_files``, ``circuit_tracer.frontend.local_server``, ...)
with thin adapters over circuitlab's own API. Import from here directly, or call
``circuitlab.compat.install()`` so that unmodified ``import circuit_tracer`` code runs on
circuitlab. See docs/migrating.md.
"""

from .attribution.attribute import attribute
from .graph import Graph
from .replacement_model import ReplacementModel

__version__ = "0.5.0"

__all__ = ["Graph", "ReplacementModel", "__version__", "attribute"]
