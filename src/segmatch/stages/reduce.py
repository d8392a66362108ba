"""reduce: project the scaled features on their principal components."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segmatch import kernels
from segmatch.config import ReduceConfig
from segmatch.engines.base import Engine, Matrix
from segmatch.stages.scale import Scaled


@dataclass(frozen=True)
class Reduced:
    """PCA coordinates of every customer, and the components used."""

    matrix: Matrix
    mean: np.ndarray
    components: kernels.Components
    rows_in: int
    rows_out: int


def reduce_dimensions(engine: Engine, *, config: ReduceConfig, scaled: Scaled) -> Reduced:
    """PCA of the scaled features' covariance: a fixed count of components or a share of
    variance; scaling and projection applied in one pass.

    ((x − center) / scale − mean) · axesᵀ = (x − center − scale · mean) · diag(1 / scale) · axesᵀ
    """
    components = kernels.principal_components(
        scaled.covariance,
        components=config.components,
        variance=config.variance_target,
    )
    matrix = engine.affine(
        scaled.unscaled,
        shift=scaled.center + scaled.scale * scaled.mean,
        linear=components.axes.T / scaled.scale[:, None],
    )
    return Reduced(matrix, scaled.mean, components, scaled.rows_out, scaled.rows_out)
