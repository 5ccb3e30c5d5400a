"""ReplacementModel: loading checks, activations, the replacement forward and its freezes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuitlab.models.adapters import UnsupportedArchitectureError, adapter_for
from circuitlab.models.session import Mode, Plan
from circuitlab.models.tiny import tiny_model
from circuitlab.replacement import ReplacementModel
from circuitlab.transcoders import random_transcoder_set

from conftest import FAMILIES, PROMPT, build


@pytest.mark.parametrize("family", FAMILIES)
def test_circuitlab_attention_matches_transformers_eager(family: str) -> None:
    rm = build(family, dtype=torch.float32)
    ids = torch.tensor([PROMPT])
    ours = rm.model(input_ids=ids).logits
    rm.model.set_attn_implementation("eager")  # type: ignore[operator]
    ref = rm.model(input_ids=ids).logits
    rm.model.set_attn_implementation("circuitlab")  # type: ignore[operator]
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["plt", "plt_skip", "clt_skip"])
def test_replacement_forward_reproduces_logits(family: str, kind: str) -> None:
    rm = build(family, kind, dtype=torch.float32)
    ids = torch.tensor(PROMPT)
    _, cap = rm.capture(ids)
    logits, _ = rm.run(ids[None], rm.replacement_plan(cap))
    assert cap.logits is not None
    torch.testing.assert_close(logits, cap.logits, rtol=0, atol=1e-5)


def test_get_activations_are_sparse_and_zero_at_bos() -> None:
    rm = build("llama", dtype=torch.float32)
    acts = rm.get_activations(torch.tensor(PROMPT))
    dense = acts.dense()
    assert dense.shape == (2, len(PROMPT), 32)
    assert (dense[:, 0] == 0).all()
    assert len(acts.features) > 0
    pre = rm.get_activations(torch.tensor(PROMPT), apply_activation_function=False).dense()
    # JumpReLU: active features are exactly the pre-activations above threshold.
    tc = rm.transcoders
    thr = torch.stack([tc.layers[i].activation.threshold for i in range(2)])  # type: ignore[index,union-attr]
    expected = pre * (pre > thr[:, None, :])
    torch.testing.assert_close(dense, expected)


def _node_gradient(rm: ReplacementModel, mode: Mode, noise: float) -> torch.Tensor:
    """Gradient of one (pre-softcap) logit w.r.t. all node values (features, errors, tokens), at the clean
    node values plus ``noise``, in the replacement model whose freezes follow ``mode``."""
    ids = torch.tensor(PROMPT)
    _, cap = rm.capture(ids)
    tc = rm.transcoders
    reads, writes = cap.stacked_reads(), cap.stacked_writes()
    feats = tc.encode_sparse(reads)
    errors = writes - tc.decode_sparse(feats, reads)
    assert cap.embed is not None
    g = torch.Generator().manual_seed(1)
    values = (
        feats.values
        + noise * torch.randn(feats.values.shape, generator=g, dtype=feats.values.dtype)
    ).requires_grad_()
    err = (
        errors + noise * torch.randn(errors.shape, generator=g, dtype=errors.dtype)
    ).requires_grad_()
    tok = (
        cap.embed[0] + noise * torch.randn(cap.embed[0].shape, generator=g, dtype=errors.dtype)
    ).requires_grad_()
    with torch.enable_grad():
        recon = tc.decode_sparse(type(feats)(feats.indices, values), reads)

        def write(layer: int, read: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
            value = recon[layer] + err[layer]
            if tc.has_skip:
                value = value - tc.skip(layer, reads[layer]) + tc.skip(layer, read[0])  # type: ignore[operator]
            return value[None]

        plan = Plan(
            attention=mode, norms=mode, frozen=cap, mlp_out=write, embed=lambda x: tok[None]
        )  # type: ignore[arg-type]
        with rm.zero_softcap():
            logits, _ = rm.run(ids[None], plan)
        target = logits[0, -1, 3]
        grads = torch.autograd.grad(target, [values, err, tok])
    return torch.cat([x.flatten() for x in grads])


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma2", "qwen3"])
def test_freezes_make_the_replacement_model_linear(family: str) -> None:
    rm = build(family, "plt_skip")
    # Frozen (replayed) patterns and scales: the gradient is the same wherever it is taken.
    torch.testing.assert_close(_node_gradient(rm, "replay", 0.0), _node_gradient(rm, "replay", 0.5))
    # Detached freezes give that same gradient at the clean point ...
    torch.testing.assert_close(_node_gradient(rm, "detach", 0.0), _node_gradient(rm, "replay", 0.0))
    # ... and without freezes the map is not linear, so the check above can fail.
    assert not torch.allclose(_node_gradient(rm, "live", 0.0), _node_gradient(rm, "live", 0.5))


def test_a_model_folder_is_checked_against_the_transcoders_before_its_weights_are_read(
    tmp_path: Path,
) -> None:
    tiny_model("llama", d_model=16).save_pretrained(tmp_path)
    for weights in tmp_path.glob("*.safetensors"):
        weights.write_bytes(b"not safetensors")  # reading them would fail differently
    with pytest.raises(ValueError, match="d_model 8 but the model has d_model 16"):
        ReplacementModel.from_pretrained(str(tmp_path), random_transcoder_set(2, 8, 16))


def test_mismatched_transcoders_are_refused() -> None:
    hf = tiny_model("llama", d_model=16)
    with pytest.raises(ValueError, match="d_model 8 but the model has d_model 16"):
        ReplacementModel.from_pretrained(hf, random_transcoder_set(2, 8, 16))
    with pytest.raises(ValueError, match="cover 3 layers but the model has 2"):
        ReplacementModel.from_pretrained(hf, random_transcoder_set(3, 16, 16))
    with pytest.raises(ValueError, match="Unsupported transcoder input hook"):
        ReplacementModel.from_pretrained(
            hf, random_transcoder_set(2, 16, 16, input_hook="hook_resid_pre")
        )


def test_unsupported_architecture_lists_supported_ones() -> None:
    with pytest.raises(UnsupportedArchitectureError, match="gemma2, .*llama"):
        adapter_for("bloom")


def test_text_prompt_gets_a_bos() -> None:
    rm = build("llama")
    assert rm.ensure_tokenized("the capital of").tolist() == [0, 3, 4, 5]
    assert rm.ensure_tokenized([0, 3, 4]).tolist() == [0, 3, 4]
    assert rm.ensure_tokenized([3, 4]).tolist() == [0, 3, 4]
    with pytest.raises(ValueError, match="empty"):
        rm.ensure_tokenized("")
    with pytest.raises(ValueError, match=r"Token ids must be in \[0, 64\)"):
        rm.ensure_tokenized([0, 99])
