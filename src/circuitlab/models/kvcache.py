"""Passing a key/value cache to a transformers model, across transformers versions.

transformers 4.x names the forward argument and the output field ``past_key_values``;
transformers 5.x renames both to ``cache`` (the old names still work there, with a deprecation
warning, until their removal). These two helpers use whichever name the loaded version has.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from torch import nn


@functools.cache
def _cache_argument(forward_owner: type) -> str:
    params = inspect.signature(forward_owner.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kwargs(model: nn.Module, cache: Any) -> dict[str, Any]:
    """``{name: cache}`` for ``model(...)``, with the name this transformers version expects."""
    return {_cache_argument(type(model)): cache}


def output_cache(output: Any) -> Any:
    """The key/value cache a forward with ``use_cache=True`` returned."""
    keys = output.keys() if hasattr(output, "keys") else ()
    return output["cache"] if "cache" in keys else output.past_key_values


__all__ = ["cache_kwargs", "output_cache"]
