"""The feature matrix in NumPy, and every pass over it, in blocks sized from its width."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import polars as pl

from segmatch import kernels
from segmatch.encoding import one_hot_columns
from segmatch.engines.types import BlockKernel, Combine, SampledRows

#: The matrix's bytes in one block of a pass. Small enough that a block and the kernels' few
#: temporaries of its size stay in the processor's cache, and that a pass has blocks for every
#: core: at 1M × 5 rows the exact silhouette took 0.26 s in 838,860-row blocks (32 MiB) and
#: 0.065 s in 65,536-row ones, on one thread.
BLOCK_BYTES = 2 * 2**20


@dataclass(frozen=True)
class LocalMatrix:
    """Feature vectors aligned row for row with ``ids``; labels once assigned."""

    ids: pl.Series
    values: np.ndarray
    labels: np.ndarray | None = None
    distances: np.ndarray | None = None
    runner_up: np.ndarray | None = None
    #: The ids' seeded hashes by seed, shared by the matrices made from this one (its
    #: assignment, its relabelling): a run samples the same ids three times with one seed.
    id_hashes: dict[int, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    def hashes(self, seed: int) -> np.ndarray:
        if seed not in self.id_hashes:
            self.id_hashes[seed] = kernels.id_hashes(self.ids.to_arrow(), seed)
        return self.id_hashes[seed]


class NumpyPasses:
    """Building the matrix from rows, and the passes the stages make over it."""

    def feature_matrix(
        self,
        frame: pl.DataFrame,
        *,
        id_column: str,
        numeric: Sequence[str],
        log: Sequence[str],
        levels: Mapping[str, Sequence[str]],
        carry: Sequence[str] = (),
        labels: str | None = None,
    ) -> LocalMatrix:
        del carry  # the matrix keeps the frame's row order: results line up without carrying
        width = len(numeric) + sum(len(v) for v in levels.values())
        values = np.empty((frame.height, width), dtype=np.float64)
        for j, name in enumerate(numeric):
            column = frame.get_column(name).cast(pl.Float64).to_numpy()
            values[:, j] = kernels.signed_log1p(column) if name in log else column
        for j, one_hot in enumerate(one_hot_columns(levels), start=len(numeric)):
            text = frame.get_column(one_hot.column).cast(pl.String)
            hit = ~text.is_in(one_hot.named) if one_hot.is_other else text == one_hot.level
            values[:, j] = hit.fill_null(False).to_numpy()
        return LocalMatrix(
            ids=frame.get_column(id_column),
            values=values,
            labels=None if labels is None else frame.get_column(labels).cast(pl.Int32).to_numpy(),
        )

    def reduce_blocks(
        self, matrix: LocalMatrix, *, kernel: BlockKernel, combine: Combine = np.add
    ) -> np.ndarray:
        return kernels.reduce_in_blocks(
            matrix.values,
            matrix.labels,
            kernel=kernel,
            combine=combine,
            block_rows=_block_rows(matrix.values.shape[1]),
        )

    def affine(self, matrix: LocalMatrix, *, shift: np.ndarray, linear: np.ndarray) -> LocalMatrix:
        out = kernels.affine_in_blocks(
            matrix.values,
            shift=shift,
            linear=linear,
            block_rows=_block_rows(max(matrix.values.shape[1], linear.shape[1])),
        )
        return LocalMatrix(ids=matrix.ids, values=out, id_hashes=matrix.id_hashes)

    def sample_rows(
        self,
        matrix: LocalMatrix,
        *,
        rows: int | Mapping[int, int],
        seed: int,
        sizes: int | Mapping[int, int] | None = None,
    ) -> SampledRows:
        chosen = kernels.hash_sample(
            matrix.hashes(seed), rows, None if isinstance(rows, int) else labels_of(matrix)
        )
        return SampledRows(
            matrix.values[chosen],
            None if matrix.labels is None else matrix.labels[chosen],
            drawn_from=matrix.ids.to_arrow(),
            positions=chosen,
        )

    def refine_centroids(
        self, matrix: LocalMatrix, *, centroids: np.ndarray, max_iter: int, shift_tolerance: float
    ) -> np.ndarray:
        return kernels.kmeans(
            matrix.values,
            k=len(centroids),
            seed=0,
            max_iter=max_iter,
            n_init=1,
            shift_tolerance=shift_tolerance,
            init=centroids,
        )

    def assign(self, matrix: LocalMatrix, *, centroids: np.ndarray) -> LocalMatrix:
        labels, distances, runner_up = kernels.nearest_in_blocks(
            matrix.values,
            centroids,
            block_rows=_block_rows(matrix.values.shape[1] + len(centroids)),
        )
        return replace(matrix, labels=labels, distances=distances, runner_up=runner_up)

    def relabel(self, matrix: LocalMatrix, *, ids: np.ndarray) -> LocalMatrix:
        return replace(matrix, labels=ids[labels_of(matrix)])


def _block_rows(width: int) -> int:
    """Rows of a block of a pass over a matrix ``width`` values wide."""
    return max(1024, BLOCK_BYTES // (8 * max(width, 1)))


def labels_of(matrix: LocalMatrix) -> np.ndarray:
    if matrix.labels is None:
        raise ValueError("the matrix has no segment labels yet; assign centroids first")
    return matrix.labels
