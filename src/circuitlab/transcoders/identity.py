"""Which transcoder set is this? A fingerprint that graphs and dashboard stores both record.

Feature ``(layer, idx)`` means something only within its transcoder set, so a dashboard store
serves a graph only when both were made from the same set (``server/dashboards.py``). Names
are not enough (a local set's name is its absolute path; every random test set is called
``random-plt``), so both also record ``transcoder_fingerprint``: a hash of the set's shape and
of the *signs* of a fixed sample of encoder weights (the first 8 features of every layer, their
first 32 input dimensions). Signs survive a reload in another dtype (float32, bfloat16, float16)
or on another device, so the same files give the same fingerprint however they are loaded; two
independently trained or initialised sets agree on a few hundred sign bits by chance only.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

from .base import Transcoders

FINGERPRINT_PREFIX = "tcs1-"
_ROWS, _DIMS = 8, 32


@torch.no_grad()
def transcoder_fingerprint(transcoders: Transcoders) -> str:
    """``tcs1-`` + 16 hex digits identifying ``transcoders`` (module docstring)."""
    tc = transcoders
    shape = {
        "cross_layer": bool(tc.is_cross_layer),
        "n_layers": int(tc.n_layers),
        "d_model": int(tc.d_model),
        "d_transcoder": int(tc.d_transcoder),
    }
    h = hashlib.sha256(json.dumps(shape, sort_keys=True).encode())
    rows = torch.arange(min(_ROWS, tc.d_transcoder))
    for layer in range(tc.n_layers):
        signs = tc.encoder_rows(layer, rows)[:, :_DIMS] > 0
        h.update(bytes(signs.flatten().to(torch.uint8).cpu().tolist()))
    return FINGERPRINT_PREFIX + h.hexdigest()[:16]


def transcoder_set_record(transcoders: Transcoders, model_name: str | None) -> dict[str, Any]:
    """What a dashboard store records about the set it was built from (``build.json``)."""
    return {
        "name": transcoders.name,
        "model": model_name,
        "fingerprint": transcoder_fingerprint(transcoders),
        "n_layers": int(transcoders.n_layers),
        "d_transcoder": int(transcoders.d_transcoder),
    }
