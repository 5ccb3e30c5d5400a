"""What a logit node stands for.

A graph's logit nodes are its attribution targets: usually single vocabulary tokens, but also
virtual targets such as a logit difference or an arbitrary residual direction. Virtual targets
get ``vocab_idx >= vocab_size`` (one past the vocabulary per target, in target order), the same
convention circuit-tracer uses, so node ids stay unique and old graphs stay readable.
"""

from __future__ import annotations

from typing import NamedTuple


class LogitTarget(NamedTuple):
    """One logit node: a display string and a vocabulary index.

    ``vocab_idx >= vocab_size`` marks a custom (virtual) target, e.g. ``logit(x) - logit(y)``.
    """

    token_str: str
    vocab_idx: int

    def is_virtual(self, vocab_size: int) -> bool:
        """True when this target is not a single vocabulary token."""
        return self.vocab_idx >= vocab_size
