"""Batch tracing: many prompts from a JSONL file, in-process or on Ray, resumable.

See ``batch.prompts`` for the input format, ``batch.store`` for the output folder and the
resume rule, ``batch.run`` for the in-process and Ray runners.
"""

from .prompts import PromptFileError, PromptRecord, read_prompts
from .run import BatchResult, RayOptions, run_batch
from .store import SUMMARY_FIELDS, BatchDir
from .tracing import LoadSpec, TraceSettings

__all__ = [
    "SUMMARY_FIELDS",
    "BatchDir",
    "BatchResult",
    "LoadSpec",
    "PromptFileError",
    "PromptRecord",
    "RayOptions",
    "TraceSettings",
    "read_prompts",
    "run_batch",
]
