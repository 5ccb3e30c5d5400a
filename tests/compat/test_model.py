"""The compatibility ``ReplacementModel``: circuit-tracer's constructors, shapes and defaults,
with the numbers of circuitlab's native methods."""

from __future__ import annotations

import pytest
import torch

from circuitlab.compat.circuit_tracer import ReplacementModel
from circuitlab.compat.circuit_tracer.replacement_model.replacement_model import Backend
from circuitlab.compat.circuit_tracer.utils.tl_nnsight_mapping import UnifiedConfig
from circuitlab.replacement import ReplacementModel as NativeReplacementModel

from .conftest import PROMPT


@pytest.mark.parametrize("backend", ["transformerlens", "nnsight"])
def test_from_pretrained_takes_circuit_tracers_arguments(
    disk_model: tuple[str, str], backend: Backend
) -> None:
    model_dir, tc_dir = disk_model
    model = ReplacementModel.from_pretrained(
        model_dir, tc_dir, backend=backend, device="cpu", lazy_encoder=True, lazy_decoder=False
    )
    by_keyword = ReplacementModel.from_pretrained(
        model_name=model_dir, transcoder_set=tc_dir, backend=backend, device="cpu"
    )
    native = NativeReplacementModel.from_pretrained(model_dir, tc_dir)
    assert model.backend == backend
    expected = native.get_activations(PROMPT).logits
    for m in (model, by_keyword):
        logits, _ = m.get_activations(PROMPT)
        torch.testing.assert_close(logits[0], expected)


def test_from_pretrained_and_transcoders_attaches_loaded_transcoders(
    disk_model: tuple[str, str],
) -> None:
    from circuitlab.transcoders import load_transcoders

    model_dir, tc_dir = disk_model
    model = ReplacementModel.from_pretrained_and_transcoders(model_dir, load_transcoders(tc_dir))
    assert model.cfg.n_layers == 2


def test_from_config_builds_a_random_model_with_the_transcoders(
    disk_model: tuple[str, str],
) -> None:
    from transformers import AutoConfig

    from circuitlab.transcoders import load_transcoders

    model_dir, tc_dir = disk_model
    transcoders = load_transcoders(tc_dir)
    torch.manual_seed(1)
    model = ReplacementModel.from_config(
        AutoConfig.from_pretrained(model_dir), transcoders, backend="nnsight"
    )
    assert model.backend == "nnsight" and model.transcoders is transcoders
    assert model.to_str_tokens("the capital")[1:] == ["the", "capital"]  # its tokenizer
    trained = NativeReplacementModel.from_pretrained(model_dir, transcoders)
    logits, _ = model.get_activations(PROMPT)
    assert not torch.allclose(logits[0], trained.get_activations(PROMPT).logits)  # re-drawn
    torch.testing.assert_close(logits[0], model.native.get_activations(PROMPT).logits)


def test_from_config_refuses_a_transformerlens_config() -> None:
    from circuitlab.transcoders import random_transcoder_set

    class HookedTransformerConfig:  # what circuit-tracer's TransformerLens backend takes
        n_layers, d_model = 2, 16

    with pytest.raises(TypeError, match="AutoConfig"):
        ReplacementModel.from_config(HookedTransformerConfig(), random_transcoder_set(2, 16, 32))


def test_an_unknown_backend_is_refused(disk_model: tuple[str, str]) -> None:
    with pytest.raises(ValueError, match="Unknown backend"):
        ReplacementModel.from_pretrained(*disk_model, backend="jax")  # type: ignore[arg-type]


def test_cfg_has_transformerlens_field_names(model: ReplacementModel) -> None:
    cfg = model.cfg
    assert isinstance(cfg, UnifiedConfig)
    assert (cfg.n_layers, cfg.d_model, cfg.d_vocab) == (
        model.n_layers,
        model.spec.d_model,
        model.spec.vocab_size,
    )
    assert cfg.n_heads * cfg.d_head == cfg.d_model
    assert cfg.original_architecture == "LlamaForCausalLM"
    assert cfg.dtype == torch.float64
    assert UnifiedConfig.from_dict(cfg.to_dict()) == cfg


def test_backend_accessors(model: ReplacementModel) -> None:
    from circuitlab.compat.circuit_tracer.attribution import AttributionTargets

    assert model.unembed_proj.shape == (model.spec.d_model, model.spec.vocab_size)
    assert model.model_config == model.cfg
    logits, _ = model.get_activations(PROMPT)
    targets = AttributionTargets(["Austin"], logits[0, -1], model.unembed_proj, model.tokenizer)
    want = model.unembed_weight[targets.token_ids[0]]
    torch.testing.assert_close(targets.logit_vectors[0], want - model.unembed_weight.mean(0))


def test_get_activations_unpacks_with_circuit_tracers_shapes(
    model: ReplacementModel, native: NativeReplacementModel
) -> None:
    ref = native.get_activations(PROMPT)
    logits, acts = model.get_activations(PROMPT)
    n_pos = ref.logits.shape[0]
    assert logits.shape == (1, n_pos, model.spec.vocab_size)
    assert acts.shape == (model.n_layers, n_pos, model.transcoders.d_transcoder)
    torch.testing.assert_close(acts, ref.dense())
    # Indexing as circuit-tracer users do reads the last position, not position 0.
    torch.testing.assert_close(logits[0, -1], ref.logits[-1])
    _, sparse = model.get_activations(PROMPT, sparse=True)
    assert sparse.is_sparse and sparse.is_coalesced()
    torch.testing.assert_close(sparse.to_dense(), ref.dense())


def test_pre_activations_match_native(
    model: ReplacementModel, native: NativeReplacementModel
) -> None:
    _, pre = model.get_activations(PROMPT, apply_activation_function=False)
    ref = native.get_activations(PROMPT, apply_activation_function=False)
    torch.testing.assert_close(pre, ref.dense())


def test_setup_attribution_sources_add_up(model: ReplacementModel) -> None:
    ctx = model.setup_attribution(PROMPT)
    _, acts = model.get_activations(PROMPT)
    torch.testing.assert_close(ctx.activation_matrix.to_dense(), acts)
    n_pos = acts.shape[1]
    assert ctx.error_vectors.shape == (model.n_layers, n_pos, model.spec.d_model)
    assert ctx.token_vectors.shape == (n_pos, model.spec.d_model)
    assert ctx.logits.shape == (1, n_pos, model.spec.vocab_size)
    assert not ctx.error_vectors[:, 0].any()  # BOS is zeroed


def test_feature_intervention_matches_native(
    model: ReplacementModel, native: NativeReplacementModel
) -> None:
    _, acts = model.get_activations(PROMPT)
    layer, pos, feat = (int(i) for i in acts.nonzero()[-1])
    ivs = [(layer, pos, feat, 3.0 * float(acts[layer, pos, feat]))]
    logits, new_acts = model.feature_intervention(PROMPT, ivs)
    ref = native.feature_intervention(PROMPT, ivs)
    ref_logits, ref_acts = ref.logits, ref.activations
    assert isinstance(ref_acts, torch.Tensor)
    assert logits.shape == (1, *ref_logits.shape)
    torch.testing.assert_close(logits[0], ref_logits)
    torch.testing.assert_close(new_acts, ref_acts)
    constrained, _ = model.feature_intervention(
        PROMPT, ivs, constrained_layers=range(model.n_layers), return_activations=False
    )
    ref_constrained = native.feature_intervention(
        PROMPT, ivs, constrained_layers=range(model.n_layers), return_activations=False
    ).logits
    torch.testing.assert_close(constrained[0], ref_constrained)
    _, sparse = model.feature_intervention(PROMPT, ivs, sparse=True)
    assert sparse is not None and sparse.is_sparse
    torch.testing.assert_close(sparse.to_dense(), ref_acts)


def test_feature_intervention_generate_has_circuit_tracers_defaults(
    model: ReplacementModel, native: NativeReplacementModel
) -> None:
    ivs = [(1, 2, 0, 4.0)]
    text, logits, acts = model.feature_intervention_generate(
        PROMPT, ivs, do_sample=False, stop_at_eos=False, verbose=False
    )
    ref = native.feature_intervention_generate(
        PROMPT, ivs, max_new_tokens=10, do_sample=False, stop_at_eos=False
    )
    assert text == ref.text
    assert logits.shape == (10, model.spec.vocab_size)  # max_new_tokens=10 by default
    torch.testing.assert_close(logits, ref.logits)
    assert acts is not None  # return_activations=True by default
    assert acts.shape[:2] == (model.n_layers, int(ref.tokens.shape[0]) - 1)
    # Sampling by default (do_sample=True), reproducible with circuitlab's seed=.
    a = model.feature_intervention_generate(PROMPT, ivs, seed=3, stop_at_eos=False)
    b = model.feature_intervention_generate(PROMPT, ivs, seed=3, stop_at_eos=False)
    assert a[0] == b[0]


def test_generate_options_circuitlab_lacks_are_refused(model: ReplacementModel) -> None:
    with pytest.raises(ValueError, match="top_k"):
        model.feature_intervention_generate(PROMPT, [], top_k=5)
    with pytest.raises(TypeError, match="no_such_option"):
        model.feature_intervention_generate(PROMPT, [], no_such_option=1)


def test_native_view_shares_the_model(model: ReplacementModel) -> None:
    view = model.native
    assert type(view) is NativeReplacementModel and view.model is model.model
    logits, _ = model.get_activations(PROMPT)
    torch.testing.assert_close(view.get_activations(PROMPT).logits, logits[0])


def test_native_results_keep_no_batch_axis(native: NativeReplacementModel) -> None:
    """The native result has ``logits [pos, vocab]`` and does not unpack as circuit-tracer's
    tuple, so ported code indexing ``logits[0, -1]`` fails at the unpacking."""
    acts = native.get_activations(PROMPT)
    assert acts.logits.dim() == 2
    with pytest.raises(TypeError):
        logits, _ = acts  # type: ignore[misc]
