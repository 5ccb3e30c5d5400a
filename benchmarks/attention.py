"""QK attributions and head loadings on SmolLM2-135M: cost against one attribution target row,
and the induction example of docs/attention.md.

    python benchmarks/attention.py [--tokens 32 256] [--repeats 3]

Builds SmolLM2-135M with fitted transcoders (``circuitlab.examples``, cached after the first
run). For each prompt length: the time of one logit target row (one ``FrozenBackward.rows``
call, batch 1) and of a batch of 256 rows; a QK sweep with pairs (every key up to 64 tokens,
else the top 16 keys) and a marginals-only sweep over every key (``pairs=False``) of one head
from the last position; one
``path_head_loadings`` of a strong edge. Then, on the repeated-random-token probe, the best
induction head's QK attribution from the last token to its induction key.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from circuitlab.attention import FrozenPrompt, path_head_loadings, qk_attribution, qk_sweep
from circuitlab.examples import smollm2_replacement_model
from circuitlab.heads.classes import head_scores
from circuitlab.heads.presets import repeated_tokens


def timed(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def costs(model, n_tokens: int, repeats: int) -> None:
    ids = repeated_tokens(n_tokens // 2, vocab=model.spec.vocab_size, bos=1)[:n_tokens]
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

    one, batch = timed(lambda: rows(1), repeats), timed(lambda: rows(256), repeats)
    layer, head = n_layers // 2, 0
    n_keys = n_pos if n_pos <= 64 else 16  # long prompts: pairs for the top 16 keys only
    full = timed(lambda: qk_sweep(model, fp, layer, head, -1, keys=n_keys, top_k=20), 1)
    fast = timed(lambda: qk_sweep(model, fp, layer, head, -1, pairs=False), repeats)
    src = f"E_{ids[1]}_1"
    # a feature of the highest active layer at the last position (logit nodes need a graph)
    last = fp.features.indices[fp.features.indices[:, 1] == n_pos - 1]
    top = last[last[:, 0] == last[:, 0].max()][0].tolist()
    target = f"{top[0]}_{top[2]}_{top[1]}"
    loads = timed(lambda: path_head_loadings(model, fp, src, target), 1)
    print(
        f"{n_pos} tokens: target row {one * 1e3:.1f} ms, 256 rows {batch * 1e3:.0f} ms; "
        f"QK pairs for {n_keys} keys {full:.2f} s ({full / one:.0f}x one row, "
        f"{full / batch:.1f}x 256 rows); marginals for all {n_pos} keys {fast * 1e3:.0f} ms "
        f"({fast / one:.1f}x one row); path_head_loadings {loads:.2f} s ({loads / one:.0f}x "
        "one row)"
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
    ap.add_argument("--tokens", type=int, nargs="+", default=[32, 256])
    ap.add_argument("--no-example", action="store_true", help="skip the induction example")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    model = smollm2_replacement_model(verbose=False)
    if not args.no_example:
        induction_example(model)
    for n in args.tokens:
        costs(model, n, args.repeats)


if __name__ == "__main__":
    main()
