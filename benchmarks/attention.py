"""QK attributions and head loadings on SmolLM2-135M: cost against one attribution target row,
and the induction example of docs/attention.md.

    python benchmarks/attention.py [--tokens 32 256] [--repeats 3] [--threads 1] [--no-example]

Costs use ``benchmarks/fixtures.py``'s ``smollm2()`` (SmolLM2-135M, fitted transcoders of
4,096 features, Wikipedia text prompts). For each prompt length: one logit target row (one
``FrozenBackward.rows`` call, batch 1) and a batch of 256 rows; the full QK sweep of one
head (layer ``n_layers // 2``, head 0) from the last position over every key (marginals and
bias terms, ``pairs=False``, the 20 largest marginals a side kept) and the same for one key
(the head's strongest after the BOS); a sweep with pairs (every key up to 64 tokens, else
the top 16 keys); one ``path_head_loadings``. Timings are CPU time of the process (one torch
thread by default: wall time on a shared machine measures its load), the fastest of
``--repeats`` runs taken in turn.

Two figures back docs/attention.md's argument that an exact sweep over every key cannot cost
about one row: the key-marginal matrix restricted to the token columns (``[keys, tokens]``,
from one transposed row per key) is lower triangular with a non-zero diagonal, so its rank is
the number of keys; and the arithmetic floor, the multiply-adds of the attention's ``W_O`` and
``W_V`` products alone that rows of that rank need (each key's row over its own positions
only, the query side's ``min(n_keys, d_head)`` rows over all, the layers below the read
layer's first), timed at the rate of a large one-thread matrix product on this machine and
compared with the same products of one target row.

The induction example uses ``circuitlab.examples.smollm2_replacement_model()``'s trained
transcoders on the repeated-random-token probe: the best induction heads' QK attributions
from the last token to the induction key.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from circuitlab import ReplacementModel  # noqa: E402
from circuitlab.attention import FrozenPrompt, path_head_loadings, qk_attribution, qk_sweep
from circuitlab.attention.qk_maps import qk_side, qk_sides
from circuitlab.examples import smollm2_replacement_model
from circuitlab.heads.classes import head_scores
from circuitlab.heads.presets import repeated_tokens  # noqa: E402

from fixtures import smollm2  # noqa: E402


def fastest(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """The least CPU time of ``repeats`` runs of each function, run in turn."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.process_time()
            fn()
            times[name].append(time.process_time() - start)
    return {name: min(t) for name, t in times.items()}


def gemm_rate(n: int, k: int, m: int, repeats: int = 5) -> float:
    """Multiply-adds per CPU second of the best of ``repeats`` products ``[n, k] @ [k, m]``."""
    x, w = torch.randn(n, k), torch.randn(k, m)
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(10):
            torch.mm(x, w)
        best = min(best, (time.process_time() - start) / 10)
    return n * k * m / best


def key_token_block(fp: FrozenPrompt, layer: int, head: int) -> torch.Tensor:
    """``[keys, tokens]``: every key's marginals (``scale`` left out) on the token columns, for
    the last query: one transposed row per key, 32 at a time."""
    q = fp.n_pos - 1
    query = qk_side(fp, layer, head, q, "query")
    sides = qk_sides(fp, layer, head, list(range(q + 1)), "key")
    dirs = torch.einsum("njd,j->nd", sides.directions, query.value)  # [keys, d]
    t0 = fp.sources.token_col
    parts = [
        fp.contributions(layer, torch.arange(lo, min(lo + 32, q + 1)), dirs[lo : lo + 32])
        for lo in range(0, q + 1, 32)
    ]
    return torch.cat([part[:, t0 : t0 + fp.n_pos] for part in parts])


def arithmetic_floor(model, n_keys: int, n_pos: int, layer: int) -> int:
    """Multiply-adds of the ``W_O`` and ``W_V`` products of an exact sweep's rows (module
    docstring): key ``k``'s row over positions ``0..k``, ``min(n_keys, d_head)`` query rows
    over every position, in the ``layer - 1`` blocks below the one under ``layer``."""
    spec = model.spec
    per = spec.d_model * (spec.n_heads + spec.n_kv_heads) * spec.d_head
    row_positions = n_keys * (n_keys + 1) // 2 + min(n_keys, spec.d_head) * n_pos
    return per * max(layer - 1, 0) * row_positions


def costs(model, ids: list[int], repeats: int) -> None:
    fp = FrozenPrompt.build(model, ids)
    n_layers, n_pos = model.n_layers, fp.n_pos
    U = model.unembed_weight.to(fp.dtype)
    vec = (U[int(fp.capture.logits[0, -1].argmax())] - U.mean(0))[None]  # type: ignore[index]

    def rows(b: int) -> None:
        fp.backward.rows(
            fp.sources,
            torch.full((b,), n_layers),
            torch.full((b,), n_pos - 1),
            vec.expand(b, -1).contiguous(),
        )

    layer, head = n_layers // 2, 0
    key = int(fp.capture.patterns[layer][0, head, -1, 1:].argmax()) + 1  # the top key but BOS
    n_keys = n_pos if n_pos <= 64 else 16  # long prompts: pairs for the top 16 keys only
    src = f"E_{ids[1]}_1"
    # a feature of the highest active layer at the last position (logit nodes need a graph)
    last = fp.features.indices[fp.features.indices[:, 1] == n_pos - 1]
    top = last[last[:, 0] == last[:, 0].max()][0].tolist()
    target = f"{top[0]}_{top[2]}_{top[1]}"
    t = fastest(
        {
            "row": lambda: rows(1),
            "sweep": lambda: qk_sweep(model, fp, layer, head, -1, pairs=False, top_marginals=20),
            "one key": lambda: qk_sweep(
                model, fp, layer, head, -1, keys=[key], pairs=False, top_marginals=20
            ),
            "loadings": lambda: path_head_loadings(model, fp, src, target),
        },
        repeats,
    )
    t |= fastest(
        {
            "batch": lambda: rows(256),
            "pairs": lambda: qk_sweep(model, fp, layer, head, -1, keys=n_keys, top_k=20),
        },
        1,
    )
    one = t["row"]
    print(
        f"{n_pos} tokens ({fp.sources.n_features} active features): target row "
        f"{one * 1e3:.0f} ms, 256 rows {t['batch']:.2f} s; full QK sweep (marginals, all "
        f"{n_pos} keys) {t['sweep']:.2f} s = {t['sweep'] / one:.1f}x one row; pairs for "
        f"{n_keys} keys {t['pairs']:.2f} s = {t['pairs'] / one:.0f}x one row, "
        f"{t['pairs'] / t['batch']:.1f}x 256 rows; path_head_loadings {t['loadings']:.2f} s = "
        f"{t['loadings'] / one:.1f}x one row; one key (marginals, key {key}) "
        f"{t['one key']:.3f} s = {t['one key'] / one:.1f}x one row"
    )
    block = key_token_block(fp, layer, head)
    upper, diag = float(block.triu(1).abs().max()), block.diagonal().abs()
    spec = model.spec
    rate = gemm_rate(4096, spec.d_model, spec.n_heads * spec.d_head)
    macs = arithmetic_floor(model, n_pos, n_pos, layer)
    row_macs = spec.d_model * (spec.n_heads + spec.n_kv_heads) * spec.d_head * n_pos * n_layers
    floor = macs / rate
    rank = f"rank {n_pos}" if upper == 0 and float(diag.min()) > 0 else "rank not shown"
    print(
        f"  key marginals on the token columns [{n_pos}, {n_pos}]: largest entry above the "
        f"diagonal {upper:.1e}, smallest |diagonal| {float(diag.min()):.2e} (largest entry "
        f"{float(block.abs().max()):.2e}): {rank}; arithmetic floor of the rows "
        f"{floor:.2f} s = {floor / one:.1f}x one row (one-thread product rate "
        f"{2 * rate / 1e9:.0f} GFLOP/s), {macs / row_macs:.1f}x the same products of one row "
        "(every layer, every position)"
    )


def induction_example(model) -> None:
    ids = repeated_tokens(20, vocab=model.spec.vocab_size, bos=1)
    fp = FrozenPrompt.build(model, ids)
    patterns = torch.stack([fp.capture.patterns[i][0] for i in range(model.n_layers)])
    scores = head_scores(patterns, torch.tensor(ids)).induction
    best = torch.argsort(scores.flatten(), descending=True)[:2].tolist()
    q = len(ids) - 1
    k = ids.index(ids[q]) + 1  # the token after the earlier copy
    tok = model.tokenizer
    for i in best:
        layer, head = divmod(i, model.spec.n_heads)
        r = qk_attribution(model, fp, layer, head, q, k, top_k=6)
        print(
            f"\nL{layer}H{head} induction score {float(scores[layer, head]):.2f}: query @{q} "
            f"{tok.decode([ids[q]])!r} -> key @{k} {tok.decode([ids[k]])!r} (after the earlier "
            f"{tok.decode([ids[k - 1]])!r}): score {r.total:+.2f}, attention {r.attention:.2f}"
        )
        for p in r.pairs:
            print(f"  {p.value:+7.3f}  {p.query_node:>14} x {p.key_node}")
        print("  query side:", [(n, round(v, 2)) for n, v in list(r.query_marginals.items())[:5]])
        print("  key side:  ", [(n, round(v, 2)) for n, v in list(r.key_marginals.items())[:5]])
        print("  bias terms:", {n: round(v, 2) for n, v in r.bias_terms.items()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--tokens",
        type=int,
        nargs="*",
        default=[32, 256],
        help="prompt lengths to time (none: the induction example only)",
    )
    ap.add_argument("--no-example", action="store_true", help="skip the induction example")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    if not args.no_example:
        induction_example(smollm2_replacement_model(verbose=False))
    fx = smollm2()
    model = ReplacementModel.from_pretrained(str(fx.model_dir), str(fx.transcoder_dir))
    for n in args.tokens:
        costs(model, fx.prompt(n), args.repeats)


if __name__ == "__main__":
    main()
