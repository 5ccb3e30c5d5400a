"""Lazy row sources return the right rows and read only those rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from circuitlab.transcoders import rows as rows_module
from circuitlab.transcoders.rows import SafetensorsRows, TensorRows


@pytest.fixture
def matrix_file(tmp_path: Path) -> tuple[Path, torch.Tensor]:
    w = torch.arange(10 * 4 * 3, dtype=torch.float32).reshape(10, 4, 3)
    path = tmp_path / "w.safetensors"
    save_file({"W": w, "M": w[:, 0].contiguous()}, str(path))
    return path, w


def test_rows_of_unsorted_duplicated_indices_match_eager(
    matrix_file: tuple[Path, torch.Tensor],
) -> None:
    path, w = matrix_file
    lazy = SafetensorsRows(path, "W", dtype=torch.float64)
    idx = torch.tensor([7, 2, 7, 0, 9, 3, 2])
    assert lazy.shape == (10, 4, 3)
    torch.testing.assert_close(lazy.rows(idx), w[idx].double())
    torch.testing.assert_close(lazy.rows(idx), TensorRows(w).rows(idx).double())
    torch.testing.assert_close(lazy.full(), w.double())


def test_transposed_rows_are_columns_of_the_file(matrix_file: tuple[Path, torch.Tensor]) -> None:
    path, w = matrix_file
    m = w[:, 0]  # [10, 3] on disk -> rows of [3, 10]
    lazy = SafetensorsRows(path, "M", dtype=torch.float32, transpose=True)
    assert lazy.shape == (3, 10)
    torch.testing.assert_close(lazy.rows(torch.tensor([2, 0, 2])), m.T[[2, 0, 2]])
    torch.testing.assert_close(lazy.full(), m.T)


def test_empty_index_gives_empty_rows(matrix_file: tuple[Path, torch.Tensor]) -> None:
    path, _ = matrix_file
    out = SafetensorsRows(path, "W", dtype=torch.float32).rows(torch.tensor([], dtype=torch.long))
    assert out.shape == (0, 4, 3)


def test_lazy_rows_read_only_runs_of_requested_rows(
    matrix_file: tuple[Path, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = matrix_file
    reads: list[Any] = []
    real_open = rows_module.safe_open

    class SpySlice:
        def __init__(self, inner: Any):
            self.inner = inner

        def get_shape(self) -> Any:
            return self.inner.get_shape()

        def __getitem__(self, key: Any) -> Any:
            reads.append(key)
            return self.inner[key]

    class SpyHandle:
        def __init__(self, *args: Any, **kwargs: Any):
            self.cm = real_open(*args, **kwargs)

        def __enter__(self) -> SpyHandle:
            self.f = self.cm.__enter__()
            return self

        def __exit__(self, *exc: Any) -> None:
            self.cm.__exit__(*exc)

        def get_slice(self, key: str) -> SpySlice:
            return SpySlice(self.f.get_slice(key))

    monkeypatch.setattr(rows_module, "safe_open", SpyHandle)
    lazy = SafetensorsRows(path, "W", dtype=torch.float32)
    lazy.rows(torch.tensor([8, 2, 3, 8, 2]))
    assert reads == [slice(2, 4), slice(8, 9)]
