"""Training the organism's language model: a tiny Llama, from scratch, with plain AdamW."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import cast

import torch
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from ..features.corpus import batched_windows, token_windows
from .corpus import texts


@dataclass(frozen=True)
class LMConfig:
    """Shape and optimisation of the organism's model."""

    n_layers: int = 4
    d_model: int = 64
    n_heads: int = 4
    d_mlp: int = 256
    context: int = 32
    steps: int = 600
    batch_size: int = 32
    lr: float = 5e-3
    weight_decay: float = 0.1
    warmup: int = 100
    freeze_embeddings: bool = False
    seed: int = 0


def new_model(cfg: LMConfig, tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """A randomly initialised Llama of ``cfg``'s shape over ``tokenizer``'s vocabulary."""
    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,
        max_position_embeddings=cfg.context,
        tie_word_embeddings=False,
        bos_token_id=cast(int, tokenizer.bos_token_id),
        eos_token_id=cast(int, tokenizer.eos_token_id),
        pad_token_id=cast(int, tokenizer.pad_token_id),
    )
    return LlamaForCausalLM(config)


def _lr(step: int, cfg: LMConfig) -> float:
    """Linear warm-up, then cosine-free linear decay to 10% at the end."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (1.0 - 0.9 * frac)


def train_lm(
    cfg: LMConfig, tokenizer: PreTrainedTokenizerBase, *, verbose: bool = True
) -> tuple[LlamaForCausalLM, dict[str, float]]:
    """Trains a new model on ``corpus.texts(cfg.seed)`` packed in windows ``[batch, context]``.

    Next-token cross-entropy on every position; decoupled weight decay on the matrices (not on
    norms). Returns the model (eval mode) and ``{"loss": last 50-step mean, "seconds": ...}``.
    """
    model = new_model(cfg, tokenizer)
    if cfg.freeze_embeddings:
        # Random, fixed token embeddings carry no state information, so the model has to
        # compute city -> state in an MLP: that is the intermediate representation we want.
        emb = cast(torch.Tensor, model.get_input_embeddings().weight)
        emb.requires_grad_(False)
        torch.nn.init.normal_(emb, std=1.0)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    batches = batched_windows(
        token_windows(texts(cfg.seed), tokenizer, cfg.context), cfg.batch_size
    )
    model.train()
    start, losses = time.perf_counter(), []
    bar = tqdm(total=cfg.steps, desc="training the organism", disable=not verbose)
    for step, ids in enumerate(itertools.islice(batches, cfg.steps)):
        for group in opt.param_groups:
            group["lr"] = _lr(step, cfg)
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
        bar.update(1)
    bar.close()
    model.eval()
    tail = losses[-50:]
    return model, {"loss": sum(tail) / len(tail), "seconds": time.perf_counter() - start}
