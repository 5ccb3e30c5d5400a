"""The trainable form of per-layer and cross-layer transcoders (all layers in one module).

Shapes (``L`` layers, ``F = d_transcoder``, ``d = d_model``): ``W_enc [L, F, d]``,
``b_enc [L, F]``, ``b_dec [L, d]``, optional ``W_skip [L, d, d]`` (``skip(x) = x @ W_skip[l].T``),
JumpReLU ``threshold [L, F]``; per-layer ``W_dec [L, F, d]``, or for a CLT ``W_dec[l]
[F, L - l, d]`` (feature ``f`` of layer ``l`` writes ``W_dec[l][f, j]`` into layer ``l + j``).

Training works on *normalised* activations: layer ``l``'s inputs are divided by ``in_scale[l]``
and its MLP outputs by ``out_scale[l]``, both ``sqrt(E ||v||^2 / d)`` measured on the first
buffer, so one learning rate and one sparsity coefficient suit every layer and model.
``to_transcoders()`` folds the scales back into the weights: the saved transcoders read and
write raw activations.

Activations: ``relu`` and ``jump_relu`` (straight-through threshold, ``jumprelu.py``) are
trained with a decoder-norm-weighted sparsity penalty: the norm is *folded into the penalty*
(a feature cannot cheat it by shrinking its activation and growing its decoder row).
``topk`` (the ``k`` largest pre-activations of each token) and ``batchtopk`` (the ``n·k``
largest of a batch of ``n`` tokens, so the *mean* L0 is ``k``; Bussmann et al. 2024) need no
penalty; their decoder rows are kept at *unit norm* (the gradient's radial part is removed
before each step, the rows are renormalised after it: Gao et al. 2024), so activations carry
the magnitudes. BatchTopK keeps a running mean of the smallest activation it kept per layer
(``batch_threshold``) and runs at inference as a JumpReLU with that threshold for every
feature, which is how it is saved.

AuxK (Gao et al. 2024, TopK kinds): ``forward(dead=...)`` also reconstructs the residual
error ``e = y − ŷ`` (no gradient through ``ŷ``) with the ``k_aux`` largest pre-activations of
each token among the dead features, ``ê`` (no bias, no skip), and returns
``min(n_dead / k_aux, 1) · ||ê − e||² / ||e − ē||²`` per layer; the trainer adds it with
weight ``auxk_alpha``. Dead features thus get a gradient towards what the live ones miss.

With ``sparse=True`` (TopK kinds) the step runs on ``sparse.py``'s kernels: the same gradients,
at a cost set by the active features instead of all of them.

With a ``world`` of several processes (``distributed.py``), ``x, y`` are this rank's slice of
the global batch and the forward makes every loss term decompose over slices: BatchTopK keeps
the entries at or above the global batch's ``n·k``-th largest pre-activation, and AuxK divides
by the global ``||e − ē||²`` (times the world size, undoing the gradient averaging).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from ..activations import Activation, JumpReLU, ReLU, TopK
from ..base import Transcoders
from ..cross_layer import CrossLayerTranscoder
from ..per_layer import SingleLayerTranscoder, TranscoderSet
from .distributed import World
from .jumprelu import jump_relu
from .sparse import (
    Codes,
    Picks,
    batch_topk_picks,
    layer_codes,
    masked_topk_picks,
    sparse_decode,
    stacked_codes,
    threshold_picks,
    topk_picks,
)

KINDS = ("plt", "clt")
ACTIVATIONS = ("relu", "jump_relu", "topk", "batchtopk")
TOPK_KINDS = ("topk", "batchtopk")
THRESHOLD_MOMENTUM = 0.9  # BatchTopK: θ ← 0.9 θ + 0.1 min kept (activations grow fast early)


class TrainOutput(NamedTuple):
    """One training forward: reconstructions ``[L, n, d]``, per-layer sparsity penalty and
    AuxK loss ``[L]`` (zeros where none), L0 ``[L]`` and which features fired ``[L, F]``."""

    recon: torch.Tensor
    sparsity: torch.Tensor
    aux: torch.Tensor
    l0: torch.Tensor
    fired: torch.Tensor


class TrainableTranscoders(nn.Module):
    """Transcoders for all ``n_layers`` layers with trainable parameters (module docstring)."""

    in_scale: torch.Tensor
    out_scale: torch.Tensor
    batch_threshold: torch.Tensor  # [L], BatchTopK only

    def __init__(
        self,
        n_layers: int,
        d_model: int,
        d_transcoder: int,
        *,
        kind: str = "plt",
        activation: str = "jump_relu",
        k: int = 32,
        skip: bool = False,
        bandwidth: float = 0.1,
        init_threshold: float = 0.5,
        tanh_scale: float = 1.0,
        seed: int = 0,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"Unknown transcoder kind {kind!r}; use plt or clt.")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"Unknown activation {activation!r}; use relu, jump_relu, topk or batchtopk."
            )
        if activation in TOPK_KINDS and not 1 <= k <= d_transcoder:
            raise ValueError(f"TopK needs 1 <= k <= d_transcoder; got k={k}.")
        L, F, d = n_layers, d_transcoder, d_model
        self.n_layers, self.d_model, self.d_transcoder = L, d, F
        self.kind, self.activation, self.k = kind, activation, k
        self.bandwidth, self.tanh_scale = bandwidth, tanh_scale
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(L, F, d, generator=g)
        w /= w.norm(dim=-1, keepdim=True)
        # Encoder rows start as unit vectors and decoders as short copies of them (a small
        # first output); where the decoder norm is held at 1 (TopK kinds) the decoder rows are
        # the unit vectors and the encoder rows short copies (the same small output).
        self.unit_decoder = activation in TOPK_KINDS
        scale = 1.0 if self.unit_decoder else 0.1
        self.W_enc = nn.Parameter(w.clone() * (0.1 if self.unit_decoder else 1.0))
        self.b_enc = nn.Parameter(torch.zeros(L, F))
        if kind == "plt":
            self.W_dec = nn.Parameter(scale * w.clone())
        else:
            self.W_dec = nn.ParameterList(
                [
                    nn.Parameter(scale / math.sqrt(L - l) * w[l, :, None, :].repeat(1, L - l, 1))
                    for l in range(L)  # noqa: E741
                ]
            )
        self.b_dec = nn.Parameter(torch.zeros(L, d))
        self.W_skip = nn.Parameter(torch.zeros(L, d, d)) if skip else None
        self.threshold = (
            nn.Parameter(torch.full((L, F), init_threshold)) if activation == "jump_relu" else None
        )
        self.register_buffer("in_scale", torch.ones(L))
        self.register_buffer("out_scale", torch.ones(L))
        if activation == "batchtopk":
            self.register_buffer("batch_threshold", torch.zeros(L))

    # ---- forward --------------------------------------------------------------------------
    def preactivations(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W_encᵀ + b_enc``: ``[L, n, F]`` for normalised inputs ``[L, n, d]``."""
        return torch.baddbmm(self.b_enc[:, None, :], x, self.W_enc.transpose(1, 2))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Activations ``[L, n, F]`` of normalised inputs ``[L, n, d]``, as saved transcoders
        compute them (BatchTopK: its running threshold; training calls the module (``forward``))."""
        pre = self.preactivations(x)
        if self.activation == "batchtopk":
            theta = self.batch_threshold[:, None, None]
            return pre * (pre > theta)
        return self._activate(pre)

    def _activate(self, pre: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """Dense training activations ``[L, n, F]`` of pre-activations ``[L, n, F]``
        (BatchTopK with ``theta [L]``: the entries at or above it, see ``_batch_thresholds``)."""
        if self.activation == "relu":
            return torch.relu(pre)
        if self.activation == "jump_relu":
            assert self.threshold is not None
            return jump_relu(pre, self.threshold[:, None, :], self.bandwidth)
        if self.activation == "topk":
            values, idx = pre.topk(self.k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, idx, torch.relu(values))
        if theta is not None:
            return torch.relu(pre) * (pre >= theta[:, None, None])
        n = pre.shape[1]  # batchtopk: the n·k largest of each layer's batch
        flat = pre.flatten(1)
        values, idx = flat.topk(n * self.k, dim=-1)
        return torch.zeros_like(flat).scatter(-1, idx, torch.relu(values)).view_as(pre)

    def decode(self, acts: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Normalised reconstructions ``[L, n, d]`` of the MLP outputs."""
        if isinstance(self.W_dec, nn.Parameter):
            out = torch.einsum("lnf,lfd->lnd", acts, self.W_dec)
        else:
            out = torch.zeros_like(x)
            for l, dec in enumerate(self.W_dec):  # noqa: E741
                out[l:] = out[l:] + torch.einsum("nf,fjd->jnd", acts[l], dec)
        out = out + self.b_dec[:, None]
        if self.W_skip is not None:
            out = out + torch.einsum("lnd,led->lne", x, self.W_skip)
        return out

    def _decoder_rows(self, layer: int) -> torch.Tensor:
        """Layer ``layer``'s decoder as rows ``[F, D]`` (CLT: all output layers flattened)."""
        if isinstance(self.W_dec, nn.Parameter):
            return self.W_dec[layer]
        return self.W_dec[layer].flatten(1)

    def decode_codes(self, codes: Codes, x: torch.Tensor, *, bias: bool = True) -> torch.Tensor:
        """``decode`` from the sparse ``codes`` of all layers (``sparse.stacked_codes``);
        ``bias=False`` leaves out ``b_dec`` and the skip (AuxK's reconstruction of the error)."""
        L, n, d = x.shape
        F = self.d_transcoder
        if isinstance(self.W_dec, nn.Parameter):
            out = sparse_decode(codes, self.W_dec.view(L * F, d)).view(L, n, d)
        else:
            out = torch.zeros_like(x)
            for l in range(L):  # noqa: E741
                part = sparse_decode(layer_codes(codes, l, n, F), self._decoder_rows(l))
                out[l:] = out[l:] + part.view(n, L - l, d).transpose(0, 1)
        if not bias:
            return out
        out = out + self.b_dec[:, None]
        if self.W_skip is not None:
            out = out + torch.einsum("lnd,led->lne", x, self.W_skip)
        return out

    def decoder_norms(self) -> torch.Tensor:
        """``||W_dec_f||`` per feature ``[L, F]`` (over all output layers for a CLT)."""
        if isinstance(self.W_dec, nn.Parameter):
            return self.W_dec.norm(dim=-1)
        return torch.stack([dec.flatten(1).norm(dim=1) for dec in self.W_dec])

    def sparsity(self, acts: torch.Tensor) -> torch.Tensor:
        """Per-layer sparsity penalty ``[L]`` (mean over tokens), decoder-norm weighted.

        ReLU: ``Σ_f a_f ||d_f||`` (L1). JumpReLU: ``Σ_f tanh(c · a_f ||d_f||)`` (a smooth L0).
        TopK: none (the activation fixes L0).
        """
        if self.activation in TOPK_KINDS:
            return acts.new_zeros(self.n_layers)
        weighted = acts * self.decoder_norms()[:, None, :]
        if self.activation == "jump_relu":
            weighted = torch.tanh(self.tanh_scale * weighted)
        return weighted.sum(-1).mean(-1)

    # ---- training ---------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        sparse: bool = False,
        dead: torch.Tensor | None = None,
        k_aux: int = 0,
        world: World | None = None,
    ) -> TrainOutput:
        """The training forward on normalised ``x, y [L, n, d]`` (module docstring); what
        ``DistributedDataParallel`` calls.

        ``dead [L, F]`` (TopK kinds, with ``k_aux > 0``) switches on the AuxK loss.
        ``sparse`` (TopK kinds) uses the sparse kernels; the result and gradients are the
        dense ones to float tolerance. ``world``: the processes sharing the global batch,
        of which ``x, y`` are this one's slice (default: this process alone).
        """
        world = world or World()
        L, n, _ = x.shape
        topk_kind = self.activation in TOPK_KINDS
        theta = None  # BatchTopK over several processes: the global selection threshold
        if self.activation == "batchtopk" and world.size > 1:
            with torch.no_grad():
                theta = self._batch_thresholds(self.preactivations(x), world)
        if sparse and topk_kind:
            with torch.no_grad():
                pre = self.preactivations(x)
                picks = [
                    self._picks(pre[l], None if theta is None else theta[l])
                    for l in range(L)  # noqa: E741
                ]
            codes = stacked_codes(pre, picks, self.W_enc, self.b_enc, x)
            recon = self.decode_codes(codes, x)
            with torch.no_grad():
                on = codes.vals > 0
                rows, vals = codes.feat[on], codes.vals[on]
                layer_of = rows // self.d_transcoder
                l0 = torch.bincount(layer_of, minlength=L).double() / n
                fired = torch.zeros(L * self.d_transcoder, dtype=torch.bool, device=x.device)
                fired[rows] = True
                fired = fired.view(L, self.d_transcoder)
                lows = vals.new_full((L,), float("inf")).scatter_reduce(0, layer_of, vals, "amin")
            sparsity = x.new_zeros(L)
        else:
            pre = self.preactivations(x)
            acts = self._activate(pre, theta)
            recon = self.decode(acts, x)
            sparsity = self.sparsity(acts)
            with torch.no_grad():
                on_dense = acts > 0
                l0 = on_dense.sum(-1).double().mean(-1)
                fired = on_dense.any(1)
                lows = acts.masked_fill(~on_dense, float("inf")).amin((1, 2))
        if self.activation == "batchtopk" and torch.is_grad_enabled():
            self._update_threshold(lows, world)
        aux = x.new_zeros(L)
        if topk_kind and dead is not None and k_aux > 0 and bool(dead.any()):
            aux = self._auxk(pre, x, y, recon, dead, k_aux, sparse, world)
        return TrainOutput(recon, sparsity, aux, l0, fired)

    def _picks(self, pre: torch.Tensor, theta: torch.Tensor | None) -> Picks:
        """One layer's chosen entries of ``pre [n, F]`` (BatchTopK over several processes:
        those at or above the layer's global threshold ``theta``, see ``_activate``)."""
        if theta is not None:
            return threshold_picks(pre, theta)
        if self.activation == "topk":
            return topk_picks(pre, self.k)
        return batch_topk_picks(pre, self.k)

    @torch.no_grad()
    def _batch_thresholds(self, pre: torch.Tensor, world: World) -> torch.Tensor:
        """BatchTopK across processes: per layer ``[L]``, the ``N·k``-th largest
        pre-activation of the global batch of ``N = n · world.size`` tokens (``pre [L, n, F]``
        is this rank's slice)."""
        count = pre.shape[1] * world.size * self.k
        return torch.stack([world.kth_largest(p.flatten(), count) for p in pre])

    def _auxk(
        self,
        pre: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        recon: torch.Tensor,
        dead: torch.Tensor,
        k_aux: int,
        sparse: bool,
        world: World,
    ) -> torch.Tensor:
        """AuxK loss ``[L]`` (module docstring)."""
        L, n, _ = x.shape
        err = (y - recon).detach()
        n_dead = dead.sum(1)  # [L]
        ks = [int(min(k_aux, int(c))) for c in n_dead]
        if sparse:
            with torch.no_grad():
                picks = [masked_topk_picks(pre[l], dead[l], ks[l]) for l in range(L)]  # noqa: E741
            codes = stacked_codes(pre, picks, self.W_enc, self.b_enc, x)
            err_hat = self.decode_codes(codes, x, bias=False)
        else:
            acts = torch.zeros_like(pre)
            for l in range(L):  # noqa: E741
                if ks[l] == 0:
                    continue
                masked = pre[l].masked_fill(~dead[l], float("-inf"))
                idx = masked.topk(ks[l], dim=-1).indices
                acts[l] = acts[l].scatter(-1, idx, torch.relu(pre[l].gather(-1, idx)))
            err_hat = self.decode(acts, x) - self.b_dec[:, None]
            if self.W_skip is not None:
                err_hat = err_hat - torch.einsum("lnd,led->lne", x, self.W_skip)
        sse = (err_hat - err).pow(2).sum((1, 2))
        if world.size == 1:
            var = (err - err.mean(1, keepdim=True)).pow(2).sum((1, 2))
        else:  # the global batch's ||e − ē||², from the slices' sums; no gradient (e is data)
            stats = torch.cat([err.sum(1), err.pow(2).sum((1, 2))[:, None]], 1).double()
            world.all_sum(stats)
            total = n * world.size
            mean_sq = stats[:, :-1].pow(2).sum(-1) / total
            var = (stats[:, -1] - mean_sq).to(x.dtype) / world.size  # × size: see docstring
        scale = (n_dead.to(x.dtype) / k_aux).clamp(max=1.0)
        return scale * sse / var.clamp(min=1e-12)

    @torch.no_grad()
    def _update_threshold(self, lows: torch.Tensor, world: World) -> None:
        """BatchTopK: running mean of the smallest activation kept per layer, ``lows [L]``
        (``inf`` where none was kept), over every process's slice of the batch."""
        lows = lows.to(self.batch_threshold.dtype)
        world.all_min(lows)
        for l, low in enumerate(lows):  # noqa: E741
            if torch.isinf(low):
                continue
            old = self.batch_threshold[l]
            new = low if old == 0 else THRESHOLD_MOMENTUM * old + (1 - THRESHOLD_MOMENTUM) * low
            self.batch_threshold[l] = new

    @torch.no_grad()
    def project_decoder_grads_(self) -> None:
        """Unit-norm decoders: removes each row's gradient component along the row."""
        if not self.unit_decoder:
            return
        plt = isinstance(self.W_dec, nn.Parameter)
        for p in self._decoder_params():
            if p.grad is None:
                continue
            # PLT [L, F, d]: rows along d; CLT [F, L - l, d]: rows over (L - l, d)
            g, w = (p.grad, p) if plt else (p.grad.flatten(1), p.flatten(1))
            g.addcmul_(torch.linalg.vecdot(g, w).unsqueeze(-1), w, value=-1)

    def _decoder_params(self) -> list[torch.Tensor]:
        if isinstance(self.W_dec, nn.Parameter):
            return [self.W_dec]
        return list(self.W_dec)

    @torch.no_grad()
    def clamp_(self) -> None:
        """After an optimiser step: JumpReLU thresholds kept positive, unit-norm decoder rows
        renormalised."""
        if self.threshold is not None:
            self.threshold.clamp_(min=1e-4)
        if self.unit_decoder:
            if isinstance(self.W_dec, nn.Parameter):
                self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp(min=1e-8))
            else:
                for dec in self.W_dec:
                    dec.div_(dec.flatten(1).norm(dim=1).clamp(min=1e-8)[:, None, None])

    # ---- export ---------------------------------------------------------------------------
    def _activation(self, layer: int) -> Activation:
        if self.activation == "relu":
            return ReLU()
        if self.activation == "topk":
            return TopK(self.k)
        if self.activation == "batchtopk":
            theta = self.batch_threshold[layer].detach()
            return JumpReLU(theta.expand(self.d_transcoder).clone())
        assert self.threshold is not None
        return JumpReLU(self.threshold[layer].detach().clone())

    @torch.no_grad()
    def to_transcoders(
        self,
        *,
        input_hook: str,
        output_hook: str,
        model_name: str | None = None,
        name: str | None = None,
    ) -> Transcoders:
        """Inference transcoders on raw activations (the normalisation folded in)."""
        s_in, s_out = self.in_scale, self.out_scale
        W_enc = self.W_enc.detach() / s_in[:, None, None]
        b_dec = self.b_dec.detach() * s_out[:, None]
        W_skip = None
        if self.W_skip is not None:
            W_skip = self.W_skip.detach() * (s_out / s_in)[:, None, None]
        L = self.n_layers
        if isinstance(self.W_dec, nn.Parameter):
            layers = [
                SingleLayerTranscoder(
                    W_enc=W_enc[l].clone(),
                    b_enc=self.b_enc[l].detach().clone(),
                    W_dec=(self.W_dec[l].detach() * s_out[l]).clone(),
                    b_dec=b_dec[l].clone(),
                    activation=self._activation(l),
                    W_skip=None if W_skip is None else W_skip[l].clone(),
                )
                for l in range(L)  # noqa: E741
            ]
            return TranscoderSet(
                layers,
                input_hook=input_hook,
                output_hook=output_hook,
                name=name,
                model_name=model_name,
            )
        W_dec = [
            (dec.detach() * s_out[l:][None, :, None]).clone()
            for l, dec in enumerate(self.W_dec)  # noqa: E741
        ]
        return CrossLayerTranscoder(
            W_enc=W_enc.clone(),
            b_enc=self.b_enc.detach().clone(),
            W_dec=list(W_dec),
            b_dec=b_dec.clone(),
            activations=[self._activation(i) for i in range(L)],
            W_skip=W_skip,
            input_hook=input_hook,
            output_hook=output_hook,
            name=name,
            model_name=model_name,
        )
