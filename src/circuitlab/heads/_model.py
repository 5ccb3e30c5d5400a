"""The model a heads analysis runs on: a plain Hugging Face causal LM, no transcoders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..models.adapters import Adapter, get_module
from ..models.loading import ModelSpec, load_model, model_spec
from ..models.tokens import Prompt, tokenize

TokenRef = str | int


@dataclass
class LabModel:
    """A causal LM with its tokenizer (optional) and family adapter.

    Build one with ``LabModel.load(ref)`` (hub id, local dir, ``.gguf`` or ``"smollm2"``, the
    packaged SmolLM2-135M) or ``LabModel.wrap(hf_model, tokenizer)``.
    """

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase | None
    adapter: Adapter
    spec: ModelSpec

    @classmethod
    def load(
        cls, ref: str | Path, *, dtype: torch.dtype = torch.float32, device: str | None = None
    ) -> LabModel:
        model, tokenizer, adapter = load_model(str(ref), dtype=dtype, device=device)
        return cls(model, tokenizer, adapter, model_spec(model))

    @classmethod
    def wrap(cls, model: nn.Module, tokenizer: PreTrainedTokenizerBase | None = None) -> LabModel:
        """An already built model (switched to circuitlab's attention so patterns can be read)."""
        model, _, adapter = load_model(model, dtype=next(model.parameters()).dtype)
        return cls(model, tokenizer, adapter, model_spec(model))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def n_layers(self) -> int:
        return self.spec.n_layers

    @property
    def n_heads(self) -> int:
        return self.spec.n_heads

    def module(self, path: str) -> nn.Module:
        return get_module(self.model, path)

    def blocks(self) -> list[nn.Module]:
        return list(get_module(self.model, self.adapter.blocks))  # type: ignore[arg-type]

    def tokens(self, prompt: Prompt) -> torch.Tensor:
        """Token ids ``[pos]`` (a BOS is prepended as in ``models.tokens.tokenize``)."""
        ids = tokenize(
            prompt, self.tokenizer, self.spec.vocab_size, context=self.spec.context_length
        )
        return ids.to(self.device)

    def token_id(self, token: TokenRef) -> int:
        """The id of one token given as an id or a string that encodes to exactly one token."""
        if isinstance(token, int):
            if not 0 <= token < self.spec.vocab_size:
                raise ValueError(f"Token id {token} is outside [0, {self.spec.vocab_size}).")
            return token
        if self.tokenizer is None:
            raise ValueError("This model has no tokenizer; give target tokens as ids.")
        ids = self.tokenizer(token, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise ValueError(
                f"{token!r} is {len(ids)} tokens for this tokenizer; a target must be exactly one "
                "token (mind the leading space, e.g. ' Paris')."
            )
        return int(ids[0])

    def token_str(self, token_id: int) -> str:
        if self.tokenizer is None:
            return str(token_id)
        return str(self.tokenizer.decode([token_id]))
