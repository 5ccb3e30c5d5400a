"""The tiny model and transcoders on disk (shared with the batch tests)."""

from batch.conftest import tiny_dirs  # noqa: F401  (a fixture)
