"""``ReplacementModel`` with circuit-tracer's constructors, ``cfg`` and tuple-returning methods.

A subclass of circuitlab's ``ReplacementModel``: ``circuitlab.attribute`` and every native
function accept it. What changes is circuit-tracer's call shapes:

* ``from_pretrained(model_name, transcoder_set, backend=..., device=None, dtype=float32,
  lazy_encoder=False, lazy_decoder=True)``; ``from_pretrained_and_transcoders``;
  ``from_config`` (a transformers config). Both backends
  name circuitlab's one engine (the results are the same); any other name is refused.
* ``get_activations`` / ``feature_intervention`` return ``(logits [1, pos, vocab],
  activations [layer, pos, feature])`` -- dense, or a coalesced sparse COO tensor with
  ``sparse=True``; circuitlab's native methods return ``logits [pos, vocab]`` in a result
  object.
* ``feature_intervention_generate`` takes TransformerLens ``generate`` arguments with their
  defaults (``max_new_tokens=10``, ``do_sample=True``, ``temperature=1.0``, ``verbose``,
  ``use_past_kv_cache``, ...) and returns ``(text, logits [n_new, vocab], activations)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import torch

from circuitlab.interventions.generate import feature_intervention_generate as native_generate
from circuitlab.interventions.intervene import feature_intervention as native_intervention
from circuitlab.models.tokens import Prompt
from circuitlab.replacement import ReplacementModel as NativeReplacementModel
from circuitlab.transcoders.base import SparseActivations, Transcoders

from ..utils.tl_nnsight_mapping import UnifiedConfig, config_from_hf

Backend = Literal["transformerlens", "nnsight"]
_BACKENDS = ("transformerlens", "nnsight")


@dataclass(frozen=True)
class AttributionSetup:
    """What ``setup_attribution`` precomputes for a prompt (circuit-tracer's phase 0).

    ``activation_matrix``: sparse COO ``[layer, pos, feature]`` of the active features;
    ``error_vectors [layer, pos, d_model]`` (zero at the zeroed positions);
    ``token_vectors [pos, d_model]`` (the token embeddings); ``reconstruction
    [layer, pos, d_model]`` (the transcoders' outputs); ``logits [1, pos, vocab]``.
    """

    activation_matrix: torch.Tensor
    error_vectors: torch.Tensor
    token_vectors: torch.Tensor
    reconstruction: torch.Tensor
    logits: torch.Tensor


class ReplacementModel(NativeReplacementModel):
    """circuitlab's ``ReplacementModel`` with circuit-tracer's API (see the module docstring)."""

    backend: Backend = "transformerlens"

    @classmethod
    def from_pretrained(  # pyright: ignore[reportIncompatibleMethodOverride]
        cls,
        model_name: str,
        transcoder_set: str,
        backend: Backend = "transformerlens",
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        lazy_encoder: bool = False,
        lazy_decoder: bool = True,
        **kwargs: Any,
    ) -> ReplacementModel:
        """Loads ``model_name`` (hub id or local dir) and ``transcoder_set`` (shortcut, hub
        id or local dir holding ``config.yaml``). ``device=None`` picks CUDA when there is
        one, as circuit-tracer does. ``tokenizer=`` (circuitlab's) passes through."""
        from circuitlab.transcoders.loading import load_transcoders

        _check_backend(backend)
        device = _default_device(device)
        transcoders = load_transcoders(
            transcoder_set,
            dtype=dtype,
            device=device,
            lazy_encoder=lazy_encoder,
            lazy_decoder=lazy_decoder,
        )
        return cls.from_pretrained_and_transcoders(
            model_name, transcoders, backend=backend, device=device, dtype=dtype, **kwargs
        )

    @classmethod
    def from_pretrained_and_transcoders(
        cls,
        model_name: str | torch.nn.Module,
        transcoders: Transcoders,
        backend: Backend = "transformerlens",
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        **kwargs: Any,
    ) -> ReplacementModel:
        """Loads ``model_name`` and attaches ``transcoders`` (a loaded transcoder set or CLT)."""
        _check_backend(backend)
        tokenizer = kwargs.pop("tokenizer", None)
        if kwargs:
            warnings.warn(
                f"ignored backend options {sorted(kwargs)}: circuitlab loads models with "
                "transformers directly and needs none of them",
                stacklevel=2,
            )
        native = NativeReplacementModel.from_pretrained(
            model_name,
            transcoders,
            device=_default_device(device),
            dtype=dtype,
            tokenizer=tokenizer,
        )
        model = cls.from_native(native)
        model.backend = backend
        return model

    @classmethod
    def from_config(
        cls,
        config: Any,
        transcoders: Transcoders,
        backend: Backend = "transformerlens",
        **kwargs: Any,
    ) -> ReplacementModel:
        """A randomly initialized model built from a transformers ``config`` (what
        circuit-tracer's nnsight backend takes; its tests build tiny models this way) with
        ``transcoders`` attached. The tokenizer is read from ``config._name_or_path`` when
        that names a model (``tokenizer=`` overrides it; without either, prompts are token
        ids). TransformerLens' ``HookedTransformerConfig`` is refused: circuitlab runs
        Hugging Face models."""
        from transformers import AutoModelForCausalLM, AutoTokenizer, PretrainedConfig

        _check_backend(backend)
        if not isinstance(config, PretrainedConfig):
            raise TypeError(
                f"from_config takes a transformers config, got {type(config).__name__}: "
                "circuitlab runs Hugging Face models, not TransformerLens' HookedTransformer; "
                "pass transformers.AutoConfig.from_pretrained(name_or_dir) (or for_model(...))"
            )
        if "tokenizer" not in kwargs and getattr(config, "_name_or_path", ""):
            kwargs["tokenizer"] = AutoTokenizer.from_pretrained(config._name_or_path)
        hf_model = AutoModelForCausalLM.from_config(config)
        return cls.from_pretrained_and_transcoders(hf_model, transcoders, backend, **kwargs)

    @classmethod
    def from_native(cls, model: NativeReplacementModel) -> ReplacementModel:
        """The same model and transcoders (shared, not copied) with this API."""
        return _sharing(cls, model)

    @property
    def native(self) -> NativeReplacementModel:
        """The same model and transcoders (shared) with circuitlab's own methods, for native
        code that calls ``get_activations`` or ``feature_intervention`` expecting its results."""
        return _sharing(NativeReplacementModel, self)

    # ---- circuit-tracer's attributes ---------------------------------------------------
    @property
    def cfg(self) -> UnifiedConfig:
        """circuit-tracer's ``model.cfg`` (TransformerLens field names)."""
        return config_from_hf(
            self.model.config,
            name=self.name,
            dtype=self.dtype,
            architecture=type(self.model).__name__,
        )

    @property
    def model_config(self) -> UnifiedConfig:
        """circuit-tracer's backend-agnostic accessor: the same as ``cfg``."""
        return self.cfg

    @property
    def unembed_proj(self) -> torch.Tensor:
        """The unembedding ``W_U [d_model, vocab]`` (TransformerLens' orientation, as
        ``AttributionTargets`` takes it); circuitlab's ``unembed_weight`` is its transpose."""
        return self.unembed_weight.T

    @property
    def scan(self) -> str | None:
        """The transcoders' identifier, as graphs record it."""
        return getattr(self.transcoders, "name", None)

    @property
    def feature_input_hook(self) -> str:
        return self.transcoders.input_hook

    @property
    def feature_output_hook(self) -> str:
        return self.transcoders.output_hook

    # ---- activations ---------------------------------------------------------------------
    def get_activations(  # pyright: ignore[reportIncompatibleMethodOverride]
        self,
        inputs: Prompt,
        sparse: bool = False,
        apply_activation_function: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [1, pos, vocab], activations [layer, pos, feature])``: dense, or a
        coalesced sparse COO tensor with ``sparse=True``."""
        acts = NativeReplacementModel.get_activations(
            self, inputs, apply_activation_function=apply_activation_function
        )
        shape = (acts.n_layers, acts.logits.shape[0], acts.d_transcoder)
        return acts.logits[None], _as_ct(acts.features, shape, sparse)

    @torch.no_grad()
    def setup_attribution(self, inputs: Prompt) -> AttributionSetup:
        """The precomputed sources of a prompt (see ``AttributionSetup``)."""
        _, cap = self.capture(inputs)
        reads, writes = cap.stacked_reads(), cap.stacked_writes()
        features = self.transcoders.encode_sparse(reads, self.zero_positions)
        recon = self.transcoders.decode_sparse(features, reads)
        errors = writes - recon
        errors[:, self.zero_positions] = 0
        assert cap.embed is not None and cap.logits is not None
        n_pos = reads.shape[1]
        shape = (self.n_layers, n_pos, self.transcoders.d_transcoder)
        return AttributionSetup(
            activation_matrix=_as_ct(features, shape, sparse=True),
            error_vectors=errors,
            token_vectors=cap.embed[0],
            reconstruction=recon,
            logits=cap.logits,
        )

    # ---- interventions -----------------------------------------------------------------
    def feature_intervention(  # pyright: ignore[reportIncompatibleMethodOverride]
        self,
        inputs: Prompt,
        interventions: Sequence[Any],
        constrained_layers: Iterable[int] | None = None,
        freeze_attention: bool = True,
        apply_activation_function: bool = True,
        sparse: bool = False,
        return_activations: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(logits [1, pos, vocab], activations [layer, pos, feature] or None)`` after
        ``interventions`` (``(layer, pos, feature, value)`` tuples)."""
        result = native_intervention(
            self,
            inputs,
            interventions,
            constrained_layers=constrained_layers,
            freeze_attention=freeze_attention,
            apply_activation_function=apply_activation_function,
            sparse=sparse,
            return_activations=return_activations,
        )
        return result.logits[None], self._acts(result.activations, result.logits.shape[0])

    def feature_intervention_generate(  # pyright: ignore[reportIncompatibleMethodOverride]
        self,
        inputs: Prompt,
        interventions: Sequence[Any],
        constrained_layers: Iterable[int] | None = None,
        freeze_attention: bool = True,
        apply_activation_function: bool = True,
        sparse: bool = False,
        return_activations: bool = True,
        **kwargs: Any,
    ) -> tuple[str, torch.Tensor, torch.Tensor | None]:
        """``(text, logits [n_new, vocab], activations [layer, pos, feature] or None)``.

        Generation arguments are TransformerLens ``generate``'s, with its defaults:
        ``max_new_tokens=10``, ``do_sample=True``, ``temperature=1.0``, ``top_p=None``,
        ``stop_at_eos=True``, ``use_past_kv_cache=True``, ``verbose`` (accepted; no progress
        bar is shown). ``seed=`` (circuitlab's) makes sampling reproducible. ``top_k`` and
        ``freq_penalty`` are refused: circuitlab's sampler has nucleus sampling only.
        """
        gen = _generate_options(kwargs)
        result = native_generate(
            self,
            inputs,
            interventions,
            constrained_layers=constrained_layers,
            freeze_attention=freeze_attention,
            apply_activation_function=apply_activation_function,
            sparse=sparse,
            return_activations=return_activations,
            **gen,
        )
        n_run = int(result.tokens.shape[0]) - 1
        return result.text, result.logits, self._acts(result.activations, n_run)

    def generate(self, inputs: Prompt, **kwargs: Any) -> str:
        """TransformerLens' ``model.generate(text, ...)`` (the demos' unsteered baseline): the
        text, with the same arguments and defaults as ``feature_intervention_generate``."""
        gen = _generate_options(kwargs)
        return native_generate(self, inputs, (), **gen).text

    # ---- TransformerLens' token helpers --------------------------------------------------
    def to_tokens(self, inputs: Prompt) -> torch.Tensor:
        """Token ids ``[1, pos]`` as attribution sees them (a BOS added to text)."""
        return self.ensure_tokenized(inputs)[None]

    def to_str_tokens(self, inputs: Prompt) -> list[str]:
        """Each token of the prompt decoded on its own."""
        tok = self._tokenizer()
        return [str(tok.decode([int(t)])) for t in self.ensure_tokenized(inputs).tolist()]

    def to_string(self, tokens: torch.Tensor | Sequence[int]) -> str:
        """Token ids ``[pos]`` (or ``[1, pos]``) decoded to text."""
        ids = torch.as_tensor(tokens).flatten().tolist()
        return str(self._tokenizer().decode(ids))

    def _tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer: pass tokenizer= when loading it")
        return self.tokenizer

    def _acts(
        self, acts: torch.Tensor | SparseActivations | None, n_pos: int
    ) -> torch.Tensor | None:
        if isinstance(acts, SparseActivations):
            shape = (self.n_layers, n_pos, self.transcoders.d_transcoder)
            return _as_ct(acts, shape, sparse=True)
        return acts


def _as_ct(features: SparseActivations, shape: tuple[int, int, int], sparse: bool) -> torch.Tensor:
    """Native sparse activations as circuit-tracer's dense or sparse COO tensor."""
    if not sparse:
        return features.to_dense(*shape)
    coo = torch.sparse_coo_tensor(
        features.indices.T.to(features.values.device),
        features.values,
        shape,
        check_invariants=False,
    )
    return coo.coalesce()


def _generate_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    for name in ("top_k", "freq_penalty"):
        if kwargs.get(name):
            raise ValueError(
                f"{name}={kwargs[name]!r} is not supported by circuitlab's sampler: use top_p "
                "(nucleus sampling) and temperature, or do_sample=False for greedy decoding"
            )
    if kwargs.get("return_type", "input") not in ("input", "str"):
        raise ValueError("only return_type='input' or 'str' (text) is supported")
    top_p = kwargs.get("top_p")
    known = {
        "max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "freq_penalty",
        "stop_at_eos", "use_past_kv_cache", "verbose", "seed", "return_type",
        "prepend_bos", "padding_side", "eos_token_id",
    }  # fmt: skip
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"unexpected generate arguments {unknown}")
    return {
        "max_new_tokens": int(kwargs.get("max_new_tokens", 10)),
        "do_sample": bool(kwargs.get("do_sample", True)),
        "temperature": float(kwargs.get("temperature", 1.0)),
        "top_p": 1.0 if top_p is None else float(top_p),
        "seed": kwargs.get("seed"),
        "stop_at_eos": bool(kwargs.get("stop_at_eos", True)),
        "use_cache": bool(kwargs.get("use_past_kv_cache", True)),
    }


def _check_backend(backend: str) -> None:
    if backend not in _BACKENDS:
        raise ValueError(f"Unknown backend: {backend}. Must be 'nnsight' or 'transformerlens'")


def _default_device(device: torch.device | str | None) -> torch.device | str:
    if device is not None:
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


_M = TypeVar("_M", bound=NativeReplacementModel)


def _sharing(cls: type[_M], model: NativeReplacementModel) -> _M:
    """A ``cls`` over ``model``'s own modules, transcoders and tokenizer (nothing copied)."""
    return cls(
        model.model,
        model.transcoders,
        model.adapter,
        model.tokenizer,
        zero_positions=model.zero_positions,
    )
