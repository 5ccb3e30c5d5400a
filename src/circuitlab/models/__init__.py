"""Hugging Face models: the per-family adapter table, loading, and the hooked forward.

A regular package (not a namespace one) so that the import contract in ``pyproject.toml``
sees it; nothing is re-exported here (import the submodules).
"""
