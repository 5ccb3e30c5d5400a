"""Streaming per-feature statistics of one layer, in memory bounded by the number of features.

For every feature ``f`` of a layer, over all non-BOS tokens streamed so far:

* ``fire_count[f]``: tokens with activation > 0; ``act_min[f]`` / ``act_max[f]``: the smallest
  and largest non-zero activation.
* A histogram of the non-zero activations with ``hist_bins`` equal bins over ``[0, hist_hi[f])``,
  where ``hist_hi[f]`` is a power of two above ``act_max[f]``. When a larger activation arrives,
  ``hist_hi`` doubles and adjacent bin pairs merge (exact: the power-of-two bin edges nest), so
  the histogram never needs a first pass and its resolution is at least ``act_max / hist_bins``.
* An *example* is a window; its score for ``f`` is the window's largest activation of ``f``.
  ``top``: the ``top_k`` highest-scoring windows (ties: earlier window first).
* ``bands``: a uniform random sample of ``per_band`` windows from each of ``n_bands`` activation
  bands, band ``r`` holding scores in ``[2^(e-r), 2^(e-r+1))`` where ``2^e <= act_max < 2^(e+1)``.
  Each (window, feature) pair gets a fixed pseudo-random priority (a hash of both ids) and a band
  keeps its ``per_band`` highest priorities: a bottom-k sample, which is a uniform sample of
  everything that fell in the band and does not depend on batch boundaries. When ``act_max``
  crosses a power of two the bands slide up and the lowest band's sample is dropped.

Each example slot also keeps its window's per-token activations of ``f`` (float16), so the
dashboards need no second pass over the corpus. Everything is a tensor updated with
vectorised ops per batch, so the state is
``O(d_transcoder * (hist_bins + (top_k + n_bands * per_band) * context))`` however long the
corpus is, and
``state_dict()`` / ``load_state_dict()`` make a checkpoint exact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class StatsConfig:
    """Sizes of the per-feature state (see the module docstring)."""

    top_k: int = 10
    n_bands: int = 4
    per_band: int = 4
    hist_bins: int = 64
    seed: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def priority(windows: torch.Tensor, features: torch.Tensor, seed: int) -> torch.Tensor:
    """A fixed pseudo-random number in [0, 1) per (window, feature) pair (integer hash)."""
    x = (windows * 0x9E3779B1 + features * 0x85EBCA77 + seed * 0xC2B2AE3D) & 0x7FFFFFFF
    for mult in (0x2C1B3C6D, 0x297A2D39):
        x = ((x ^ (x >> 15)) * mult) & 0x7FFFFFFF
    x = x ^ (x >> 13)
    return x.double() / 2**31


def band_of(values: torch.Tensor) -> torch.Tensor:
    """``floor(log2(v))`` for positive ``v``, exactly (via the float exponent)."""
    return torch.frexp(values).exponent.long() - 1


def _gather_rows(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """``x [F, n, pos]`` rows picked by ``order [F, m]`` -> ``[F, m, pos]``."""
    return x.gather(1, order[..., None].expand(-1, -1, x.shape[-1]))


class LayerStats:
    """The streaming state of one layer's ``d_transcoder`` features (module docstring)."""

    def __init__(self, d_transcoder: int, config: StatsConfig | None = None):
        cfg = self.config = config or StatsConfig()
        F, n_slots = d_transcoder, cfg.n_bands * cfg.per_band
        self.d_transcoder = F
        self.fire_count = torch.zeros(F, dtype=torch.long)
        self.act_min = torch.full((F,), float("inf"))
        self.act_max = torch.zeros(F)
        self.hist = torch.zeros(F, cfg.hist_bins, dtype=torch.long)
        self.hist_hi = torch.zeros(F)
        self.top_score = torch.zeros(F, cfg.top_k)
        self.top_win = torch.full((F, cfg.top_k), -1, dtype=torch.long)
        self.band_score = torch.zeros(F, n_slots)
        self.band_win = torch.full((F, n_slots), -1, dtype=torch.long)
        self.band_abs = torch.zeros(F, n_slots, dtype=torch.long)
        # per-token activations (float16) of each slot's window: [d_t, slots, pos]
        self.top_acts = torch.zeros(F, cfg.top_k, 0, dtype=torch.float16)
        self.band_acts = torch.zeros(F, n_slots, 0, dtype=torch.float16)

    # ---- streaming ------------------------------------------------------------------------
    @torch.no_grad()
    def update(self, acts: torch.Tensor, windows: torch.Tensor) -> None:
        """Adds a batch: activations ``[batch, pos, d_t]`` (BOS already zero), window ids ``[batch]``."""
        acts = acts.detach().float().cpu()
        on = acts > 0
        self.fire_count += on.sum((0, 1))
        self.act_max = torch.maximum(self.act_max, acts.amax((0, 1)).clamp(min=0))
        masked = torch.where(on, acts, torch.full_like(acts, float("inf")))
        self.act_min = torch.minimum(self.act_min, masked.amin((0, 1)))
        _, _, f = on.nonzero(as_tuple=True)
        self._add_to_histogram(f, acts[on])
        wmax = acts.amax(1).clamp(min=0)  # [batch, d_t]
        if self.top_acts.shape[-1] != acts.shape[1]:
            if self.top_acts.shape[-1] and (self.top_win >= 0).any():
                raise ValueError("All windows of one build must have the same length.")
            self.top_acts = torch.zeros(*self.top_win.shape, acts.shape[1], dtype=torch.float16)
            self.band_acts = torch.zeros(*self.band_win.shape, acts.shape[1], dtype=torch.float16)
        per_token = acts.clamp(-65000, 65000).half().permute(2, 0, 1)  # [d_t, batch, pos]
        self._update_top(wmax, windows.cpu(), per_token)
        self._update_bands(wmax, windows.cpu(), per_token)

    def _add_to_histogram(self, f: torch.Tensor, vals: torch.Tensor) -> None:
        nb = self.config.hist_bins
        empty = (self.hist_hi == 0) & (self.act_max > 0)
        if empty.any():
            exponent = band_of(self.act_max[empty]) + 1
            self.hist_hi[empty] = torch.ldexp(torch.ones(exponent.shape), exponent).float()
        while True:  # double the range (merging bin pairs) until act_max < hist_hi
            grow = (self.hist_hi > 0) & (self.act_max >= self.hist_hi)
            if not grow.any():
                break
            merged = self.hist[grow].view(-1, nb // 2, 2).sum(-1)
            self.hist[grow] = torch.cat([merged, torch.zeros_like(merged)], dim=1)
            self.hist_hi[grow] *= 2
        if f.numel():
            idx = (vals / self.hist_hi[f] * nb).long().clamp(0, nb - 1)
            self.hist.view(-1).index_add_(0, f * nb + idx, torch.ones_like(idx))

    def _update_top(
        self, wmax: torch.Tensor, windows: torch.Tensor, per_token: torch.Tensor
    ) -> None:
        """Merges the batch's window maxima ``[batch, d_t]`` into the top-k of each feature."""
        k = self.config.top_k
        scores = torch.cat([self.top_score, wmax.T], dim=1)  # [d_t, k + batch]
        wins = torch.cat([self.top_win, windows[None].expand(self.d_transcoder, -1)], dim=1)
        scores = torch.where(wins >= 0, scores, torch.zeros_like(scores))
        # sort by score, ties to the earlier window (kept slots come first and are older)
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
        self.top_score = scores.gather(1, order)
        self.top_acts = _gather_rows(torch.cat([self.top_acts, per_token], dim=1), order)
        self.top_win = torch.where(self.top_score > 0, wins.gather(1, order), -1)

    def _update_bands(
        self, wmax: torch.Tensor, windows: torch.Tensor, per_token: torch.Tensor
    ) -> None:
        """Merges the batch's window maxima ``[batch, d_t]`` into each band's sample."""
        cfg, F = self.config, self.d_transcoder
        if cfg.n_bands == 0:
            return
        top_band = band_of(self.act_max.clamp(min=torch.finfo(torch.float32).tiny))[:, None]
        new_wins = windows[None].expand(F, -1)
        wins = torch.cat([self.band_win, new_wins], dim=1)  # [d_t, slots + batch]
        scores = torch.cat([self.band_score, wmax.T], dim=1)
        absb = torch.cat([self.band_abs, band_of(wmax.T.clamp(min=1e-38))], dim=1)
        valid = (wins >= 0) & (scores > 0)
        r = top_band - absb
        prio = priority(wins.clamp(min=0), torch.arange(F)[:, None], cfg.seed)
        all_acts = torch.cat([self.band_acts, per_token], dim=1)
        new_win, new_score, new_abs, new_acts = [], [], [], []
        for band in range(cfg.n_bands):
            p = torch.where(valid & (r == band), prio, torch.full_like(prio, -1.0))
            order = torch.sort(p, dim=1, descending=True, stable=True).indices[:, : cfg.per_band]
            taken = p.gather(1, order) >= 0
            new_win.append(torch.where(taken, wins.gather(1, order), -1))
            new_score.append(torch.where(taken, scores.gather(1, order), 0.0))
            new_abs.append(torch.where(taken, absb.gather(1, order), 0))
            new_acts.append(_gather_rows(all_acts, order) * taken[..., None])
        self.band_win = torch.cat(new_win, dim=1)
        self.band_score = torch.cat(new_score, dim=1)
        self.band_abs = torch.cat(new_abs, dim=1)
        self.band_acts = torch.cat(new_acts, dim=1)

    # ---- results --------------------------------------------------------------------------
    def referenced_windows(self) -> torch.Tensor:
        """Sorted ids of every window some example slot holds."""
        ids = torch.cat([self.top_win.flatten(), self.band_win.flatten()])
        return torch.unique(ids[ids >= 0])

    def example_acts(self) -> torch.Tensor:
        """Per-token activations ``[d_t, slots, pos]`` (float16) of ``example_slots()``."""
        return torch.cat([self.top_acts, self.band_acts], dim=1)

    def example_slots(self) -> torch.Tensor:
        """Window ids ``[d_t, top_k + n_bands * per_band]`` (-1 = empty): top, then bands."""
        return torch.cat([self.top_win, self.band_win], dim=1)

    def buckets(self, feature: int) -> list[tuple[str, list[int], list[float]]]:
        """``(name, slot indices, scores)`` per non-empty bucket, each in decreasing score.

        Slot indices point into ``example_slots()[feature]``.
        """
        return self.all_buckets(slice(feature, feature + 1))[0]

    def all_buckets(
        self, features: slice = slice(None)
    ) -> list[list[tuple[str, list[int], list[float]]]]:
        """``buckets(f)`` for every feature in ``features`` (tensors read once, then Python)."""
        cfg = self.config
        top_win, top_score = self.top_win[features].tolist(), self.top_score[features].tolist()
        band_win = self.band_win[features].tolist()
        band_score = self.band_score[features].tolist()
        act_max = self.act_max[features]
        top_band = band_of(act_max.clamp(min=torch.finfo(torch.float32).tiny)).tolist()
        result = []
        for j, amax in enumerate(act_max.tolist()):
            out = []
            top = [i for i in range(cfg.top_k) if top_win[j][i] >= 0]
            if top:
                out.append(("Top activations", top, [top_score[j][i] for i in top]))
            for r in range(cfg.n_bands if amax > 0 else 0):
                sl = range(r * cfg.per_band, (r + 1) * cfg.per_band)
                slots = sorted(
                    (i for i in sl if band_win[j][i] >= 0),
                    key=lambda i, j=j: (-band_score[j][i], band_win[j][i]),
                )
                if slots:
                    lo, hi = 2.0 ** (top_band[j] - r), 2.0 ** (top_band[j] - r + 1)
                    out.append(
                        (
                            f"Activations {lo:.4g} to {hi:.4g} (sample)",
                            [cfg.top_k + i for i in slots],
                            [band_score[j][i] for i in slots],
                        )
                    )
            result.append(out)
        return result

    def _clipped_bins(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Internal bin edges ``[d_t, bins + 1]`` clipped to ``[act_min, act_max]``."""
        nb = self.config.hist_bins
        edges = self.hist_hi[:, None] * torch.linspace(0, 1, nb + 1)[None]
        lo = torch.where(self.fire_count > 0, self.act_min, torch.zeros_like(self.act_min))
        return edges.clamp(min=lo[:, None]).clamp(max=self.act_max[:, None]), lo

    def histogram(self, n_out: int = 40) -> torch.Tensor:
        """Counts ``[d_t, n_out]`` over ``n_out`` equal bins of ``[act_min, act_max]``.

        Each internal bin's count is spread uniformly over its part of ``[act_min, act_max]``,
        so the counts are approximate within an internal bin's width.
        """
        edges, lo = self._clipped_bins()
        a, b = edges[:, :-1, None], edges[:, 1:, None]  # [F, nb, 1]
        span = (self.act_max - lo).clamp(min=1e-30)
        out_edges = lo[:, None] + span[:, None] * torch.linspace(0, 1, n_out + 1)[None]
        oa, ob = out_edges[:, None, :-1], out_edges[:, None, 1:]  # [F, 1, n_out]
        overlap = (torch.minimum(b, ob) - torch.maximum(a, oa)).clamp(min=0)
        width = (b - a).clamp(min=1e-30)
        frac = torch.where(b > a, overlap / width, torch.zeros_like(overlap))
        out = (self.hist[:, :, None].double() * frac.double()).sum(1)
        # A bin clipped to zero width holds values at one point: they go to that point's bin.
        point = a[..., 0]
        j = ((point - lo[:, None]) / span[:, None] * n_out).long().clamp(0, n_out - 1)
        degenerate = self.hist.double() * (b <= a)[..., 0]
        out.scatter_add_(1, j, degenerate)
        return out.float()

    def quantile_values(self, n: int = 100) -> torch.Tensor:
        """The 1st..``n``-th percentiles ``[d_t, n]`` of the non-zero activations (the last is
        ``act_max``), by linear interpolation within the histogram's bins."""
        edges, _ = self._clipped_bins()
        counts = self.hist.double()
        cdf = torch.cat([torch.zeros(self.d_transcoder, 1), counts.cumsum(1)], dim=1)
        total = cdf[:, -1:].clamp(min=1)
        q = torch.arange(1, n + 1, dtype=torch.float64)[None] / n * total
        i = torch.searchsorted(cdf[:, 1:].contiguous(), q.contiguous()).clamp(max=cdf.shape[1] - 2)
        c0, c1 = cdf.gather(1, i), cdf.gather(1, i + 1)
        e0, e1 = edges.double().gather(1, i), edges.double().gather(1, i + 1)
        t = ((q - c0) / (c1 - c0).clamp(min=1e-30)).clamp(0, 1)
        vals = (e0 + t * (e1 - e0)).float()
        vals[:, -1] = self.act_max
        return torch.where(self.fire_count[:, None] > 0, vals, torch.zeros_like(vals))

    # ---- checkpoints ----------------------------------------------------------------------
    _FIELDS = (
        "fire_count",
        "act_min",
        "act_max",
        "hist",
        "hist_hi",
        "top_score",
        "top_win",
        "band_score",
        "band_win",
        "band_abs",
        "top_acts",
        "band_acts",
    )

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).clone() for name in self._FIELDS}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in self._FIELDS:
            want = getattr(self, name)
            got = state[name]
            if got.shape[:2] != want.shape[:2] or (got.dim() != 3 and got.shape != want.shape):
                raise ValueError(
                    f"Checkpointed {name} has shape {list(got.shape)}, expected {list(want.shape)}."
                )
            setattr(self, name, got.clone())
