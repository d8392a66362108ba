"""The embedded engine: Polars for rows, NumPy for matrices (k-means and the rest: kernels).

Everything runs in this process. Passes over the matrix go in blocks whose size follows the
matrix's width, so memory stays flat whatever the number of customers.
"""

from __future__ import annotations

import polars as pl

from segmatch.engines.base import Engine
from segmatch.engines.local.io import PolarsStorage
from segmatch.engines.local.matrix import LocalMatrix, NumpyPasses
from segmatch.engines.local.results import PolarsResults
from segmatch.engines.local.rows import PolarsCleaning

__all__ = ["LocalEngine", "LocalMatrix"]


class LocalEngine(
    PolarsStorage, PolarsCleaning, NumpyPasses, PolarsResults, Engine[pl.DataFrame, LocalMatrix]
):
    """Polars and NumPy in one process."""

    name = "local"
    frame_types = (pl.DataFrame,)
    matrix_types = (LocalMatrix,)
