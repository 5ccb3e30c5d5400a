"""Writing the lab's validation files: compact JSON, 6 significant digits, atomic."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from circuitlab.atomic import write_atomic


def json_ready(data: Any, digits: int = 6) -> Any:
    """``data`` with floats rounded to ``digits`` significant digits and NaN/inf as ``None``."""
    if isinstance(data, float):
        return float(f"{data:.{digits}g}") if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: json_ready(v, digits) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_ready(v, digits) for v in data]
    return data


def save_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``json_ready(data)`` compactly to ``path`` (temporary file, then rename)."""
    path = Path(path)
    text = json.dumps(json_ready(data), separators=(",", ":"), allow_nan=False)
    write_atomic(path, text.encode())
    return path
