"""``ReplacementModel``: a Hugging Face model, its transcoders, and the local replacement model.

The local replacement model of a prompt freezes the attention patterns and every norm's scale
at their values on that prompt and writes, at each layer's transcoder output point, the
transcoder reconstruction plus an error term that is a constant. Its map from node values
(features, errors, tokens) to feature pre-activations and logits is then linear.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from .models.adapters import Adapter, get_module
from .models.loading import ModelSpec, load_model, model_spec, spec_from_config
from .models.session import Capture, Plan, check_hook_names, hooked
from .models.tokens import Prompt, tokenize
from .transcoders.base import SparseActivations, Transcoders


@dataclass(frozen=True)
class Activations:
    """Result of ``get_activations``: ``logits [pos, vocab]`` and the active features.

    One prompt, no batch axis: the last position's logits are ``logits[-1]``. Code written for
    circuit-tracer's ``[1, pos, vocab]`` that indexes ``logits[0, -1]`` would read one number
    of position 0 here; this object does not unpack as circuit-tracer's tuple, so such code
    fails at ``logits, acts = ...`` instead. ``circuitlab.compat.circuit_tracer`` returns
    circuit-tracer's shapes (docs/migrating.md).
    """

    logits: torch.Tensor
    features: SparseActivations
    n_layers: int
    d_transcoder: int

    def dense(self) -> torch.Tensor:
        """Activations ``[layer, pos, feature]``."""
        n_pos = self.logits.shape[0]
        return self.features.to_dense(self.n_layers, n_pos, self.d_transcoder)


@dataclass(frozen=True)
class InterventionResult:
    """Logits ``[pos, vocab]`` and activations ``[layer, pos, feature]`` after an intervention
    (``ReplacementModel.feature_intervention``; see ``circuitlab.interventions``).

    ``activations`` are what each transcoder reads from the (changed) residual stream, with
    intervened features showing the value they were given; dense unless ``sparse=True``, None
    with ``return_activations=False``. Unpacks like circuit-tracer's tuple:
    ``logits, activations = model.feature_intervention(...)``, but ``logits`` has no batch
    axis: the last position is ``logits[-1]``, and circuit-tracer's ``logits[0, -1]`` would
    read one number of position 0. ``circuitlab.compat.circuit_tracer`` returns
    circuit-tracer's ``[1, pos, vocab]`` (docs/migrating.md).
    """

    logits: torch.Tensor
    activations: torch.Tensor | SparseActivations | None

    def __iter__(self) -> Iterator[torch.Tensor | SparseActivations | None]:
        return iter((self.logits, self.activations))


@dataclass(frozen=True)
class GenerationResult:
    """A steered generation (``ReplacementModel.feature_intervention_generate``).

    * ``text``: prompt and continuation decoded (``completion``: the continuation only);
    * ``tokens [n_prompt + n_new]``: every token id, prompt first;
    * ``logits [n_new, vocab]``: ``logits[i]`` is the distribution new token ``i`` came from;
    * ``activations [layer, n_prompt + n_new - 1, feature]`` (or sparse, or None): transcoder
      activations at every position the model ran on.

    Unpacks like circuit-tracer's tuple: ``text, logits, activations = result``.
    """

    text: str
    completion: str
    tokens: torch.Tensor
    logits: torch.Tensor
    activations: torch.Tensor | SparseActivations | None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.text, self.logits, self.activations))


@dataclass(frozen=True)
class InterventionFunctions:
    """The functions behind ``ReplacementModel``'s intervention methods:
    ``circuitlab.interventions.feature_intervention`` and ``feature_intervention_generate``.

    ``interventions/`` sits above this module (docs/architecture.md), so this module never
    imports it: the root package installs them with ``install_interventions``.
    """

    intervene: Callable[..., InterventionResult]
    generate: Callable[..., GenerationResult]


_interventions: InterventionFunctions | None = None


def install_interventions(functions: InterventionFunctions) -> None:
    """Install what ``feature_intervention`` / ``feature_intervention_generate`` call."""
    global _interventions
    _interventions = functions


def _installed() -> InterventionFunctions:
    if _interventions is None:
        raise RuntimeError(
            "ReplacementModel's intervention methods are not installed: `import circuitlab` "
            "installs them, or call circuitlab.interventions.feature_intervention(model, ...)"
        )
    return _interventions


class ReplacementModel(nn.Module):
    """A transformers causal LM with transcoders attached (see the module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        transcoders: Transcoders,
        adapter: Adapter,
        tokenizer: PreTrainedTokenizerBase | None = None,
        *,
        zero_positions: slice = slice(0, 1),
    ):
        super().__init__()
        self.model = model
        self.transcoders = transcoders
        self.adapter = adapter
        self.tokenizer = tokenizer
        self.zero_positions = zero_positions
        self.spec: ModelSpec = model_spec(model)
        _check_compatible(self.spec, transcoders)

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        model: str | nn.Module,
        transcoders: str | Transcoders,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        lazy_decoder: bool = True,
        lazy_encoder: bool = False,
        tokenizer: str | PreTrainedTokenizerBase | None = None,
    ) -> ReplacementModel:
        """Loads a model (hub id, local dir, ``.gguf`` file, ``"smollm2"`` or model) and its
        transcoders.

        ``transcoders`` is a hub id, a local directory, a shortcut (``gemma``, ``llama``) or a
        ``Transcoders`` object. Shapes and hook names are checked before any computation.
        ``tokenizer`` (a folder, hub id or tokenizer object) overrides the one saved with the
        model; a model with neither takes token ids only, exactly as given (no BOS added).
        """
        dtype = dtype or torch.float32
        if isinstance(transcoders, str):
            from .transcoders.loading import load_transcoders

            transcoders = load_transcoders(
                transcoders,
                dtype=dtype,
                device=device or "cpu",
                lazy_decoder=lazy_decoder,
                lazy_encoder=lazy_encoder,
            )
        loaded = transcoders

        def check(config: Any) -> None:  # before any weights are read
            _check_compatible(spec_from_config(config), loaded)

        hf, tok, adapter = load_model(
            model, device=device, dtype=dtype, tokenizer=tokenizer, check_config=check
        )
        transcoders = transcoders.to(dtype=dtype)
        if device is not None:
            transcoders = transcoders.to(device)
        return cls(hf, transcoders, adapter, tok)

    # ---- basic facts ----------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return self.spec.n_layers

    @property
    def context_length(self) -> int | None:
        """The most tokens a prompt may have (the model config's ``max_position_embeddings``,
        GPT-2's ``n_positions``); None when the config names no limit. Longer prompts are
        refused by ``ensure_tokenized`` (see ``models.tokens.check_context_length``)."""
        return self.spec.context_length

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def name(self) -> str:
        return str(getattr(self.model.config, "_name_or_path", "") or self.adapter.family)

    @property
    def unembed_weight(self) -> torch.Tensor:
        """``W_U [vocab, d_model]`` (logits = final_normed @ W_U.T)."""
        return get_module(self.model, self.adapter.unembed).weight  # type: ignore[return-value]

    @property
    def softcap(self) -> float | None:
        if self.adapter.softcap_attr is None:
            return None
        return getattr(self.model.config, self.adapter.softcap_attr, None)

    @contextmanager
    def zero_softcap(self) -> Iterator[None]:
        """Within the block the model returns logits before any final softcap."""
        attr, cfg = self.adapter.softcap_attr, self.model.config
        old = getattr(cfg, attr, None) if attr else None
        if attr:
            setattr(cfg, attr, None)
        try:
            yield
        finally:
            if attr:
                setattr(cfg, attr, old)

    def module(self, path: str) -> nn.Module:
        return get_module(self.model, path)

    def block(self, layer: int) -> nn.Module:
        return get_module(self.model, self.adapter.blocks)[layer]  # type: ignore[index]

    # ---- tokens -----------------------------------------------------------------------------
    def ensure_tokenized(self, prompt: Prompt) -> torch.Tensor:
        """Token ids ``[pos]`` on the model's device (see ``models.tokens.tokenize``).

        Every prompt passes here first (attribution, activations, interventions, generation),
        so a text prompt without a tokenizer, or a prompt longer than ``context_length``, is
        refused before any work.
        """
        ids = tokenize(prompt, self.tokenizer, self.spec.vocab_size, context=self.context_length)
        return ids.to(self.device)

    # ---- forward passes ---------------------------------------------------------------------
    def run(self, input_ids: torch.Tensor, plan: Plan) -> tuple[torch.Tensor, Capture | None]:
        """One forward of ``input_ids [batch, pos]`` under ``plan``; returns logits and capture."""
        with hooked(
            self.model,
            self.adapter,
            plan,
            self.transcoders.input_hook,
            self.transcoders.output_hook,
        ) as capture:
            logits = self.model(input_ids=input_ids, use_cache=False).logits
        if capture is not None:
            capture.logits = logits.detach()
        return logits, capture

    @torch.no_grad()
    def capture(
        self,
        prompt: Prompt,
        *,
        pattern_sink: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, Capture]:
        """Token ids ``[pos]`` and everything recorded in a plain forward of the prompt.

        ``pattern_sink(layer, pattern [1, heads, q, k])`` receives each layer's attention
        pattern as soon as it is computed and returns what the capture keeps (e.g. a map of a
        file: ``attribute(offload="disk")``)."""
        ids = self.ensure_tokenized(prompt)
        _, cap = self.run(ids[None], Plan(record=True, pattern_sink=pattern_sink))
        assert cap is not None
        return ids, cap

    @torch.no_grad()
    def get_activations(
        self, prompt: Prompt, *, apply_activation_function: bool = True
    ) -> Activations:
        """Logits ``[pos, vocab]`` and sparse feature activations ``[layer, pos, feature]``.

        With ``apply_activation_function=False`` the features are the pre-activations (all of
        them, so use ``.dense()``). Features at the zeroed positions (BOS) are zero.
        """
        _, cap = self.capture(prompt)
        reads = cap.stacked_reads()
        if apply_activation_function:
            feats = self.transcoders.encode_sparse(reads, self.zero_positions)
        else:
            pre = torch.stack(
                [self.transcoders.pre_activations(i, reads[i]) for i in range(self.n_layers)]
            )
            pre[:, self.zero_positions] = 0
            idx = pre.nonzero()
            feats = SparseActivations(idx, pre[idx[:, 0], idx[:, 1], idx[:, 2]])
        assert cap.logits is not None
        return Activations(cap.logits[0], feats, self.n_layers, self.transcoders.d_transcoder)

    # ---- interventions (see circuitlab.interventions) ----------------------------------------
    def feature_intervention(
        self,
        prompt: Prompt,
        interventions: Iterable[Any],
        *,
        constrained_layers: Iterable[int] | None = None,
        freeze_attention: bool = True,
        apply_activation_function: bool = True,
        sparse: bool = False,
        return_activations: bool = True,
    ) -> InterventionResult:
        """Logits ``[pos, vocab]`` and activations after ``interventions``; see
        ``circuitlab.interventions.feature_intervention``."""
        return _installed().intervene(
            self,
            prompt,
            interventions,
            constrained_layers=constrained_layers,
            freeze_attention=freeze_attention,
            apply_activation_function=apply_activation_function,
            sparse=sparse,
            return_activations=return_activations,
        )

    def feature_intervention_generate(
        self, prompt: Prompt, interventions: Iterable[Any] = (), **kwargs: Any
    ) -> GenerationResult:
        """Steered generation with a KV cache; see
        ``circuitlab.interventions.feature_intervention_generate`` for the options."""
        return _installed().generate(self, prompt, interventions, **kwargs)

    def replacement_plan(
        self, capture: Capture, features: SparseActivations | None = None, *, frozen: bool = True
    ) -> Plan:
        """The local replacement model of a captured prompt as a ``Plan``.

        Each layer's output point becomes ``decode(features) + skip(read) + error`` with the
        error a constant from ``capture``; with ``frozen`` the attention patterns and norm
        scales are replayed from the capture (so the map is linear in the node values).
        """
        reads, writes = capture.stacked_reads(), capture.stacked_writes()
        if features is None:
            features = self.transcoders.encode_sparse(reads, self.zero_positions)
        recon = self.transcoders.decode_sparse(features, reads)
        errors = writes - recon
        tc = self.transcoders

        def write(layer: int, read: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
            value = recon[layer] + errors[layer]
            sk = tc.skip(layer, read[0]) if tc.has_skip else None
            if sk is not None:  # the skip path stays live: it is linear
                value = value - tc.skip(layer, reads[layer]) + sk  # type: ignore[operator]
            return value[None].to(out.dtype)

        mode = "replay" if frozen else "live"
        return Plan(attention=mode, norms=mode, frozen=capture, mlp_out=write)


def _check_compatible(spec: ModelSpec, transcoders: Transcoders) -> None:
    if transcoders.d_model != spec.d_model:
        raise ValueError(
            f"Transcoders have d_model {transcoders.d_model} but the model has d_model "
            f"{spec.d_model}: they were trained for a different model."
        )
    if transcoders.n_layers != spec.n_layers:
        raise ValueError(
            f"Transcoders cover {transcoders.n_layers} layers but the model has {spec.n_layers}: "
            "load transcoders for every layer of this model."
        )
    check_hook_names(transcoders.input_hook, transcoders.output_hook)
