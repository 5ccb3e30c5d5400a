"""A figure of a reduced circuit: supernodes by layer (up) and position (right), the prompt's
tokens below, the logits above, the strongest reduced edges between them (blue positive, red
negative, width by |weight|). Error nodes are left out of the picture (not of the circuit).

``.svg`` is written with no dependency; ``.png`` needs matplotlib (``circuitlab[plots]``).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from circuitlab.atomic import write_atomic

from ..plotting import import_pyplot

if TYPE_CHECKING:
    from circuitlab.circuits.circuit import Circuit

MAX_EDGES = 60
_W, _H, _MARGIN = 1000.0, 640.0, 70.0


@dataclass(frozen=True)
class _Node:
    group: int
    text: str
    x: float  # position, in tokens
    y: float  # layer; -1 tokens, n_layers logits


def _layout(circuit: Circuit) -> tuple[list[_Node], list[tuple[int, int, float]]]:
    g = circuit.graph
    k = circuit.n_groups
    nodes = []
    for j, sn in enumerate(circuit.supernodes):
        layer = (sn.layer_span[0] + sn.layer_span[1]) / 2
        pos = sum(sn.positions) / len(sn.positions)
        nodes.append(_Node(j, _short(sn.label), pos, layer))
    tokens = circuit._tokens
    token_start = k + g.n_errors
    for p in range(g.n_pos):
        nodes.append(_Node(token_start + p, tokens[p].strip() or tokens[p], p, -1))
    for i, t in enumerate(g.logit_targets):
        x = g.n_pos - 1 + 0.5 * i
        nodes.append(_Node(circuit.logit_group(i), f"{t.token_str} (logit)", x, g.n_layers))
    shown = {n.group for n in nodes}
    r = circuit.reduced_edges
    edges = [
        (int(s), int(t), float(r[t, s]))
        for t, s in r.nonzero().tolist()
        if s in shown and t in shown and s != t
    ]
    edges = sorted(edges, key=lambda e: -abs(e[2]))[:MAX_EDGES]
    used = {s for s, _, _ in edges} | {t for _, t, _ in edges} | set(range(k))
    used |= {circuit.logit_group(i) for i in range(g.n_logits)}
    return [n for n in nodes if n.group in used], edges


def _short(label: str, n: int = 38) -> str:
    label = label.removeprefix("auto: ").split(" (", 1)[0]  # where it sits is drawn already
    return label if len(label) <= n else label[: n - 1] + "…"


def write_circuit_figure(circuit: Circuit, path: str | Path) -> Path:
    """Write the figure to ``path`` (``.svg`` or ``.png``), atomically; returns the path."""
    path = Path(path)
    nodes, edges = _layout(circuit)
    if path.suffix.lower() == ".png":
        _png(circuit, nodes, edges, path)
    elif path.suffix.lower() == ".svg":
        write_atomic(path, _svg(circuit, nodes, edges).encode())
    else:
        raise ValueError(f"figure {path}: give a .svg or .png file name")
    return path


def _xy(circuit: Circuit, node: _Node) -> tuple[float, float]:
    g = circuit.graph
    sx = (_W - 2 * _MARGIN) / max(g.n_pos, 1)
    sy = (_H - 2 * _MARGIN) / (g.n_layers + 1)
    return _MARGIN + (node.x + 0.5) * sx, _H - _MARGIN - (node.y + 1) * sy


def _svg(circuit: Circuit, nodes: list[_Node], edges: list[tuple[int, int, float]]) -> str:
    at = {n.group: _xy(circuit, n) for n in nodes}
    top = max((abs(w) for _, _, w in edges), default=1.0) or 1.0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W:.0f}" height="{_H:.0f}" '
        'font-family="sans-serif" font-size="10">',
        f'<rect width="{_W:.0f}" height="{_H:.0f}" fill="white"/>',
        f'<text x="{_MARGIN}" y="24" font-size="13">{html.escape(circuit.graph.input_string)}'
        "</text>",
    ]
    for s, t, w in edges:
        (x1, y1), (x2, y2) = at[s], at[t]
        color = "#2b6cb0" if w > 0 else "#c53030"
        width = 0.5 + 5 * abs(w) / top
        out.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{color}" '
            f'stroke-width="{width:.2f}" stroke-opacity="0.6"/>'
        )
    for n in nodes:
        x, y = at[n.group]
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="#444"/>')
        out.append(
            f'<text x="{x:.1f}" y="{y - 9:.1f}" text-anchor="middle">{html.escape(n.text)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _png(
    circuit: Circuit, nodes: list[_Node], edges: list[tuple[int, int, float]], path: Path
) -> None:
    plt = import_pyplot()
    if plt is None:
        raise ValueError(
            "writing a PNG needs matplotlib (pip install 'circuitlab[plots]'); or write an .svg"
        )
    at = {n.group: _xy(circuit, n) for n in nodes}
    top = max((abs(w) for _, _, w in edges), default=1.0) or 1.0
    fig, ax = plt.subplots(figsize=(_W / 100, _H / 100))
    for s, t, w in edges:
        (x1, y1), (x2, y2) = at[s], at[t]
        color = "#2b6cb0" if w > 0 else "#c53030"
        ax.plot([x1, x2], [y1, y2], color=color, alpha=0.6, lw=0.5 + 5 * abs(w) / top)
    for n in nodes:
        x, y = at[n.group]
        ax.plot([x], [y], "o", color="#444")
        ax.text(x, y - 9, n.text, ha="center", va="bottom", fontsize=7)
    ax.set_xlim(0, _W)
    ax.set_ylim(_H, 0)
    ax.axis("off")
    ax.set_title(circuit.graph.input_string, fontsize=9)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=100)
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
