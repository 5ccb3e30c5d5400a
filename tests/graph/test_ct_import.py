"""Importing circuit-tracer .pt graphs through the restricted unpickler."""

from __future__ import annotations

import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch

from circuitlab.graph import Graph, LogitTarget, import_circuit_tracer_pt, prune_graph

from .builders import random_graph


# Stand-ins for circuit-tracer's classes, registered under its module paths below so that the
# pickles written here reference exactly the names a real circuit-tracer file does.
class CtLogitTarget(NamedTuple):
    token_str: str
    vocab_idx: int


@dataclass
class CtUnifiedConfig:
    n_layers: int
    d_model: int
    d_head: int
    n_heads: int
    d_mlp: int
    d_vocab: int
    tokenizer_name: str
    model_name: str
    original_architecture: str
    n_key_value_heads: int | None
    dtype: torch.dtype


CtLogitTarget.__module__ = "circuit_tracer.attribution.targets"
CtLogitTarget.__qualname__ = "LogitTarget"
CtUnifiedConfig.__module__ = "circuit_tracer.utils.tl_nnsight_mapping"
CtUnifiedConfig.__qualname__ = "UnifiedConfig"


def _register(monkeypatch: pytest.MonkeyPatch, module: str, name: str, obj: Any) -> None:
    for parent in ("circuit_tracer", "circuit_tracer.attribution", "circuit_tracer.utils"):
        if parent not in sys.modules:
            monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
    mod = sys.modules.get(module) or types.ModuleType(module)
    monkeypatch.setitem(sys.modules, module, mod)
    monkeypatch.setattr(mod, name, obj, raising=False)


@pytest.fixture
def fake_circuit_tracer(monkeypatch: pytest.MonkeyPatch) -> None:
    _register(monkeypatch, "circuit_tracer.attribution.targets", "LogitTarget", CtLogitTarget)
    _register(
        monkeypatch, "circuit_tracer.utils.tl_nnsight_mapping", "UnifiedConfig", CtUnifiedConfig
    )


def _ct_dict(g: Graph, *, legacy: bool = False) -> dict[str, Any]:
    cfg = CtUnifiedConfig(
        n_layers=g.n_layers,
        d_model=16,
        d_head=4,
        n_heads=4,
        d_mlp=64,
        d_vocab=g.vocab_size,
        tokenizer_name="tiny-tok",
        model_name="tiny-model",
        original_architecture="LlamaForCausalLM",
        n_key_value_heads=None,
        dtype=torch.bfloat16,
    )
    d: dict[str, Any] = {
        "input_string": g.input_string,
        "adjacency_matrix": g.adjacency_matrix,
        "cfg": cfg,
        "active_features": g.active_features,
        "logit_targets": [CtLogitTarget(t.token_str, t.vocab_idx) for t in g.logit_targets],
        "logit_probabilities": g.logit_probabilities,
        "vocab_size": g.vocab_size,
        "input_tokens": g.input_tokens,
        "selected_features": g.selected_features,
        "activation_values": g.activation_values,
        "scan_name": "tiny/scan",
    }
    if legacy:
        d["logit_targets"] = g.logit_token_ids
        d["scan"] = d.pop("scan_name")
    return d


def test_import_reproduces_the_graph(tmp_path: Path, fake_circuit_tracer: None) -> None:
    g = random_graph(0)
    path = tmp_path / "ct.pt"
    torch.save(_ct_dict(g), path)
    imported = import_circuit_tracer_pt(path)
    assert torch.equal(imported.edges, g.edges)
    assert torch.equal(imported.adjacency_matrix, g.adjacency_matrix)
    assert imported.logit_targets == g.logit_targets
    assert all(type(t) is LogitTarget for t in imported.logit_targets)
    for name in ("input_tokens", "active_features", "selected_features", "activation_values"):
        assert torch.equal(getattr(imported, name), getattr(g, name)), name
    assert (imported.n_layers, imported.vocab_size) == (g.n_layers, g.vocab_size)
    assert imported.model_name == "tiny-model"
    assert imported.transcoder_name == "tiny/scan"
    assert imported.settings["cfg"]["dtype"] == "torch.bfloat16"
    assert imported.settings["cfg"]["original_architecture"] == "LlamaForCausalLM"
    assert torch.equal(prune_graph(imported).node_mask, prune_graph(g).node_mask)
    imported.save(tmp_path / "ours.safetensors")  # settings are JSON-able


def test_import_of_legacy_file(tmp_path: Path, fake_circuit_tracer: None) -> None:
    g = random_graph(1)
    path = tmp_path / "old.pt"
    torch.save(_ct_dict(g, legacy=True), path)
    imported = import_circuit_tracer_pt(path)
    assert [t.vocab_idx for t in imported.logit_targets] == g.logit_token_ids.tolist()
    assert all(t.token_str == "" for t in imported.logit_targets)
    assert imported.transcoder_name == "tiny/scan"


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_code_in_the_pickle_is_refused_not_run(tmp_path: Path, fake_circuit_tracer: None) -> None:
    marker = tmp_path / "pwned"
    d = _ct_dict(random_graph(2))
    d["input_string"] = _Exploit(marker)
    path = tmp_path / "evil.pt"
    torch.save(d, path)
    with pytest.raises(ValueError, match="refused to import"):
        import_circuit_tracer_pt(path)
    assert not marker.exists()


def test_unknown_class_is_refused(tmp_path: Path, fake_circuit_tracer: None) -> None:
    d = _ct_dict(random_graph(2))
    d["extra"] = CtUnifiedConfig.__new__(CtUnifiedConfig)
    d["cfg"] = types.SimpleNamespace(n_layers=3)
    path = tmp_path / "odd.pt"
    torch.save(d, path)
    with pytest.raises(ValueError, match="refused to import"):
        import_circuit_tracer_pt(path)


def test_nonzero_error_rows_are_rejected(tmp_path: Path, fake_circuit_tracer: None) -> None:
    g = random_graph(3)
    d = _ct_dict(g)
    d["adjacency_matrix"][g.error_offset, 0] = 1.0
    torch.save(d, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="non-zero error or token rows"):
        import_circuit_tracer_pt(tmp_path / "bad.pt")


def test_not_a_torch_file(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable PyTorch file|refused"):
        import_circuit_tracer_pt(path)
