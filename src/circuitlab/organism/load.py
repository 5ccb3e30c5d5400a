"""Loading the organism: the shipped weights (``organism/weights``) or a recipe's output."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..replacement import ReplacementModel
from .layout import FEATURES_DIR, INFO_FILE, MODEL_DIR, TRANSCODERS_DIR

SHIPPED = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class OrganismPaths:
    """Where one organism's parts live."""

    root: Path

    @property
    def model(self) -> Path:
        return self.root / MODEL_DIR

    @property
    def transcoders(self) -> Path:
        return self.root / TRANSCODERS_DIR

    @property
    def features(self) -> Path:
        """The dashboard store (``circuitlab serve --features_dir``)."""
        return self.root / FEATURES_DIR

    @property
    def info(self) -> dict[str, Any]:
        """``organism.json``: recipe, timings, accuracy and the state features."""
        return json.loads((self.root / INFO_FILE).read_text())


def organism_paths(root: str | Path | None = None) -> OrganismPaths:
    """Paths of the organism in ``root`` (default: the weights shipped in the package)."""
    paths = OrganismPaths(Path(root) if root is not None else SHIPPED)
    if not (paths.transcoders / "config.yaml").is_file():
        raise FileNotFoundError(
            f"No organism in {paths.root}: build one with "
            f"`python -m circuitlab.organism.recipe --out {paths.root}`."
        )
    return paths


def load_organism(root: str | Path | None = None) -> ReplacementModel:
    """The organism's model with its transcoders (shipped weights unless ``root`` is given)."""
    paths = organism_paths(root)
    return ReplacementModel.from_pretrained(str(paths.model), str(paths.transcoders))
