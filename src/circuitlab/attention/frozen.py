"""One prompt in the local replacement model, read at the input of an attention layer.

The graph's backward sweep (``attribution.backward.FrozenBackward``) carries a gradient from a
target's read point down to every node. Here the same transposed frozen map starts at the
residual stream entering layer ``L``'s attention (before its pre-attention norm): the result
is each node's contribution to a linear read-out of that residual, e.g. one component of a
head's query or key vector. ``FrozenPrompt`` also records, per layer, what each attention
module received (its normed input, rotary ``cos``/``sin`` and mask), so the query and key
maps (``attention.qk_maps``) start from the model's own values.

Columns (sources) are the graph engine's: ``[active features | errors, layer-major |
tokens]``, named with the lab's node ids (``graph.export``): ``{layer}_{feature}_{pos}``,
``{layer}_-1_{pos}``, ``E_{token_id}_{pos}``. Every active feature is a column, whether or not
a graph selected it, so the contributions are complete.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ..attribution.backward import FrozenBackward
from ..attribution.sources import Sources
from ..graph.graph import Graph
from ..models.norms import norm_transpose
from ..models.session import Capture
from ..models.tokens import Prompt
from ..replacement import ReplacementModel
from ..transcoders.base import SparseActivations


@dataclass
class AttentionInputs:
    """What each attention module received in the recorded forward (batch row 0).

    ``hidden[layer] [pos, d]`` its input (the pre-attention norm's output); ``rope[layer]``
    ``(cos, sin) [pos, d_head]`` or None (GPT-2); ``mask[layer] [q, k]`` additive mask or None.
    """

    hidden: dict[int, torch.Tensor] = field(default_factory=dict)
    rope: dict[int, tuple[torch.Tensor, torch.Tensor] | None] = field(default_factory=dict)
    mask: dict[int, torch.Tensor | None] = field(default_factory=dict)


@contextmanager
def recording_attention_inputs(model: ReplacementModel) -> Iterator[AttentionInputs]:
    """Records every attention module's inputs while the block runs (pre-hooks)."""
    rec = AttentionInputs()
    handles = []

    def hook(layer: int):
        def fn(module: nn.Module, args: tuple, kwargs: dict) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            rec.hidden[layer] = hidden.detach()[0]
            pe = kwargs.get("position_embeddings")
            rec.rope[layer] = None if pe is None else (pe[0].detach()[0], pe[1].detach()[0])
            mask = kwargs.get("attention_mask")
            rec.mask[layer] = mask.detach()[0, 0] if isinstance(mask, torch.Tensor) else None

        return fn

    try:
        for layer in range(model.n_layers):
            attn = model.block(layer).get_submodule(model.adapter.attn)
            handles.append(attn.register_forward_pre_hook(hook(layer), with_kwargs=True))
        yield rec
    finally:
        for h in handles:
            h.remove()


class FrozenPrompt:
    """A prompt's capture, its graph sources and the transposed frozen model.

    Build with ``FrozenPrompt.build(model, graph_or_prompt)``. ``contributions(layer,
    positions, directions)`` gives ``[batch, n_cols]``: the contribution of every node to
    ``<directions[b], resid_pre[layer, positions[b]]>``.
    """

    def __init__(
        self,
        model: ReplacementModel,
        ids: torch.Tensor,
        capture: Capture,
        inputs: AttentionInputs,
        features: SparseActivations,
        sources: Sources,
        backward: FrozenBackward,
    ):
        self.model, self.ids, self.capture, self.inputs = model, ids, capture, inputs
        self.features, self.sources, self.backward = features, sources, backward
        self.dtype = backward.dtype
        self.graph: Graph | None = None  # the graph the prompt came from, if any

    @classmethod
    @torch.no_grad()
    def build(cls, model: ReplacementModel, graph_or_prompt: Graph | Prompt) -> FrozenPrompt:
        """Records the prompt (a graph's own tokens for a ``Graph``) and its graph sources."""
        graph = graph_or_prompt if isinstance(graph_or_prompt, Graph) else None
        prompt = graph.input_tokens if graph is not None else graph_or_prompt
        assert not isinstance(prompt, Graph)
        with recording_attention_inputs(model) as inputs:
            ids, cap = model.capture(prompt)
        dtype = model.dtype
        sources = Sources.from_capture(model, cap, dtype)
        features = sources.features
        if graph is not None:
            _check_graph(graph, features, ids)
        fp = cls(model, ids, cap, inputs, features, sources, FrozenBackward(model, cap, dtype))
        fp.graph = graph
        return fp

    @property
    def n_pos(self) -> int:
        return int(self.ids.shape[0])

    @property
    def n_cols(self) -> int:
        return self.sources.n_cols

    def node_ids(self) -> list[str]:
        """The lab's node id of every column (see the module docstring)."""
        return self.names(torch.arange(self.n_cols))

    def names(self, cols: torch.Tensor) -> list[str]:
        """The lab's node ids of the columns ``cols [n]`` (naming only these: a long prompt
        has ~10^5 columns, and a result names a few of them)."""
        n_feat, n_pos = self.sources.n_features, self.n_pos
        cols = cols.long().cpu()
        feats = self.features.indices[cols.clamp(max=max(n_feat - 1, 0))].tolist() if n_feat else []
        toks = self.ids.tolist()
        out = []
        for i, c in enumerate(cols.tolist()):
            if c < n_feat:
                layer, pos, feat = feats[i]
                out.append(f"{layer}_{feat}_{pos}")
            elif c < self.sources.token_col:
                layer, pos = divmod(c - n_feat, n_pos)
                out.append(f"{layer}_-1_{pos}")
            else:
                pos = c - self.sources.token_col
                out.append(f"E_{toks[pos]}_{pos}")
        return out

    @torch.no_grad()
    def contributions(
        self, layer: int, positions: torch.Tensor, directions: torch.Tensor
    ) -> torch.Tensor:
        """``[batch, n_cols]``: each node's part of ``<directions[b], resid_pre[layer, pos[b]]>``.

        ``directions [batch, d]`` are read from the residual stream entering layer ``layer``
        (before its pre-attention norm); ``positions [batch]``. The sweep is the graph engine's
        (``FrozenBackward``) from that point down: the layers below ``layer`` only.
        """
        bw, ad, src = self.backward, self.model.adapter, self.sources
        b, p = positions.shape[0], int(positions.max()) + 1
        out = torch.zeros(b, src.n_cols + 1, dtype=self.dtype, device=directions.device)
        g = torch.zeros(b, p, directions.shape[1], dtype=self.dtype, device=directions.device)
        rows, v = torch.arange(b), directions.to(self.dtype)
        g[rows, positions] = v
        if layer > 0:  # the layer below: each row is non-zero at its own position only
            self._first_layer(layer - 1, positions, v, g, out)
        for lower in range(layer - 2, -1, -1):
            lay = bw.layers[lower]
            gw = g
            if lay.post_mlp is not None and not bw.write_after_post_norm:
                gw = bw._norm_t(ad.post_mlp_norm, lower, g, lay.post_mlp)
            src.read(out, lower, gw)
            if lay.W_skip is not None:
                sk = gw @ lay.W_skip
                if lay.ln2 is not None:
                    sk *= lay.ln2[:p].to(self.dtype)
                g += sk
            ga = (
                g
                if lay.post_attn is None
                else bw._norm_t(ad.post_attn_norm, lower, g, lay.post_attn)
            )
            bw._attention_t(lay, ga, g)
        src.read_tokens(out, g)
        return out[:, :-1]

    def _first_layer(
        self,
        lower: int,
        positions: torch.Tensor,
        v: torch.Tensor,
        g: torch.Tensor,
        out: torch.Tensor,
    ) -> None:
        """``contributions``' step through layer ``lower`` for gradients ``g [b, p, d]`` that
        are ``v [b, d]`` at ``positions [b]`` and zero elsewhere: the skip path and the
        attention (``W_O`` and the pattern row) applied to one vector per row instead of to
        every position, all zero but one (``FrozenBackward._attention_at``)."""
        bw, ad, src = self.backward, self.model.adapter, self.sources
        lay, rows = bw.layers[lower], torch.arange(v.shape[0])
        vw = v
        if lay.post_mlp is not None and not bw.write_after_post_norm:
            vw = self._norm_at(ad.post_mlp_norm, lower, v, lay.post_mlp[positions])
        if vw is v:
            src.read(out, lower, g)
        else:
            gw = torch.zeros_like(g)
            gw[rows, positions] = vw
            src.read(out, lower, gw)
        if lay.W_skip is not None:
            sk = vw @ lay.W_skip
            if lay.ln2 is not None:
                sk *= lay.ln2[positions].to(self.dtype)
            g[rows, positions] += sk
        va = g[rows, positions]
        if lay.post_attn is not None:
            va = self._norm_at(ad.post_attn_norm, lower, va, lay.post_attn[positions])
        bw._attention_at(lay, va, positions, g)

    def _norm_at(
        self, name: str | None, layer: int, v: torch.Tensor, scale: torch.Tensor
    ) -> torch.Tensor:
        """A frozen norm transposed on vectors ``v [b, d]`` with their own scales ``[b, 1]``."""
        assert name is not None
        module = self.model.block(layer).get_submodule(name)
        return norm_transpose(self.model.adapter.norm, module, v, scale.to(self.dtype))


def _check_graph(graph: Graph, features: SparseActivations, ids: torch.Tensor) -> None:
    """The graph must come from this model and these transcoders (same active features)."""
    same = graph.active_features.shape == features.indices.shape and torch.equal(
        graph.active_features.cpu(), features.indices.cpu()
    )
    if not same or not torch.equal(graph.input_tokens.cpu(), ids.cpu()):
        raise ValueError(
            "This graph's active features differ from what the model and transcoders give on "
            "its prompt: it was made with another model or transcoder set. Load the model and "
            f"transcoders the graph was made with (model {graph.model_name!r}, transcoders "
            f"{graph.transcoder_name!r}), or pass the prompt instead of the graph."
        )
