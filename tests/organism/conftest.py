"""Fixtures: the shipped organism, loaded once per session."""

from __future__ import annotations

import pytest

from circuitlab.organism import load_organism, organism_paths
from circuitlab.organism.load import OrganismPaths
from circuitlab.replacement import ReplacementModel


@pytest.fixture(scope="session")
def organism() -> ReplacementModel:
    return load_organism()


@pytest.fixture(scope="session")
def paths() -> OrganismPaths:
    return organism_paths()
