"""scale: put every feature on a comparable scale (standard, or robust to outliers)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segmatch import kernels
from segmatch.config import ScaleConfig
from segmatch.engines.base import Engine, Matrix
from segmatch.stages.features import Features


@dataclass(frozen=True)
class Scaled:
    """The scaled matrix and the centre and scale that produced it."""

    matrix: Matrix
    center: np.ndarray
    scale: np.ndarray
    rows_in: int
    rows_out: int


def column_means(engine: Engine, matrix: Matrix) -> tuple[int, np.ndarray]:
    """Row count and column means, in one pass."""
    totals = engine.reduce_blocks(matrix, kernel=kernels.column_sums_kernel)
    n = int(totals[0])
    return n, totals[1:] / max(n, 1)


def covariance(engine: Engine, matrix: Matrix, mean: np.ndarray, n: int) -> np.ndarray:
    """Sample covariance around a known mean, in one pass."""
    d = len(mean)
    products = engine.reduce_blocks(matrix, kernel=kernels.centered_products_kernel(mean))
    return products.reshape(d, d) / max(n - 1, 1)


def scale_features(engine: Engine, features: Features, config: ScaleConfig) -> Scaled:
    """Standard scaling ((x − mean) / std) or robust scaling ((x − median) / IQR).

    A constant column keeps scale 1, so it maps to zero instead of dividing by zero.
    """
    if config.method == "standard":
        n, center = column_means(engine, features.matrix)
        spread = np.sqrt(np.diag(covariance(engine, features.matrix, center, n)))
    else:
        low, center, high = engine.quantiles(features.matrix, q=[0.25, 0.5, 0.75])
        spread = high - low
    scale = np.where(spread > 1e-12, spread, 1.0)
    matrix = engine.affine(features.matrix, shift=center, linear=np.diag(1.0 / scale))
    return Scaled(matrix, center, scale, features.rows_out, engine.matrix_rows(matrix))
