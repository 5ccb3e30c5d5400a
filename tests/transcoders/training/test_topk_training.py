"""TopK kinds: BatchTopK's mean L0 is k, AuxK revives dead features, unit-norm decoders, and
the sparse kernels train exactly as the dense computation does."""

from __future__ import annotations

import pytest
import torch

from circuitlab.transcoders.training import TrainableTranscoders, TrainConfig
from circuitlab.transcoders.training import trainer as trainer_mod
from circuitlab.transcoders.training.sparse import (
    _batch_topk_indices,  # pyright: ignore[reportPrivateUsage]
    batch_topk_picks,
    layer_codes,
    sparse_decode,
    stacked_codes,
    topk_picks,
)


def _sparse_data(n: int, dictionary: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """``[1, n, d]`` tokens that are sums of 4 of the dictionary's rows (weights in [1, 2])."""
    n_true = dictionary.shape[0]
    s = torch.zeros(n, n_true)
    idx = torch.rand(n, n_true, generator=g).topk(4, -1).indices
    s.scatter_(-1, idx, 1 + torch.rand(n, 4, generator=g))
    return (s @ dictionary)[None]


def _dictionary(n: int, d: int, seed: int = 0) -> torch.Tensor:
    w = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return w / w.norm(dim=-1, keepdim=True)


def _run(
    tc: TrainableTranscoders, cfg: TrainConfig, steps: int, batches: list[torch.Tensor]
) -> trainer_mod._Metrics:
    opt = torch.optim.Adam(tc.parameters(), lr=cfg.lr)
    prog = trainer_mod.Progress()
    metrics = trainer_mod._Metrics(tc.n_layers, tc.d_transcoder)
    for i in range(steps):
        x = batches[i % len(batches)]
        trainer_mod._step(tc, opt, cfg, prog, metrics, x, x, steps)
    return metrics


def test_auxk_revives_planted_dead_features() -> None:
    """24 of 64 features start with encoder rows too short to ever win the top k; without
    AuxK they stay dead for 200 steps, with it most of them come back."""
    dictionary = _dictionary(64, 32)
    g = torch.Generator().manual_seed(1)
    batches = [_sparse_data(256, dictionary, g) for _ in range(50)]
    dead = {}
    for alpha in (0.0, 1 / 32):
        cfg = TrainConfig(
            activation="topk", d_transcoder=64, k=4, lr=1e-2, auxk_alpha=alpha, dead_window=1024
        )
        tc = TrainableTranscoders(1, 32, 64, activation="topk", k=4, seed=1)
        with torch.no_grad():
            tc.W_enc[0, :24] *= 0.1  # planted: never in the top 4
        metrics = _run(tc, cfg, 200, batches)
        dead[alpha] = int(metrics.dead(200 * 256, 40 * 256)[0])  # silent in the last 40 steps
    assert dead[0.0] == 24
    assert dead[1 / 32] <= 8


def test_batchtopk_mean_l0_is_k_and_it_saves_as_a_jump_relu() -> None:
    g = torch.Generator().manual_seed(0)
    tc = TrainableTranscoders(2, 16, 48, activation="batchtopk", k=5)
    x = torch.randn(2, 200, 16, generator=g)
    out = tc(x, x)
    assert out.l0.tolist() == [5.0, 5.0]  # mean over the batch; tokens differ
    per_token = ((tc._activate(tc.preactivations(x))) > 0).sum(-1)
    assert per_token.float().mean().item() == 5.0 and per_token.min() < per_token.max()
    assert (tc.batch_threshold > 0).all()  # the smallest kept activation, per layer
    # inference and the saved transcoders: a JumpReLU at that threshold, every feature
    saved = tc.to_transcoders(input_hook="mlp.hook_in", output_hook="hook_mlp_out")
    with torch.no_grad():
        want = tc.decode(tc.encode(x), x)
        acts = tc.encode(x)
    assert ((acts > 0) == (tc.preactivations(x) > tc.batch_threshold[:, None, None])).all()
    torch.testing.assert_close(saved(x), want)


def test_batchtopk_training_keeps_mean_l0_at_k() -> None:
    dictionary = _dictionary(48, 16)
    g = torch.Generator().manual_seed(2)
    batches = [_sparse_data(128, dictionary, g) for _ in range(4)]
    cfg = TrainConfig(activation="batchtopk", d_transcoder=48, k=3, lr=1e-2, log_every=5)
    tc = TrainableTranscoders(1, 16, 48, activation="batchtopk", k=3)
    metrics = _run(tc, cfg, 10, batches)
    assert metrics.summary(1280, 10_000)["l0"] == [pytest.approx(3.0)]


@pytest.mark.parametrize("activation", ["topk", "batchtopk"])
@pytest.mark.parametrize("kind", ["plt", "clt"])
def test_sparse_kernels_train_like_the_dense_computation(activation: str, kind: str) -> None:
    """Adam on the sparse kernels' gradients = Adam on the dense ones: the gradients agree to
    float tolerance, and so do the weights after 30 steps (AuxK on, skip on; a small dead
    window so AuxK has dead features to work with)."""
    dictionary = _dictionary(40, 12)
    g = torch.Generator().manual_seed(3)
    batches = [torch.cat([_sparse_data(64, dictionary, g) for _ in range(3)]) for _ in range(5)]
    trained = []
    for sparse in (True, False):
        cfg = TrainConfig(
            kind=kind,
            activation=activation,
            d_transcoder=40,
            k=4,
            lr=3e-3,
            dead_window=128,
            k_aux=6,
            sparse_kernels=sparse,
        )
        tc = TrainableTranscoders(3, 12, 40, kind=kind, activation=activation, k=4, skip=True)
        with torch.no_grad():
            tc.W_enc[:, :10] *= 0.1  # some dead features for AuxK
        _run(tc, cfg, 30, batches)
        trained.append(tc.state_dict())
    for key, value in trained[0].items():
        torch.testing.assert_close(value, trained[1][key], rtol=1e-4, atol=1e-5, msg=key)


def test_unit_norm_decoder_rows_and_radial_gradient_removed() -> None:
    tc = TrainableTranscoders(2, 8, 16, kind="clt", activation="topk", k=2)
    x = torch.randn(2, 30, 8)
    out = tc(x, x.flip(1), sparse=True)
    ((out.recon - x.flip(1)) ** 2).sum().backward()
    tc.project_decoder_grads_()
    for dec in tc.W_dec:
        assert dec.grad is not None
        radial = (dec.grad * dec).sum((1, 2))
        torch.testing.assert_close(radial, torch.zeros_like(radial), atol=1e-5, rtol=0)
        with torch.no_grad():
            dec.add_(0.3 * torch.randn_like(dec))
    tc.clamp_()
    torch.testing.assert_close(tc.decoder_norms(), torch.ones(2, 16))


def test_stacked_codes_decode_as_the_dense_product_per_layer() -> None:
    """Two layers' codes stacked into one sparse product (BatchTopK in one, TopK in the
    other) decode, and differentiate, as each layer's dense product does."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 20, 6, generator=g)
    W = torch.randn(2, 10, 6, generator=g, requires_grad=True)
    b = torch.randn(2, 10, generator=g, requires_grad=True)
    W_dec = torch.randn(2, 10, 5, generator=g, requires_grad=True)
    target = torch.randn(2, 20, 5, generator=g)
    with torch.no_grad():
        pre = torch.baddbmm(b[:, None], x, W.transpose(1, 2))
    picks = [batch_topk_picks(pre[0], 3), topk_picks(pre[1], 2)]
    codes = stacked_codes(pre, picks, W, b, x)
    assert codes.feat.numel() == 20 * 3 + 20 * 2
    out = sparse_decode(codes, W_dec.view(20, 5)).view(2, 20, 5)
    ((out - target) ** 2).sum().backward()
    got = [t.grad.clone() for t in (W, b, W_dec)]  # type: ignore[union-attr]
    for t in (W, b, W_dec):
        t.grad = None
    dense = torch.zeros(2, 20, 10)
    for layer, (tok, feat) in enumerate(picks):
        one = layer_codes(codes, layer, 20, 10)
        assert torch.equal(one.tok, tok) and torch.equal(one.feat, feat)
        dense[layer, tok, feat] = 1.0
    acts = torch.relu(torch.baddbmm(b[:, None], x, W.transpose(1, 2))) * dense
    want = torch.bmm(acts, W_dec)
    torch.testing.assert_close(out, want)
    ((want - target) ** 2).sum().backward()
    for mine, theirs in zip(got, (W.grad, b.grad, W_dec.grad), strict=True):
        torch.testing.assert_close(mine, theirs)


def test_batch_topk_candidates_equal_the_full_search() -> None:
    """Each token's 2k largest as candidates gives the batch's n·k largest, also when one
    token owns more than 2k of them (then the full search runs)."""
    g = torch.Generator().manual_seed(5)
    for shift in (0.0, 6.0):
        pre = torch.randn(64, 200, generator=g)
        pre[3] += shift  # token 3 holds far more than 2k of the largest entries
        want = pre.flatten().topk(64 * 4).indices.sort().values
        assert torch.equal(_batch_topk_indices(pre, 4), want)
