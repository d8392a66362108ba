"""scale: put every feature on a comparable scale (standard, or robust to outliers)."""

from __future__ import annotations

import math
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


#: Below this ratio of a column's variance to its squared mean, Σxxᵀ/n − μμᵀ has lost too
#: many of float64's digits, and the covariance is recomputed around the mean.
CANCELLATION_RATIO = 1e-6


def moments(engine: Engine, matrix: Matrix) -> tuple[int, np.ndarray, np.ndarray]:
    """Row count, column means and sample covariance.

    One pass gives Σx and Σxxᵀ; when a column's spread is tiny beside its mean (where the
    difference Σxxᵀ/n − μμᵀ cancels digits), a second pass recomputes it around the mean.
    """
    totals = engine.reduce_blocks(matrix, kernel=kernels.raw_moments_kernel)
    n = int(totals[0])
    d = math.isqrt(len(totals) - 1)  # the kernel gives 1 + d + d² figures
    mean = totals[1 : 1 + d] / max(n, 1)
    products = totals[1 + d :].reshape(d, d)
    centered = products - n * np.outer(mean, mean)
    variances = np.diag(centered) / max(n, 1)
    if np.any(variances < CANCELLATION_RATIO * mean**2):
        centered = engine.reduce_blocks(
            matrix, kernel=kernels.centered_products_kernel(mean)
        ).reshape(d, d)
    return n, mean, centered / max(n - 1, 1)


def scale_features(engine: Engine, *, config: ScaleConfig, features: Features) -> Scaled:
    """Standard scaling ((x − mean) / std) or robust scaling ((x − median) / IQR).

    A constant column keeps scale 1, so it maps to zero instead of dividing by zero.
    """
    if config.method == "standard":
        _, center, covariance = moments(engine, features.matrix)
        spread = np.sqrt(np.maximum(np.diag(covariance), 0.0))
    else:
        low, center, high = engine.quantiles(features.matrix, q=[0.25, 0.5, 0.75])
        spread = high - low
    scale = np.where(spread > 1e-12, spread, 1.0)
    matrix = engine.affine(features.matrix, shift=center, linear=np.diag(1.0 / scale))
    return Scaled(matrix, center, scale, features.rows_out, features.rows_out)
