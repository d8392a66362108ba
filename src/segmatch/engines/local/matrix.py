"""The feature matrix in NumPy, and every pass over it, in blocks sized from its width."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from segmatch import kernels
from segmatch.encoding import one_hot_columns
from segmatch.engines.types import BlockKernel, Combine, SampledRows

BLOCK_BYTES = 32 * 2**20


@dataclass(frozen=True)
class LocalMatrix:
    """Feature vectors aligned row for row with ``ids``; labels once assigned."""

    ids: pl.Series
    values: np.ndarray
    labels: np.ndarray | None = None
    distances: np.ndarray | None = None
    runner_up: np.ndarray | None = None


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
        total: np.ndarray | None = None
        for block in self._blocks(matrix.values.shape):
            labels = None if matrix.labels is None else matrix.labels[block]
            part = kernel(matrix.values[block], labels)
            total = part if total is None else combine(total, part)
        assert total is not None
        return total

    def affine(self, matrix: LocalMatrix, *, shift: np.ndarray, linear: np.ndarray) -> LocalMatrix:
        out = np.empty((matrix.values.shape[0], linear.shape[1]), dtype=np.float64)
        for block in self._blocks(matrix.values.shape):
            np.matmul(matrix.values[block] - shift, linear, out=out[block])
        return LocalMatrix(ids=matrix.ids, values=out)

    def sample_rows(
        self,
        matrix: LocalMatrix,
        *,
        rows: int | Mapping[int, int],
        seed: int,
        sizes: int | Mapping[int, int] | None = None,
    ) -> SampledRows:
        hashes = kernels.id_hashes(matrix.ids.to_arrow(), seed)
        if isinstance(rows, int):
            chosen = _smallest(hashes, np.arange(len(hashes)), rows)
        else:
            labels = labels_of(matrix)
            picked = [
                _smallest(hashes, np.flatnonzero(labels == label), count)
                for label, count in rows.items()
            ]
            members = np.concatenate(picked) if picked else np.empty(0, dtype=np.int64)
            chosen = members[np.argsort(hashes[members], kind="stable")]
        return SampledRows(
            matrix.ids.to_arrow().take(chosen),
            matrix.values[chosen],
            None if matrix.labels is None else matrix.labels[chosen],
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
        n = matrix.values.shape[0]
        labels = np.empty(n, dtype=np.int32)
        distances = np.empty(n, dtype=np.float64)
        runner_up = np.empty(n, dtype=np.float64)
        for block in self._blocks((n, matrix.values.shape[1] + len(centroids))):
            labels[block], distances[block], runner_up[block] = kernels.nearest_centroids(
                matrix.values[block], centroids
            )
        return replace(matrix, labels=labels, distances=distances, runner_up=runner_up)

    def relabel(self, matrix: LocalMatrix, *, ids: np.ndarray) -> LocalMatrix:
        return replace(matrix, labels=ids[labels_of(matrix)])

    def _blocks(self, shape: tuple[int, int]) -> list[slice]:
        rows, width = shape
        per_block = max(1024, BLOCK_BYTES // (8 * max(width, 1)))
        return [slice(start, min(start + per_block, rows)) for start in range(0, rows, per_block)]


def _smallest(hashes: np.ndarray, positions: np.ndarray, count: int) -> np.ndarray:
    """Of ``positions``, the ``count`` with the smallest hashes, in hash order."""
    among = hashes[positions]
    if count < len(positions):
        chosen = np.argpartition(among, count - 1)[:count]
        return positions[chosen[np.argsort(among[chosen], kind="stable")]]
    return positions[np.argsort(among, kind="stable")]


def labels_of(matrix: LocalMatrix) -> np.ndarray:
    if matrix.labels is None:
        raise ValueError("the matrix has no segment labels yet; assign centroids first")
    return matrix.labels
