"""``circuitlab.compat.install()``: ``import circuit_tracer`` runs on circuitlab."""

from __future__ import annotations

import importlib
import sys
import types

import pytest

from circuitlab import compat
from circuitlab.compat import CircuitTracerInstalledError


@pytest.fixture(autouse=True)
def _clean() -> object:
    yield
    compat.uninstall()


def test_install_registers_every_mirrored_module() -> None:
    layer = compat.install()
    assert layer.__name__ == "circuitlab.compat.circuit_tracer"
    for sub in compat.SUBMODULES:
        module = importlib.import_module("circuit_tracer" + sub)
        assert module.__name__ == "circuitlab.compat.circuit_tracer" + sub
    from circuit_tracer import Graph, ReplacementModel, attribute  # noqa: F401  # pyright: ignore[reportMissingImports]
    from circuit_tracer.frontend.local_server import serve  # noqa: F401  # pyright: ignore[reportMissingImports]
    from circuit_tracer.graph import compute_graph_scores, prune_graph  # noqa: F401  # pyright: ignore[reportMissingImports]
    from circuit_tracer.utils import create_graph_files  # noqa: F401  # pyright: ignore[reportMissingImports]
    from circuit_tracer.utils.create_graph_files import create_graph_files as cgf  # noqa: F401  # pyright: ignore[reportMissingImports]

    assert compat.is_installed()


def test_transcoder_paths_name_circuitlabs_classes() -> None:
    compat.install()
    from circuit_tracer.transcoder import TranscoderSet  # pyright: ignore[reportMissingImports]
    from circuit_tracer.transcoder.cross_layer_transcoder import (  # pyright: ignore[reportMissingImports]
        CrossLayerTranscoder,
    )

    from circuitlab.transcoders import random_cross_layer_transcoder, random_transcoder_set

    assert isinstance(random_transcoder_set(1, 4, 8), TranscoderSet)
    assert isinstance(random_cross_layer_transcoder(1, 4, 8), CrossLayerTranscoder)


def test_install_twice_is_harmless_and_uninstall_removes_it() -> None:
    assert compat.install() is compat.install()
    compat.uninstall()
    assert not compat.is_installed()
    assert not any(n == "circuit_tracer" or n.startswith("circuit_tracer.") for n in sys.modules)


def test_the_as_circuit_tracer_module_installs() -> None:
    sys.modules.pop("circuitlab.compat.as_circuit_tracer", None)
    importlib.import_module("circuitlab.compat.as_circuit_tracer")
    assert compat.is_installed()


def test_a_real_circuit_tracer_is_not_shadowed_unless_forced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = types.ModuleType("circuit_tracer")
    monkeypatch.setitem(sys.modules, "circuit_tracer", real)
    with pytest.raises(CircuitTracerInstalledError, match="force=True"):
        compat.install()
    assert sys.modules["circuit_tracer"] is real
    compat.uninstall()  # leaves the real one alone
    assert sys.modules["circuit_tracer"] is real
    assert compat.install(force=True).__name__ == "circuitlab.compat.circuit_tracer"
