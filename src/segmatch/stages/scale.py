"""scale: put every feature on a comparable scale (standard, or robust to outliers)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from segmatch import kernels
from segmatch.config import ClusterConfig, ScaleConfig
from segmatch.encoding import one_hot_columns
from segmatch.engines.base import Engine, Matrix
from segmatch.engines.expressions import col
from segmatch.engines.types import vector_column
from segmatch.stages.features import Features


@dataclass(frozen=True)
class Scaled:
    """The centre and scale of every feature, and the scaled features' mean and covariance.

    The scaled matrix is never built: its moments follow from the unscaled ones, and the reduce
    stage applies scaling and projection together, in one pass over ``unscaled``.
    """

    unscaled: Matrix
    center: np.ndarray
    scale: np.ndarray
    mean: np.ndarray
    covariance: np.ndarray
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


def _level_scales(features: Features, shares: np.ndarray) -> np.ndarray:
    """The scale of each one-hot level: √p, times the square root of its variable's inertia.

    A level held by a share p of customers, centred on p and divided by √p, is the FAMD coding
    (factor analysis of mixed data); its variable's levels then hold Σ(1 − p) of variance, L − 1
    for L levels. Dividing by the root of that gives every categorical variable the variance of
    one numeric variable, as multiple factor analysis weighs its groups: without it, k-means
    splits on the levels' discrete gaps (on the synthetic base at k = 6, ARI against the latent
    segments 0.87 numeric-only, 0.52 with the channel FAMD-coded, 0.89 weighted).
    """
    roots = np.sqrt(np.clip(shares, 0.0, 1.0))
    variable = np.array([one_hot.column for one_hot in one_hot_columns(features.levels)])
    for column in features.levels:
        inertia = float(np.sum(1.0 - shares[variable == column]))
        roots[variable == column] *= math.sqrt(inertia) if inertia > 1e-12 else 1.0
    return roots


def scale_features(
    engine: Engine,
    *,
    config: ScaleConfig,
    features: Features,
    cluster: ClusterConfig | None = None,
) -> Scaled:
    """Standard scaling ((x − mean) / std) or robust scaling ((x − median) / IQR) of the
    numeric features; the FAMD scaling of the one-hot levels.

    A constant column keeps scale 1, so it maps to zero instead of dividing by zero. When
    every row fits ``cluster.fit_sample_mb`` (the rows k-means then refines on in memory),
    they are held from here on: the moments, the projection and the fit read them there.
    """
    numeric = len(features.numeric)
    width = len(features.names)
    if cluster is not None and features.rows_out * width * 8 <= cluster.fit_sample_mb * 2**20:
        engine.hold_rows(features.matrix)
    _, mean, covariance = moments(engine, features.matrix)
    if config.method == "standard":
        center = mean
        spread = np.sqrt(np.maximum(np.diag(covariance), 0.0))
    else:
        low, median, high = (
            matrix_quantiles(
                engine,
                features.matrix,
                id_column=features.id_column,
                width=width,
                q=q,
            )
            for q in (0.25, 0.5, 0.75)
        )
        spread = high - low
        center = np.concatenate([median[:numeric], mean[numeric:]])
    spread = np.concatenate([spread[:numeric], _level_scales(features, center[numeric:])])
    scale = np.where(spread > 1e-12, spread, 1.0)
    return Scaled(
        unscaled=features.matrix,
        center=center,
        scale=scale,
        mean=(mean - center) / scale,
        covariance=covariance / np.outer(scale, scale),
        rows_in=features.rows_out,
        rows_out=features.rows_out,
    )


def matrix_quantiles(
    engine: Engine, matrix: Matrix, *, id_column: str, width: int, q: float
) -> np.ndarray:
    """The ``q`` quantile of each of a matrix's ``width`` columns."""
    vector = [vector_column(j) for j in range(width)]
    rows_of = engine.matrix_frame(matrix, id_column=id_column, columns={c: col(c) for c in vector})
    found = engine.quantiles(rows_of, columns=vector, q=q).get(None, {})
    return np.array([found[c] if found[c] is not None else np.nan for c in vector])
