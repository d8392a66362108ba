"""reduce: project the scaled features on their principal components."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segmatch import kernels
from segmatch.config import ReduceConfig
from segmatch.engines.base import Engine, Matrix
from segmatch.stages.scale import Scaled, moments


@dataclass(frozen=True)
class Reduced:
    """PCA coordinates of every customer, and the components used."""

    matrix: Matrix
    mean: np.ndarray
    components: kernels.Components
    rows_in: int
    rows_out: int


def reduce_dimensions(engine: Engine, *, config: ReduceConfig, scaled: Scaled) -> Reduced:
    """PCA from one covariance pass: a fixed count of components or a share of variance."""
    _, mean, covariance = moments(engine, scaled.matrix)
    components = kernels.principal_components(
        covariance,
        components=config.components,
        variance=config.variance_target,
    )
    matrix = engine.affine(scaled.matrix, shift=mean, linear=components.axes.T)
    return Reduced(matrix, mean, components, scaled.rows_out, scaled.rows_out)
