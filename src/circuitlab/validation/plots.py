"""Faithfulness plots: SVG from a small writer of our own, PNG through matplotlib when installed.

``plot_faithfulness(result, "curves.svg")`` draws three panels against the node threshold:
the target logit and the target probability under necessity (circuit ablated) and sufficiency
(everything else ablated), with the clean and all-ablated runs as dashed lines, and the pruned
circuit's replacement and completeness scores. A ``.png`` path uses matplotlib (optional, not a
dependency of circuitlab).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from circuitlab.atomic import write_atomic
from circuitlab.validation.faithfulness import Faithfulness

from ..plotting import import_pyplot

COLORS = {"necessity": "#d62728", "sufficiency": "#1f77b4", "clean": "#555555",
          "all ablated": "#999999", "replacement": "#2ca02c", "completeness": "#9467bd"}  # fmt: skip
PANEL_W, PANEL_H, MARGIN = 300, 220, 48


@dataclass
class Series:
    """One line: ``ys[i]`` at ``xs[i]`` (``None`` values are skipped); dashed for references."""

    name: str
    xs: list[float]
    ys: list[float | None]
    dashed: bool = False


@dataclass
class Panel:
    """One chart: a title, axis labels and its lines."""

    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)


def faithfulness_panels(result: Faithfulness) -> list[Panel]:
    """The three panels of ``plot_faithfulness`` as data."""
    xs = [p.node_threshold or 0.0 for p in result.points]
    ends = [xs[0], xs[-1]] if xs else [0.0, 1.0]
    panels = []
    for attr, label in (("logit", "target logit"), ("prob", "target probability")):
        panel = Panel(f"{label} ({result.mode})", "node threshold", label)
        for kind in ("necessity", "sufficiency"):
            ys = [getattr(getattr(p, kind), attr) for p in result.points]
            panel.series.append(Series(kind, xs, ys))
        for name, m in (("clean", result.clean), ("all ablated", result.all_ablated)):
            panel.series.append(Series(name, ends, [getattr(m, attr)] * 2, dashed=True))
        panels.append(panel)
    scores = Panel("pruned-circuit scores", "node threshold", "score")
    for kind in ("replacement", "completeness"):
        scores.series.append(Series(kind, xs, [getattr(p, kind) for p in result.points]))
    panels.append(scores)
    return panels


def plot_faithfulness(result: Faithfulness, path: str | Path) -> Path:
    """Write the faithfulness curves to ``path`` (``.svg``, or ``.png`` with matplotlib)."""
    path = Path(path)
    panels = faithfulness_panels(result)
    title = f"{result.slug}: {result.prompt!r} -> {result.target_token!r}"
    if path.suffix.lower() == ".svg":
        write_atomic(path, svg_figure(panels, title).encode())
    elif path.suffix.lower() == ".png":
        _png(panels, title, path)
    else:
        raise ValueError(f"cannot write a plot to {path.name!r}: use a .svg or .png file name")
    return path


def svg_figure(panels: Sequence[Panel], title: str = "") -> str:
    """An SVG document with the panels side by side and one shared legend."""
    width = len(panels) * (PANEL_W + MARGIN) + MARGIN
    height = PANEL_H + 2 * MARGIN + 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{MARGIN}" y="18" font-size="13">{escape(title)}</text>',
    ]
    for i, panel in enumerate(panels):
        parts += _svg_panel(panel, MARGIN + i * (PANEL_W + MARGIN), 40)
    dashed = {s.name: s.dashed for p in panels for s in p.series}
    x = MARGIN
    for name, is_dashed in dashed.items():
        color = COLORS.get(name, "#000000")
        y = height - 14
        dash = ' stroke-dasharray="5,4"' if is_dashed else ""
        parts.append(
            f'<line x1="{x}" y1="{y - 4}" x2="{x + 18}" y2="{y - 4}" stroke="{color}" '
            f'stroke-width="2"{dash}/>'
        )
        parts.append(f'<text x="{x + 22}" y="{y}">{escape(name)}</text>')
        x += 30 + 7 * len(name)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _svg_panel(panel: Panel, left: float, top: float) -> list[str]:
    points = [
        (x, y) for s in panel.series for x, y in zip(s.xs, s.ys, strict=True) if y is not None
    ]
    x0, x1 = _span([x for x, _ in points])
    y0, y1 = _span([y for _, y in points])

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * PANEL_W

    def sy(y: float) -> float:
        return top + PANEL_H - (y - y0) / (y1 - y0) * PANEL_H

    out = [
        f'<rect x="{left}" y="{top}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#333"/>',
        f'<text x="{left}" y="{top - 6}">{escape(panel.title)}</text>',
        f'<text x="{left + PANEL_W / 2}" y="{top + PANEL_H + 30}" text-anchor="middle">'
        f"{escape(panel.xlabel)}</text>",
    ]
    for tick in _ticks(x0, x1):
        out.append(
            f'<text x="{sx(tick):.1f}" y="{top + PANEL_H + 14}" text-anchor="middle">{tick:g}</text>'
        )
    for tick in _ticks(y0, y1):
        out.append(
            f'<line x1="{left}" y1="{sy(tick):.1f}" x2="{left + PANEL_W}" y2="{sy(tick):.1f}" stroke="#eee"/>'
        )
        out.append(f'<text x="{left - 4}" y="{sy(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
    for s in panel.series:
        coords = " ".join(
            f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(s.xs, s.ys, strict=True) if y is not None
        )
        if not coords:
            continue
        dash = ' stroke-dasharray="5,4"' if s.dashed else ""
        color = COLORS.get(s.name, "#000000")
        out.append(
            f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"{dash}/>'
        )
        if not s.dashed:
            for pt in coords.split():
                cx, cy = pt.split(",")
                out.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{color}"/>')
    return out


def _span(values: list[float]) -> tuple[float, float]:
    """A non-empty axis range around ``values`` with 5% padding."""
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values inside ``[lo, hi]``."""
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * step:
            step *= m
            break
    start = math.ceil(lo / step) * step
    ticks = []
    v = start
    while v <= hi + 1e-12:
        ticks.append(round(v, 10))
        v += step
    return ticks


def _png(panels: Sequence[Panel], title: str, path: Path) -> None:
    plt = import_pyplot()
    if plt is None:
        raise ValueError(
            "writing a PNG needs matplotlib (pip install 'circuitlab[plots]'); or write an .svg"
        )
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for s in panel.series:
            pts = [(x, y) for x, y in zip(s.xs, s.ys, strict=True) if y is not None]
            if pts:
                style = "--" if s.dashed else "o-"
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, style, color=COLORS.get(s.name), label=s.name)
        ax.set_title(panel.title, fontsize=9)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=120)
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
