"""Quick transcoders for any model: random encoders, decoders fitted to the MLP outputs.

Not trained transcoders (see ``transcoders.training`` for those), but real enough to give
input-dependent sparse features and small errors within minutes on a CPU: each layer gets
``d_transcoder`` random unit encoder directions with JumpReLU thresholds set so that each
feature fires on ``l0 / d_transcoder`` of the tokens, and a decoder solved by ridge regression
from those activations to the layer's MLP output.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from ..models.adapters import Adapter
from ..models.loading import load_model, model_spec
from ..models.session import Plan, check_hook_names, hooked
from ..models.tokens import tokenize
from .activations import JumpReLU
from .per_layer import SingleLayerTranscoder, TranscoderSet


@torch.no_grad()
def collect_mlp_io(
    model: nn.Module,
    adapter: Adapter,
    tokenizer: PreTrainedTokenizerBase,
    texts: Iterable[str],
    n_tokens: int,
    *,
    input_hook: str = "mlp.hook_in",
    output_hook: str = "hook_mlp_out",
    max_len: int = 128,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and outputs ``[n_layers, n_tokens, d]`` at the transcoder hook points over the
    first ``n_tokens`` non-BOS tokens of ``texts``."""
    check_hook_names(input_hook, output_hook)
    vocab = model_spec(model).vocab_size
    device = next(model.parameters()).device
    ins, outs, have = [], [], 0
    for text in texts:
        ids = tokenize(text, tokenizer, vocab)[:max_len].to(device)
        with hooked(model, adapter, Plan(record=True), input_hook, output_hook) as cap:
            model(input_ids=ids[None], use_cache=False)
        assert cap is not None
        ins.append(cap.stacked_reads()[:, 1:].float())
        outs.append(cap.stacked_writes()[:, 1:].float())
        have += ids.shape[0] - 1
        if have >= n_tokens:
            break
    if have == 0:
        raise ValueError("The corpus gave no tokens to fit transcoders on.")
    return torch.cat(ins, 1)[:, :n_tokens], torch.cat(outs, 1)[:, :n_tokens]


def fit_layer(
    x: torch.Tensor, y: torch.Tensor, d_transcoder: int, l0: float, ridge: float, g: torch.Generator
) -> SingleLayerTranscoder:
    """One layer from inputs ``x [n, d]`` and MLP outputs ``y [n, d]``."""
    n, d = x.shape
    W_enc = torch.randn(d_transcoder, d, generator=g)
    W_enc /= W_enc.norm(dim=1, keepdim=True)
    pre = x @ W_enc.T
    fires = min(max(int(round(l0 * n / d_transcoder)), 1), n)  # tokens each feature fires on
    threshold = pre.kthvalue(n - fires + 1 if fires < n else 1, dim=0).values
    threshold = threshold.clamp(min=1e-6)
    acts = (pre * (pre >= threshold)).to_sparse()
    del pre
    # Ridge regression on centred activations; the Gram matrix comes from the sparse acts.
    a_mean, y_mean = (acts.sum(0).to_dense() / n), y.mean(0)
    gram = torch.sparse.mm(acts.t(), acts.to_dense()) - n * torch.outer(a_mean, a_mean)
    gram.diagonal().add_(ridge * gram.diagonal().mean().clamp(min=1e-8))
    rhs = torch.sparse.mm(acts.t(), y) - n * torch.outer(a_mean, y_mean)
    W_dec = torch.linalg.solve(gram, rhs)
    b_dec = y_mean - a_mean @ W_dec
    return SingleLayerTranscoder(
        W_enc=W_enc,
        b_enc=torch.zeros(d_transcoder),
        W_dec=W_dec,
        b_dec=b_dec,
        activation=JumpReLU(threshold.nextafter(torch.zeros_like(threshold))),
    )


def fit_transcoders(
    model: str | nn.Module,
    texts: Iterable[str],
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    input_hook: str = "mlp.hook_in",
    output_hook: str = "hook_mlp_out",
    d_transcoder: int = 4096,
    l0: float = 32,
    n_tokens: int = 8192,
    ridge: float = 1e-2,
    seed: int = 0,
    verbose: bool = True,
) -> TranscoderSet:
    """Per-layer transcoders for ``model`` fitted on ``n_tokens`` tokens of ``texts``.

    ``model`` is anything ``load_model`` takes. Returns float32 transcoders; the fraction of
    variance each layer's decoder leaves unexplained is in ``fit_report["fvu"]``.
    """
    hf, tok, adapter = load_model(model, tokenizer=tokenizer)
    if tok is None:
        raise ValueError(
            "Fitting transcoders on text needs the model's tokenizer; pass tokenizer=."
        )
    x, y = collect_mlp_io(
        hf, adapter, tok, texts, n_tokens, input_hook=input_hook, output_hook=output_hook
    )
    g = torch.Generator().manual_seed(seed)
    layers, fvu = [], []
    for layer in tqdm(range(x.shape[0]), desc="fitting transcoders", disable=not verbose):
        t = fit_layer(x[layer], y[layer], d_transcoder, l0, ridge, g)
        recon = t.activation(t.pre_activations(x[layer])) @ t.W_dec + t.b_dec
        fvu.append(
            float(((recon - y[layer]) ** 2).sum() / ((y[layer] - y[layer].mean(0)) ** 2).sum())
        )
        layers.append(t)
    out = TranscoderSet(
        layers,
        input_hook=input_hook,
        output_hook=output_hook,
        name=f"fitted-{d_transcoder}",
        model_name=str(getattr(hf.config, "_name_or_path", "")),
    )
    out.fit_report = {"fvu": fvu, "n_tokens": int(x.shape[1])}  # type: ignore[attr-defined]
    return out
