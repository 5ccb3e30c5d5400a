"""The attribution graph of one prompt.

Node order (the circuit-tracer layout)::

    [ selected features | errors, layer-major | tokens | logits ]
      0 .. n_sel-1        error[l][p] = n_sel + l*n_pos + p
                                          token[p] = n_sel + n_layers*n_pos + p
                                                    logit[i] = N - n_logits + i

with ``N = n_sel + n_layers*n_pos + n_pos + n_logits``.

Error and token nodes have no inputs, so their rows of the square adjacency matrix are zero.
The graph keeps its edges in ``edge_blocks`` (``graph.edges.EdgeBlocks``): blocks of rows that
skip every entry that must be zero (a target reads only from earlier layers and positions), the
signed values stored once in ``edge_dtype``. Everything in circuitlab (influence, pruning,
scores, export, validation) reads the blocks. For circuit-tracer users ``edges`` (the
``[n_sel + n_logits, N]`` rows, ``row_nodes`` mapping rows to node indices) and
``adjacency_matrix`` (``[N, N]``) are still there, built densely on request.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from circuitlab.graph.edges import EDGE_DTYPES, EdgeBlocks
from circuitlab.graph.targets import LogitTarget

NodeKind = Literal["feature", "error", "token", "logit"]


@dataclass(init=False)
class Graph:
    """An attribution graph over transcoder features.

    Tensors (shapes by name):

    * ``input_tokens[n_pos]`` (long): the prompt's token ids.
    * ``logit_probabilities[n_logits]``: weight of each logit target (its probability, or the
      weight given to a custom target); used by influence, pruning and scores.
    * ``active_features[n_active, 3]`` (long): (layer, pos, feature) of every active feature, in
      lexicographic order.
    * ``activation_values[n_active]``: their activations.
    * ``selected_features[n_sel]`` (long): ascending indices into ``active_features``; the
      features that are nodes of the graph.
    * ``edge_blocks``: the direct effects ``A[target, source]`` (``EdgeBlocks``), targets the
      selected features and the logits. Give either ``edge_blocks`` or a dense
      ``edges[n_sel + n_logits, N]`` (rows = selected features then logits, columns = all
      nodes), which is split into blocks.

    ``settings`` is a JSON-able record of how the graph was made (``max_n_logits``,
    ``desired_logit_prob``, ``max_feature_nodes``, ``batch_size``, ``dtype``, ...).
    ``feature_labels`` maps feature node indices (``0 .. n_sel-1``) to human labels.
    ``transcoder_fingerprint`` identifies the transcoder set (``transcoders.identity``), so the
    lab serves dashboards of that set only.
    """

    input_string: str
    input_tokens: torch.Tensor
    logit_targets: list[LogitTarget]
    logit_probabilities: torch.Tensor
    vocab_size: int
    active_features: torch.Tensor
    activation_values: torch.Tensor
    selected_features: torch.Tensor
    edge_blocks: EdgeBlocks
    n_layers: int
    model_name: str
    transcoder_name: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    feature_labels: dict[int, str] | None = None
    transcoder_fingerprint: str | None = None

    def __init__(
        self,
        input_string: str,
        input_tokens: torch.Tensor,
        logit_targets: list[LogitTarget],
        logit_probabilities: torch.Tensor,
        vocab_size: int,
        active_features: torch.Tensor,
        activation_values: torch.Tensor,
        selected_features: torch.Tensor,
        edges: torch.Tensor | None = None,
        n_layers: int = 0,
        model_name: str = "",
        transcoder_name: str | None = None,
        settings: dict[str, Any] | None = None,
        feature_labels: dict[int, str] | None = None,
        transcoder_fingerprint: str | None = None,
        *,
        edge_blocks: EdgeBlocks | None = None,
    ):
        self.input_string = input_string
        self.input_tokens = input_tokens
        self.logit_targets = [LogitTarget(str(t[0]), int(t[1])) for t in logit_targets]
        self.logit_probabilities = logit_probabilities
        self.vocab_size = vocab_size
        self.active_features = active_features
        self.activation_values = activation_values
        self.selected_features = selected_features
        self.n_layers = n_layers
        self.model_name = model_name
        self.transcoder_name = transcoder_name
        self.settings = {} if settings is None else settings
        labels = feature_labels
        self.feature_labels = (
            None if labels is None else {int(k): str(v) for k, v in labels.items()}
        )
        self.transcoder_fingerprint = transcoder_fingerprint
        _check_fields(self)
        if (edges is None) == (edge_blocks is None):
            raise ValueError("invalid Graph: give exactly one of edges (dense) or edge_blocks")
        if edges is not None:
            _check_dense_edges(self, edges)
            edge_blocks = _blocks_of_dense(self, edges)
        assert edge_blocks is not None
        self.edge_blocks = edge_blocks
        _check_edges(self)

    # ---- sizes ------------------------------------------------------------------------------
    @property
    def n_pos(self) -> int:
        """Number of prompt positions."""
        return int(self.input_tokens.shape[0])

    @property
    def n_selected(self) -> int:
        """Number of feature nodes."""
        return int(self.selected_features.shape[0])

    @property
    def n_logits(self) -> int:
        """Number of logit nodes."""
        return len(self.logit_targets)

    @property
    def n_active(self) -> int:
        """Number of active features (selected or not)."""
        return int(self.active_features.shape[0])

    @property
    def n_errors(self) -> int:
        """Number of error nodes (``n_layers * n_pos``)."""
        return self.n_layers * self.n_pos

    @property
    def n_nodes(self) -> int:
        """Total node count ``N``."""
        return self.n_selected + self.n_errors + self.n_pos + self.n_logits

    @property
    def n_rows(self) -> int:
        """Nodes with inputs (rows of ``edges``): ``n_sel + n_logits``."""
        return self.n_selected + self.n_logits

    # ---- node indices -----------------------------------------------------------------------
    @property
    def error_offset(self) -> int:
        """Index of the first error node."""
        return self.n_selected

    @property
    def token_offset(self) -> int:
        """Index of the first token node."""
        return self.n_selected + self.n_errors

    @property
    def logit_offset(self) -> int:
        """Index of the first logit node."""
        return self.token_offset + self.n_pos

    def feature_node(self, i: int) -> int:
        """Node index of the i-th selected feature (``active_features[selected_features[i]]``)."""
        _check_range("feature", i, self.n_selected)
        return i

    def error_node(self, layer: int, pos: int) -> int:
        """Node index of the error node at (layer, pos)."""
        _check_range("layer", layer, self.n_layers)
        _check_range("pos", pos, self.n_pos)
        return self.error_offset + layer * self.n_pos + pos

    def token_node(self, pos: int) -> int:
        """Node index of the token node at ``pos``."""
        _check_range("pos", pos, self.n_pos)
        return self.token_offset + pos

    def logit_node(self, i: int) -> int:
        """Node index of the i-th logit target."""
        _check_range("logit", i, self.n_logits)
        return self.logit_offset + i

    def node_kind(self, node: int) -> NodeKind:
        """Which kind of node ``node`` is."""
        _check_range("node", node, self.n_nodes)
        if node < self.error_offset:
            return "feature"
        if node < self.token_offset:
            return "error"
        if node < self.logit_offset:
            return "token"
        return "logit"

    def error_position(self, node: int) -> tuple[int, int]:
        """(layer, pos) of an error node."""
        if self.node_kind(node) != "error":
            raise ValueError(f"node {node} is a {self.node_kind(node)} node, not an error node")
        return divmod(node - self.error_offset, self.n_pos)

    @property
    def row_nodes(self) -> torch.Tensor:
        """``row_nodes[n_rows]`` (long): the node index of each row of ``edges``."""
        device = self.selected_features.device
        features = torch.arange(self.n_selected, device=device)
        logits = torch.arange(self.logit_offset, self.n_nodes, device=device)
        return torch.cat([features, logits])

    @property
    def selected_feature_coords(self) -> torch.Tensor:
        """``[n_sel, 3]`` (layer, pos, feature) of each feature node."""
        return self.active_features[self.selected_features.to(self.active_features.device)]

    @property
    def logit_token_ids(self) -> torch.Tensor:
        """``[n_logits]`` (long) vocabulary index of each logit target."""
        return torch.tensor([t.vocab_idx for t in self.logit_targets], dtype=torch.long)

    def logit_weights(self) -> torch.Tensor:
        """``w[N]``: zeros with the logit probabilities in the logit slots (influence seed)."""
        blocks = self.edge_blocks
        w = torch.zeros(self.n_nodes, dtype=blocks.compute_dtype, device=blocks.device)
        w[self.logit_offset :] = self.logit_probabilities.to(w)
        return w

    @property
    def edge_dtype(self) -> torch.dtype:
        """The dtype the edge values are stored in."""
        return self.edge_blocks.dtype

    @property
    def edges(self) -> torch.Tensor:
        """Dense ``[n_sel + n_logits, N]`` rows of direct effects (row ``r`` is node
        ``row_nodes[r]``), in ``edge_dtype``: built on request, for circuit-tracer users.

        Costly on large graphs (``n_rows * N`` values, most of them structural zeros);
        circuitlab itself reads ``edge_blocks``.
        """
        return self.edge_blocks.dense(self.row_nodes)

    @property
    def adjacency_matrix(self) -> torch.Tensor:
        """The square ``[N, N]`` matrix ``A[target, source]`` circuit-tracer stores, built on
        request.

        Costly: it allocates ``N * N`` values, almost all of them zero rows for errors and
        tokens. circuitlab itself reads ``edge_blocks``; use this only for interop.
        """
        return self.edge_blocks.dense(torch.arange(self.n_nodes))

    # ---- devices and files ------------------------------------------------------------------
    def to(self, device: torch.device | str) -> Graph:
        """A copy with every tensor on ``device`` (the original is left as it is)."""
        moved: dict[str, Any] = {
            f.name: value.to(device)
            for f in dataclasses.fields(self)
            if isinstance(value := getattr(self, f.name), torch.Tensor)
        }
        moved["edge_blocks"] = self.edge_blocks.to(device)
        return dataclasses.replace(self, **moved)

    def save(self, path: str | Path) -> None:
        """Write the graph to one ``.safetensors`` file, atomically (see ``graph.storage``)."""
        from circuitlab.graph.storage import save_graph

        save_graph(self, path)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu", mmap: bool = True) -> Graph:
        """Read a graph written by ``save`` (never unpickles); on the CPU the edge values are
        memory-mapped unless ``mmap=False`` (see ``graph.storage.load_graph``)."""
        from circuitlab.graph.storage import load_graph

        return load_graph(path, device=device, mmap=mmap)

    def show(self, slug: str | None = None, **kwargs: Any) -> Any:
        """Render the web lab on this graph inline in Jupyter (see ``circuitlab.server.show``).

        The view comes from the viewer installed with ``set_viewer``: ``import circuitlab``
        installs the web lab's ``circuitlab.server.show``; ``graph/`` never imports the server.
        """
        if _viewer is None:
            raise RuntimeError(
                "Graph.show has no viewer installed: `import circuitlab` installs the web lab's "
                "(circuitlab.server.show), or call circuitlab.graph.graph.set_viewer(your_function)"
            )
        return _viewer(self, slug, **kwargs)


Viewer = Callable[..., Any]
"""What ``Graph.show`` calls: ``viewer(graph, slug, **kwargs)`` returning a notebook display."""

_viewer: Viewer | None = None


def set_viewer(viewer: Viewer) -> None:
    """Install what ``Graph.show`` calls, ``viewer(graph, slug, **kwargs)``.

    The web lab sits above ``graph/`` (docs/architecture.md), so the root package installs
    ``circuitlab.server.show`` here rather than ``Graph`` importing the server.
    """
    global _viewer
    _viewer = viewer


def _check_range(what: str, value: int, size: int) -> None:
    if not 0 <= value < size:
        raise IndexError(f"{what} index {value} is out of range [0, {size})")


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(f"invalid Graph: {message}")


def _check_fields(g: Graph) -> None:
    """Raise ``ValueError`` naming the first inconsistent field (edges apart)."""
    need = _need

    need(g.input_tokens.dim() == 1, f"input_tokens must be 1-D, got {tuple(g.input_tokens.shape)}")
    need(g.n_layers >= 0, f"n_layers must be >= 0, got {g.n_layers}")
    need(
        tuple(g.logit_probabilities.shape) == (g.n_logits,),
        f"logit_probabilities has shape {tuple(g.logit_probabilities.shape)} "
        f"but there are {g.n_logits} logit targets",
    )
    need(
        g.active_features.dim() == 2 and g.active_features.shape[1] == 3,
        f"active_features must be [n_active, 3], got {tuple(g.active_features.shape)}",
    )
    need(
        tuple(g.activation_values.shape) == (g.n_active,),
        f"activation_values has shape {tuple(g.activation_values.shape)}, expected ({g.n_active},)",
    )
    need(g.selected_features.dim() == 1, "selected_features must be 1-D")
    for name in ("input_tokens", "active_features", "selected_features"):
        dtype = getattr(g, name).dtype
        need(not dtype.is_floating_point and dtype != torch.bool, f"{name} must be integer")
    sel = g.selected_features
    if sel.numel() and not sel.is_meta:  # value checks need data
        need(
            int(sel.min()) >= 0 and int(sel.max()) < g.n_active,
            "selected_features must index active_features",
        )
        need(bool((sel[1:] > sel[:-1]).all()), "selected_features must be strictly ascending")
    if g.feature_labels is not None:
        bad = [k for k in g.feature_labels if not 0 <= k < g.n_selected]
        need(not bad, f"feature_labels keys must be feature node indices, got {bad[:5]}")


def _check_edges(g: Graph) -> None:
    need, blocks = _need, g.edge_blocks
    need(blocks.n_nodes == g.n_nodes, f"edge_blocks span {blocks.n_nodes} nodes, not N={g.n_nodes}")
    try:
        blocks.check()
    except ValueError as e:
        need(False, str(e))
    targets = blocks.targets
    need(
        targets.is_meta or bool(((targets < g.n_selected) | (targets >= g.logit_offset)).all()),
        "edges may only go into feature and logit nodes",
    )


def _blocks_of_dense(g: Graph, edges: torch.Tensor) -> EdgeBlocks:
    """``edges[n_rows, N]`` split into blocks by the targets' (read layer, position)."""
    coords = g.selected_feature_coords.to(edges.device)
    logits = torch.ones(g.n_logits, dtype=torch.long, device=edges.device)
    return EdgeBlocks.from_dense(
        edges,
        g.row_nodes.to(edges.device),
        torch.cat([coords[:, 0], logits * g.n_layers]),
        torch.cat([coords[:, 1], logits * (g.n_pos - 1)]),
        g.n_pos,
        g.n_nodes,
    )


def _check_dense_edges(g: Graph, edges: torch.Tensor) -> None:
    if edges.dtype not in EDGE_DTYPES:
        raise ValueError(f"invalid Graph: edges must be one of {EDGE_DTYPES}, got {edges.dtype}")
    if tuple(edges.shape) != (g.n_rows, g.n_nodes):
        raise ValueError(
            f"invalid Graph: edges has shape {tuple(edges.shape)}, expected (n_sel + n_logits, "
            f"N) = ({g.n_rows}, {g.n_nodes})"
        )
