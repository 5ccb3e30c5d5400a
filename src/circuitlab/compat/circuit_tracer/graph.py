"""``circuit_tracer.graph``: ``Graph``, ``prune_graph``, ``compute_graph_scores``.

``Graph`` is circuitlab's graph with circuit-tracer's extras: ``cfg``, ``scan``, ``to_pt`` /
``from_pt`` and an in-place ``to(device)``. ``prune_graph`` returns circuit-tracer's masks:
``node_mask [N]`` and a dense ``edge_mask [N, N]`` (``N * N`` bytes; circuitlab's own
``PruneResult`` keeps the kept edges as node pairs instead).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, NamedTuple

import torch

from circuitlab.graph import import_circuit_tracer_pt
from circuitlab.graph import influence as native_influence
from circuitlab.graph.ct_import import _feature_and_logit_rows  # pyright: ignore[reportPrivateUsage]
from circuitlab.graph.graph import Graph as NativeGraph
from circuitlab.graph.pruning import find_threshold as native_find_threshold
from circuitlab.graph.pruning import prune_graph as native_prune_graph
from circuitlab.graph.scores import compute_graph_scores as native_compute_graph_scores
from circuitlab.graph.targets import LogitTarget
from circuitlab.replacement import ReplacementModel as NativeReplacementModel

from ._pt_file import write_pt
from .utils.tl_nnsight_mapping import (
    UnifiedConfig,
    config_from_hf,
    convert_nnsight_config_to_transformerlens,
)

_DTYPES = {
    str(d).removeprefix("torch."): d
    for d in (torch.float32, torch.float64, torch.float16, torch.bfloat16)
}


class Graph(NativeGraph):
    """circuitlab's ``Graph`` with circuit-tracer's ``cfg``, ``scan``, ``to_pt``, ``from_pt``
    and in-place ``to``. Every native attribute and method is there too."""

    def __init__(
        self,
        input_string: str,
        input_tokens: torch.Tensor,
        active_features: torch.Tensor,
        adjacency_matrix: torch.Tensor,
        cfg: UnifiedConfig | Any,
        selected_features: torch.Tensor,
        activation_values: torch.Tensor,
        logit_targets: list[Any],
        logit_probabilities: torch.Tensor,
        scan: str | list[str] | None = None,
        vocab_size: int | None = None,
    ) -> None:
        """circuit-tracer's constructor (its argument order): ``adjacency_matrix [N, N]`` in its
        node order, ``cfg`` a ``UnifiedConfig`` or a transformers config, ``active_features
        [n_active, 3]``, ``selected_features [n_sel]``, ``activation_values [n_sel]``,
        ``logit_targets`` ``LogitTarget(token_str, vocab_idx)`` records, ``logit_probabilities
        [n_logits]``. The graph keeps the feature and logit rows (error and token rows must be
        zero, as attribution leaves them); ``vocab_size`` defaults to ``cfg.d_vocab``."""
        unified = convert_nnsight_config_to_transformerlens(cfg)
        targets = [LogitTarget(str(t[0]), int(t[1])) for t in logit_targets]
        edges = _feature_and_logit_rows(
            adjacency_matrix,
            len(selected_features),
            unified.n_layers,
            len(input_tokens),
            len(targets),
        )
        NativeGraph.__init__(
            self,
            input_string=input_string,
            input_tokens=input_tokens,
            logit_targets=targets,
            logit_probabilities=logit_probabilities,
            vocab_size=int(vocab_size if vocab_size is not None else unified.d_vocab),
            active_features=active_features,
            activation_values=activation_values,
            selected_features=selected_features,
            edges=edges,
            n_layers=unified.n_layers,
            model_name=unified.model_name,
            settings={"cfg": {k: _jsonable(v) for k, v in vars(unified).items()}},
        )
        self.scan = scan

    @classmethod
    def from_native(cls, graph: NativeGraph, model: NativeReplacementModel | None = None) -> Graph:
        """The same graph (tensors shared, ``settings`` copied) as a compatibility ``Graph``.

        With ``model`` (the one the graph was traced in), ``cfg`` records that model's config,
        as circuit-tracer's ``attribute`` does; ``to_pt`` writes it, and circuit-tracer reads
        the tokenizer to decode the prompt from its ``tokenizer_name``.
        """
        new = cls.__new__(cls)
        new.__dict__.update(vars(graph))
        new.settings = dict(graph.settings)
        if model is not None:
            cfg = config_from_hf(
                model.model.config,
                name=model.name,
                dtype=model.dtype,
                architecture=type(model.model).__name__,
            )
            new.settings["cfg"] = {k: _jsonable(v) for k, v in vars(cfg).items()}
        return new

    @property
    def cfg(self) -> UnifiedConfig:
        """circuit-tracer's model summary: recorded at attribution (or read from an imported
        ``.pt``); graphs made without it get the sizes the graph itself knows."""
        raw: dict[str, Any] = dict(self.settings.get("cfg") or {})
        if isinstance(raw.get("dtype"), str):
            raw["dtype"] = _DTYPES.get(raw["dtype"].removeprefix("torch."))
        raw.setdefault("n_layers", self.n_layers)
        raw.setdefault("d_vocab", self.vocab_size)
        raw.setdefault("model_name", self.model_name)
        raw.setdefault("tokenizer_name", raw["model_name"])
        for key in ("d_model", "d_head", "n_heads", "d_mlp"):
            raw.setdefault(key, 0)
        raw.setdefault("original_architecture", "")
        return UnifiedConfig.from_dict(raw)

    @property
    def scan(self) -> str | list[str] | None:
        """The transcoders' identifier (``transcoder_name``, or a list of per-layer scans)."""
        listed = self.settings.get("scan")
        return listed if isinstance(listed, list) else self.transcoder_name

    @scan.setter
    def scan(self, value: str | list[str] | None) -> None:
        if isinstance(value, list):
            self.settings["scan"] = value
        else:
            self.transcoder_name = value

    @property
    def logit_tokens(self) -> torch.Tensor:
        """Deprecated in circuit-tracer: ``logit_token_ids``."""
        warnings.warn(
            "logit_tokens is deprecated; use logit_token_ids", DeprecationWarning, stacklevel=2
        )
        return self.logit_token_ids

    def to(self, device: torch.device | str) -> Graph:
        """Moves every tensor to ``device`` *in place*, as circuit-tracer does, and returns
        this same graph (so ``graph = graph.to(d)`` works too). circuitlab's native
        ``Graph.to`` returns a moved copy instead and leaves the original as it is."""
        moved = NativeGraph.to(_native_view(self), device)
        self.__dict__.update({k: v for k, v in vars(moved).items() if k != "settings"})
        return self

    def to_pt(self, path: str | Path) -> None:
        """Writes the graph as circuit-tracer's ``.pt`` dict (dense ``adjacency_matrix [N, N]``),
        readable by circuit-tracer's ``Graph.from_pt`` and by ``Graph.from_pt`` here."""
        cfg = self.cfg
        targets = [LogitTarget(str(t.token_str), int(t.vocab_idx)) for t in self.logit_targets]
        write_pt(
            {
                "input_string": self.input_string,
                "adjacency_matrix": self.adjacency_matrix.float().cpu(),
                "cfg": cfg,
                "active_features": self.active_features.cpu(),
                "logit_targets": targets,
                "logit_probabilities": self.logit_probabilities.cpu(),
                "vocab_size": int(self.vocab_size),
                "input_tokens": self.input_tokens.cpu(),
                "selected_features": self.selected_features.cpu(),
                "activation_values": self.activation_values.cpu(),
                "scan": self.scan,
            },
            path,
        )

    @staticmethod
    def from_pt(path: str | Path, map_location: str | torch.device = "cpu") -> Graph:
        """Reads a circuit-tracer ``.pt`` graph through circuitlab's restricted unpickler
        (``import_circuit_tracer_pt``: no code in the file can run)."""
        graph = Graph.from_native(import_circuit_tracer_pt(path))
        cfg = graph.settings.get("cfg") or {}
        if cfg.get("model_name") and not graph.model_name:
            graph.model_name = str(cfg["model_name"])
        return graph.to(map_location)


def _native_view(graph: Graph) -> NativeGraph:
    """A native ``Graph`` over the same attributes (native methods that rebuild a graph with
    the dataclass constructor call the native one, not the constructor above)."""
    view = NativeGraph.__new__(NativeGraph)
    view.__dict__.update(vars(graph))
    return view


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value).removeprefix("torch.")


class PruneResult(NamedTuple):
    """circuit-tracer's pruning result: ``node_mask [N]``, ``edge_mask [N, N]`` (bool,
    ``edge_mask[target, source]``) and ``cumulative_scores [N]``."""

    node_mask: torch.Tensor
    edge_mask: torch.Tensor
    cumulative_scores: torch.Tensor


def prune_graph(
    graph: NativeGraph, node_threshold: float = 0.8, edge_threshold: float = 0.98
) -> PruneResult:
    """circuitlab's pruning with circuit-tracer's return shapes (the dense ``[N, N]`` edge
    mask is built here, for code that indexes it as circuit-tracer's)."""
    result = native_prune_graph(graph, node_threshold, edge_threshold)
    n = graph.n_nodes
    edge_mask = torch.zeros(n, n, dtype=torch.bool, device=result.node_mask.device)
    edge_mask[result.edge_targets, result.edge_sources] = True
    return PruneResult(result.node_mask, edge_mask, result.cumulative_scores)


def compute_graph_scores(graph: NativeGraph) -> tuple[float, float]:
    """``(replacement_score, completeness_score)`` as a plain tuple."""
    scores = native_compute_graph_scores(graph)
    return float(scores.replacement), float(scores.completeness)


# ---- circuit-tracer's influence helpers on a dense square matrix A[target, source] ----------
def normalize_matrix(matrix: torch.Tensor) -> torch.Tensor:
    """``|A| / rowsum(|A|)`` (sums clamped to 1e-10): ``[N, N] -> [N, N]``."""
    return native_influence.normalize_rows(matrix)


def compute_influence(
    A: torch.Tensor, logit_weights: torch.Tensor, max_iter: int = 1000
) -> torch.Tensor:
    """``w (A + A^2 + ...)`` for a normalized square ``A [N, N]`` and weights ``w [N]``."""
    rows = torch.arange(A.shape[0], device=A.device)
    return native_influence.compute_influence(A, rows, logit_weights, max_iter)


def compute_node_influence(
    adjacency_matrix: torch.Tensor, logit_weights: torch.Tensor
) -> torch.Tensor:
    """Every node's influence ``[N]`` on the weighted logits."""
    return compute_influence(normalize_matrix(adjacency_matrix), logit_weights)


def compute_edge_influence(
    pruned_matrix: torch.Tensor, logit_weights: torch.Tensor
) -> torch.Tensor:
    """Edge scores ``[N, N]``: each edge's share of its target's input times the target's
    influence plus its own weight."""
    rows = torch.arange(pruned_matrix.shape[0], device=pruned_matrix.device)
    return native_influence.edge_influence(normalize_matrix(pruned_matrix), rows, logit_weights)


def compute_partial_influences(
    edge_matrix: torch.Tensor,
    logit_p: torch.Tensor,
    row_to_node_index: torch.Tensor,
    max_iter: int = 128,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Every node's influence ``[N]`` on the logits from the rows of a partial graph.

    ``edge_matrix [n_rows, N]``: row ``r`` holds the inputs of node ``row_to_node_index[r]``
    (``[n_rows]``); ``logit_p [n_logits]`` weighs the last ``n_logits`` nodes. Rows are
    normalized (``|A| / rowsum``) and the series ``w A + w A^2 + ...`` summed; a graph whose
    paths are longer than ``max_iter`` raises ``RuntimeError``. ``device`` defaults to CUDA
    when there is one, as circuit-tracer's does."""
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = native_influence.normalize_rows(edge_matrix.to(device))
    weights = torch.zeros(edge_matrix.shape[1], dtype=rows.dtype, device=rows.device)
    weights[-len(logit_p) :] = logit_p.to(weights)
    return native_influence.compute_influence(rows, row_to_node_index, weights, max_iter)


def find_threshold(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """The smallest score among the top scores that hold ``threshold`` of the total."""
    return torch.tensor(native_find_threshold(scores, threshold), dtype=scores.dtype)


__all__ = [
    "Graph",
    "PruneResult",
    "compute_edge_influence",
    "compute_graph_scores",
    "compute_influence",
    "compute_node_influence",
    "compute_partial_influences",
    "find_threshold",
    "normalize_matrix",
    "prune_graph",
]
