"""Attention explained in the local replacement model: QK attributions (why a head attends
where it does), exact in the same frozen model as the attribution graph.

``qk_attribution`` decomposes one pre-softmax score into (query-side node, key-side node)
pairs plus bias terms; ``qk_sweep`` does every key of a query at once; ``top_attention``
finds the strongest attention edges from a position. ``head_loadings`` and
``path_head_loadings`` split a graph edge into the parts each attention head carries.
``add_attention_results`` writes the page's records of both into a graph file (``records``).
See ``docs/attention.md``.
"""

from .frozen import FrozenPrompt
from .loadings import HeadLoadings, head_loadings, path_head_loadings
from .qk import QKAttribution, QKPair, qk_attribution, qk_sweep, top_attention
from .records import add_attention_results, attention_results

__all__ = [
    "FrozenPrompt",
    "HeadLoadings",
    "QKAttribution",
    "QKPair",
    "add_attention_results",
    "attention_results",
    "head_loadings",
    "path_head_loadings",
    "qk_attribution",
    "qk_sweep",
    "top_attention",
]
