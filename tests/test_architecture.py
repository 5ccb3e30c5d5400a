"""The import layers of docs/architecture.md hold, and the few upward calls go through hooks.

``lint-imports`` checks the layers contract in ``pyproject.toml``; the other tests check that
every module has a layer (a new package cannot slip past the contract) and that the hooks the
root package installs (Graph.show, ReplacementModel's intervention methods, Transcoders.save)
are in place and say what to do when they are not.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import circuitlab
import circuitlab.graph.graph as graph_module
import circuitlab.replacement as replacement_module
import circuitlab.transcoders.base as base_module
from circuitlab.replacement import ReplacementModel
from circuitlab.transcoders import TranscoderSet, random_transcoder_set

from conftest import PROMPT, build

ROOT = Path(__file__).resolve().parents[1]

# Package __init__ modules that re-export several layers; they belong to none.
FACADES = {"circuitlab", "circuitlab.__main__", "circuitlab.features", "circuitlab.transcoders"}


def test_lint_imports_keeps_the_layers_contract() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    assert lint.exists(), "install the test extras: pip install -e '.[test]' (import-linter)"
    run = subprocess.run(
        [str(lint), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def _layer_modules() -> set[str]:
    if sys.version_info < (3, 11):
        pytest.skip("reads pyproject.toml with tomllib (Python 3.11+)")
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = config["tool"]["importlinter"]["contracts"]
    return {m.strip() for layer in contract["layers"] for m in layer.split("|")}


def test_every_module_is_in_a_layer() -> None:
    layers = _layer_modules()
    graph = grimp.build_graph("circuitlab", cache_dir=None)
    homeless = sorted(
        m
        for m in graph.modules
        if m not in FACADES and not any(m == p or m.startswith(p + ".") for p in layers)
    )
    assert not homeless, f"add these modules to a layer in pyproject.toml: {homeless}"


def test_root_package_installs_the_upward_hooks() -> None:
    assert graph_module._viewer is not None
    assert replacement_module._interventions is not None
    assert circuitlab.ReplacementModel is ReplacementModel


def test_graph_show_without_a_viewer_says_how_to_install_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[object, object, dict[str, object]]] = []
    monkeypatch.setattr(graph_module, "_viewer", None)
    graph = object.__new__(graph_module.Graph)
    with pytest.raises(RuntimeError, match="set_viewer"):
        graph.show("slug")
    graph_module.set_viewer(lambda g, slug, **kw: seen.append((g, slug, kw)) or "shown")
    assert graph.show("slug", height=300) == "shown"
    assert seen == [(graph, "slug", {"height": 300})]


def test_intervention_methods_without_hooks_say_how_to_install_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = build("llama")
    assert model.feature_intervention(PROMPT, []).logits.shape[0] == len(PROMPT)
    monkeypatch.setattr(replacement_module, "_interventions", None)
    with pytest.raises(RuntimeError, match="import circuitlab"):
        model.feature_intervention(PROMPT, [])
    with pytest.raises(RuntimeError, match="import circuitlab"):
        model.feature_intervention_generate(PROMPT, [])


class _Renamed(TranscoderSet):
    """A family nobody registered a writer for."""


def test_transcoders_save_uses_the_writer_registered_for_its_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ts = random_transcoder_set(2, 8, 16)
    ts.__class__ = _Renamed
    ts.save(str(tmp_path / "inherited"))  # TranscoderSet's writer, found through the MRO
    assert (tmp_path / "inherited" / "config.yaml").exists()

    written: list[str] = []
    monkeypatch.setitem(base_module._writers, _Renamed, lambda tc, d, overwrite: written.append(d))
    ts.save(str(tmp_path / "own"))
    assert written == [str(tmp_path / "own")]

    monkeypatch.delitem(base_module._writers, _Renamed)
    monkeypatch.delitem(base_module._writers, TranscoderSet)
    with pytest.raises(NotImplementedError, match="register_writer"):
        ts.save(str(tmp_path / "none"))
