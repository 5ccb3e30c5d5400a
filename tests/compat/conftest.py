"""Tiny models for the circuit-tracer compatibility tests: in memory and on disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from batch.conftest import tiny_dirs  # noqa: F401  (a fixture: model dir, transcoder dir)
from circuitlab import compat
from circuitlab.compat.circuit_tracer import ReplacementModel
from circuitlab.replacement import ReplacementModel as NativeReplacementModel

from conftest import build

PROMPT = "the capital of state containing Dallas is"


@pytest.fixture(scope="module")
def native() -> NativeReplacementModel:
    """A tiny Llama with per-layer transcoders (float64, so comparisons can be exact)."""
    torch.manual_seed(0)
    return build("llama", dtype=torch.float64)  # pyright: ignore[reportCallIssue]  (root conftest)


@pytest.fixture(scope="module")
def model(native: NativeReplacementModel) -> ReplacementModel:
    """The same model with circuit-tracer's API (modules shared)."""
    return ReplacementModel.from_native(native)


@pytest.fixture
def installed() -> Iterator[None]:
    """``circuit_tracer`` names the compatibility layer for the test, and nothing after it."""
    compat.install()
    yield
    compat.uninstall()


@pytest.fixture
def disk_model(tiny_dirs: tuple[Path, Path]) -> tuple[str, str]:  # noqa: F811
    """``(model_dir, transcoder_dir)`` as strings, as a user passes them."""
    model_dir, tc_dir = tiny_dirs
    return str(model_dir), str(tc_dir)
