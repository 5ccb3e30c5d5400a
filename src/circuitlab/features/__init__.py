"""Feature dashboards and the text corpora they (and transcoder training) stream.

``build_dashboards`` (``circuitlab features build``) writes the compact store that
``read_feature`` reads; ``open_corpus`` and ``token_windows`` turn corpora into fixed-length
windows. See docs/features.md.
"""

from .build import BuildSettings, build_dashboards
from .corpus import open_corpus, token_windows
from .stats import LayerStats, StatsConfig
from .store import read_feature, read_index

__all__ = [
    "BuildSettings",
    "LayerStats",
    "StatsConfig",
    "build_dashboards",
    "open_corpus",
    "read_feature",
    "read_index",
    "token_windows",
]
