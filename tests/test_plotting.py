"""Without matplotlib every PNG writer refuses with its own advice, before drawing anything."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from circuitlab.plotting import import_pyplot
from circuitlab.transcoders.eval_plot import MISSING, require_matplotlib
from circuitlab.validation.plots import _png as faithfulness_png


@pytest.fixture
def no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import raises ImportError


def test_pyplot_is_none_without_matplotlib(no_matplotlib: None) -> None:
    assert import_pyplot() is None


def test_png_writers_name_the_extra_and_the_alternative(
    no_matplotlib: None, tmp_path: Path
) -> None:
    with pytest.raises(ImportError, match="drop --plot") as e:
        require_matplotlib()
    assert str(e.value) == MISSING
    with pytest.raises(ValueError, match=r"circuitlab\[plots\].*\.svg"):
        faithfulness_png([], "", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_pyplot_uses_the_file_backend() -> None:
    pytest.importorskip("matplotlib")
    plt = import_pyplot()
    assert plt is not None and plt.get_backend().lower() == "agg"
