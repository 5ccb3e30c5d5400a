"""A PNG of a ``TranscoderEval``: FVU, loss recovered, L0 and dead fraction per layer.

matplotlib is an optional extra (``pip install 'circuitlab[plots]'``); ``require_matplotlib``
lets a command refuse early, before any model runs.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from ..atomic import atomic_path
from ..plotting import import_pyplot
from .evaluation import TranscoderEval

MISSING = "writing a PNG plot needs matplotlib: pip install 'circuitlab[plots]' (or drop --plot)"


def require_matplotlib() -> ModuleType:
    """``matplotlib.pyplot`` with the Agg backend; ImportError naming the extra if missing."""
    plt = import_pyplot()
    if plt is None:
        raise ImportError(MISSING)
    return plt


def plot_eval(ev: TranscoderEval, path: str | Path, *, title: str = "") -> Path:
    """Writes four panels (one bar per layer) to ``path`` (PNG) and returns the path."""
    plt = require_matplotlib()
    layers = list(range(ev.n_layers))
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5))
    panels = [
        (axes[0][0], ev.fvu, "FVU (lower is better; 1 = predicting the mean)", 1.0),
        (axes[0][1], ev.loss_recovered, "loss recovered (1 = clean model)", 1.0),
        (axes[1][0], ev.l0, "L0 (active features per token)", None),
        (axes[1][1], [100 * f for f in ev.dead_fraction], "dead features (%)", None),
    ]
    for ax, values, name, ref in panels:
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("layer")
        if values is None:
            ax.text(0.5, 0.5, "not computed", ha="center", va="center", transform=ax.transAxes)
            continue
        ax.bar(layers, values, color="#4c72b0")
        ax.set_xticks(layers if len(layers) <= 16 else layers[:: -(-len(layers) // 16)])
        finite = [v for v in values if v == v] or [0.0]  # NaN: a 0/0 loss recovered
        top = max(finite) * 1.1 if max(finite) > 0 else 1.0
        if ref is not None and max(finite) >= 0.5 * ref:
            ax.axhline(ref, color="gray", lw=0.8, ls="--")
            top = max(top, 1.05 * ref)
        ax.set_ylim(bottom=min(0.0, 1.1 * min(finite)), top=top)
    if ev.loss_recovered_all is not None:
        axes[0][1].axhline(
            ev.loss_recovered_all, color="#dd8452", lw=1.2, label="all layers replaced"
        )
        axes[0][1].legend(fontsize=8, loc="lower right")
    fig.suptitle(title or f"transcoders on {ev.n_tokens} held-out tokens", fontsize=11)
    fig.tight_layout()
    out = Path(path)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return out
