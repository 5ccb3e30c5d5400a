"""Models for the heads tests: tiny random ones, and a GPT-2 wired by hand with known heads."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from circuitlab.heads import LabModel
from circuitlab.models.tiny import tiny_model

PROMPT = [0, 5, 9, 3, 7, 7, 12, 4, 8, 9, 10, 11]
CORRUPTED = [0, 5, 9, 3, 7, 7, 12, 6, 8, 9, 10, 11]


def tiny_lab(family: str, *, n_layers: int = 2, seed: int = 0) -> LabModel:
    return LabModel.wrap(tiny_model(family, dtype=torch.float64, n_layers=n_layers, seed=seed))


# Residual layout of the hand-built model: token one-hot, position one-hot, previous-token
# one-hot (written by the previous-token head), the rest zero.
V, P = 8, 16
TOK, POS, PREV = 0, V, V + P
D, HEAD_DIM = 64, 32
GAIN = 3.0  # weight of each q/k entry: scores of order 30, so patterns are near one-hot


def induction_gpt2() -> LabModel:
    """A 2-layer, 2-head GPT-2 with layer 0: [previous-token, off], layer 1: [induction,
    duplicate-token]. "off" heads have zero weights (uniform attention). MLPs are zero.

    Layer-0 head 0 scores ``pos[q] . pos[k + 1]`` and copies the key's token into the
    previous-token subspace; layer-1 head 0 scores ``tok[q] . prev[k]`` (the key's predecessor
    is the query's token); layer-1 head 1 scores ``tok[q] . tok[k] - pos[q] . pos[k]`` (an
    earlier copy of the same token, never itself).
    """
    cfg = GPT2Config(vocab_size=V, n_positions=P, n_embd=D, n_layer=2, n_head=2, n_inner=4)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for name, p in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.fill_(1.0)
        w = model.get_parameter
        w("transformer.wte.weight")[:, TOK : TOK + V] = torch.eye(V)
        w("transformer.wpe.weight")[:, POS : POS + P] = torch.eye(P)
        w("lm_head.weight")[:, TOK : TOK + V] = torch.eye(V)
        # c_attn is a Conv1D: qkv = x @ W with W [d, 3d]; head h uses columns h*32:(h+1)*32.
        q0, k0, v0 = 0, D, 2 * D
        w0 = w("transformer.h.0.attn.c_attn.weight")
        o0 = w("transformer.h.0.attn.c_proj.weight")
        for i in range(P - 1):  # previous-token: query pos i+1 matches key pos i
            w0[POS + i + 1, q0 + i] = GAIN
            w0[POS + i, k0 + i] = GAIN
        for t in range(V):  # value: the key's token -> out: the previous-token subspace
            w0[TOK + t, v0 + t] = 1.0
            o0[t, PREV + t] = 0.2
        w1 = w("transformer.h.1.attn.c_attn.weight")
        for t in range(V):  # induction: tok[q] . prev[k]
            w1[TOK + t, q0 + t] = GAIN
            w1[PREV + t, k0 + t] = GAIN
        h1 = HEAD_DIM
        for t in range(V):  # duplicate: tok[q] . tok[k] ...
            w1[TOK + t, q0 + h1 + t] = GAIN
            w1[TOK + t, k0 + h1 + t] = GAIN
        for i in range(min(P, HEAD_DIM - V)):  # ... - pos[q] . pos[k]
            w1[POS + i, q0 + h1 + V + i] = GAIN
            w1[POS + i, k0 + h1 + V + i] = -GAIN
    return LabModel.wrap(model)
