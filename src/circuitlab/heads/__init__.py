"""The attention-head lab: patterns, head classes, direct logit attribution, the logit lens,
activation and path patching, presets, and layer-by-layer JSON streams.

Works on every supported family (GQA included) with the model alone, no transcoders::

    lab = LabModel.load("smollm2")
    trace = run_trace(lab, "When Mary and John went to the store, John gave a drink to")
    dla = direct_logit_attribution(trace, Target(" Mary", " John"))
    sweep = patch_sweep(lab, clean, corrupted, Target(" Mary", " John"), kind="head")
    paths = path_patch(lab, clean, corrupted, Target(" Mary", " John"), receivers="logits")
"""

from ._model import LabModel
from .classes import CLASSES, HeadScores, Thresholds, classify, classify_one, head_scores
from .dla import DLA, ResolvedTarget, Target, direct_logit_attribution
from .lens import LensRow, lens_logits, logit_lens
from .metrics import HeadMetrics, head_metrics, pattern_metrics, token_flow
from .patching import KINDS, PatchResult, Site, patch_sweep, sweep_sites
from .path_patching import PathPatchResult, Receivers, check_receivers, path_patch
from .presets import PRESETS, Preset, PresetPrompts, Role, get_preset, repeated_tokens
from .stream import stream_analysis, stream_patching, stream_path_patching
from .trace import Trace, run_trace

__all__ = [
    "CLASSES",
    "DLA",
    "KINDS",
    "PRESETS",
    "HeadMetrics",
    "HeadScores",
    "LabModel",
    "LensRow",
    "PatchResult",
    "PathPatchResult",
    "Preset",
    "PresetPrompts",
    "Receivers",
    "ResolvedTarget",
    "Role",
    "Site",
    "Target",
    "Thresholds",
    "Trace",
    "check_receivers",
    "classify",
    "classify_one",
    "direct_logit_attribution",
    "get_preset",
    "head_metrics",
    "head_scores",
    "lens_logits",
    "logit_lens",
    "patch_sweep",
    "path_patch",
    "pattern_metrics",
    "repeated_tokens",
    "run_trace",
    "stream_analysis",
    "stream_path_patching",
    "stream_patching",
    "sweep_sites",
    "token_flow",
]
