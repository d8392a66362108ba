"""The feature matrix as Spark columns, and the passes over it (NumPy kernels in Arrow UDFs)."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np
import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F  # noqa: N812 -- the PySpark convention
from pyspark.sql import types as T  # noqa: N812 -- the PySpark convention

from segmatch import kernels
from segmatch.encoding import one_hot_columns
from segmatch.engines.spark.frames import (
    DISTANCE,
    LABEL,
    RUNNER_UP,
    SparkMatrix,
    matrix_of,
    persist,
    values_of,
)
from segmatch.engines.types import BlockKernel, Combine, SegmentRows


class SparkPasses:
    """Building the matrix from rows, and the passes the stages make over it."""

    def feature_matrix(
        self,
        frame: DataFrame,
        *,
        id_column: str,
        numeric: Sequence[str],
        log: Sequence[str],
        levels: dict[str, Sequence[str]],
        carry: Sequence[str] = (),
    ) -> SparkMatrix:
        expressions: list[Column] = []
        for name in numeric:
            value = F.col(name).cast("double")
            expressions.append(F.signum(value) * F.log1p(F.abs(value)) if name in log else value)
        for one_hot in one_hot_columns(levels):
            text = F.col(one_hot.column).cast("string")
            hit = ~text.isin(list(one_hot.named)) if one_hot.is_other else text == one_hot.level
            expressions.append(F.coalesce(hit, F.lit(False)).cast("double"))
        carried = tuple(dict.fromkeys(c for c in carry if c != id_column))
        selected = frame.select(
            F.col(id_column),
            *(F.col(name).alias(f"c{i}") for i, name in enumerate(carried)),
            *(e.alias(f"x{j}") for j, e in enumerate(expressions)),
        )
        # Not cached: scaling makes one pass over it and the reduce stage's projection another,
        # each a projection over the cleaned rows' cache; caching it cost more than both.
        return SparkMatrix(selected, id_column, len(expressions), carried=carried)

    def matrix_rows(self, matrix: SparkMatrix) -> int:
        return matrix.frame.count()

    def reduce_blocks(
        self, matrix: SparkMatrix, *, kernel: BlockKernel, combine: Combine = np.add
    ) -> np.ndarray:
        width, labelled = matrix.width, matrix.labelled

        def partials(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            # One partial per partition: what reaches the driver grows with the partitions,
            # not with the rows (an Arrow batch holds 10,000 rows).
            total = None
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                labels = batch.column(LABEL).to_numpy() if labelled else None
                part = np.asarray(kernel(values_of(batch, width), labels), dtype=np.float64)
                total = part if total is None else combine(total, part)
            if total is not None:
                yield pa.RecordBatch.from_pydict({"partial": [total.tolist()]})

        columns = [*matrix.value_columns, *([LABEL] if labelled else [])]
        rows = matrix.frame.select(columns).mapInArrow(partials, "partial array<double>").collect()
        return functools.reduce(combine, (np.asarray(r["partial"]) for r in rows))

    def quantiles(self, matrix: SparkMatrix, *, q: Sequence[float]) -> np.ndarray:
        row = matrix.frame.agg(
            *(F.percentile(F.col(c), list(q)).alias(c) for c in matrix.value_columns)
        ).first()
        return np.column_stack([np.asarray(row[c], dtype=np.float64) for c in matrix.value_columns])

    def affine(self, matrix: SparkMatrix, *, shift: np.ndarray, linear: np.ndarray) -> SparkMatrix:
        width, out = matrix.width, linear.shape[1]
        kept = [matrix.id_column, *matrix.carried_columns]

        def apply(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for batch in batches:
                result = (values_of(batch, width) - shift) @ linear
                yield pa.RecordBatch.from_arrays(
                    [
                        *(batch.column(c) for c in kept),
                        *(pa.array(result[:, j]) for j in range(out)),
                    ],
                    names=[*kept, *(f"x{j}" for j in range(out))],
                )

        schema = T.StructType(
            [matrix.frame.schema[c] for c in kept]
            + [T.StructField(f"x{j}", T.DoubleType()) for j in range(out)]
        )
        mapped = matrix.frame.select(*kept, *matrix.value_columns).mapInArrow(apply, schema)
        return replace(matrix, frame=persist(mapped), width=out, labelled=False)

    def sample_rows(self, matrix: SparkMatrix, *, rows: int, seed: int) -> SegmentRows:
        table = self._smallest_hashes(matrix, rows=rows, seed=seed, labelled=True)
        return SegmentRows(
            table.column(matrix.id_column),
            table.column(LABEL).to_numpy(),
            matrix_of(table, matrix.value_columns),
        )

    def sample_values(self, matrix: SparkMatrix, *, rows: int, seed: int) -> np.ndarray:
        table = self._smallest_hashes(matrix, rows=rows, seed=seed, labelled=False)
        return matrix_of(table, matrix.value_columns)

    def _smallest_hashes(
        self, matrix: SparkMatrix, *, rows: int, seed: int, labelled: bool
    ) -> pa.Table:
        """The rows whose ids have the ``rows`` smallest seeded hashes, in hash order: the
        local engine's sample, the same customers in the same order."""
        total = matrix.frame.count()
        # Ids whose hash falls under the share ``rows / total`` of the hash range (with slack)
        # leave the executors; the ``rows`` smallest are kept on the driver.
        share = min(1.0, rows / max(total, 1) * 1.1 + 1000 / max(total, 1))
        cutoff = None if share >= 1.0 else np.uint64(share * float(2**64 - 1))
        id_column = matrix.id_column
        columns = [id_column, *matrix.value_columns, *([LABEL] if labelled else [])]

        def hashed(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for batch in batches:
                hashes = kernels.id_hashes(batch.column(id_column), seed)
                keep = np.ones(len(hashes), bool) if cutoff is None else hashes <= cutoff
                chosen = pa.array(np.flatnonzero(keep))
                yield pa.RecordBatch.from_arrays(
                    [
                        pa.array(hashes[keep].view(np.int64)),
                        *batch.select(columns).take(chosen).columns,
                    ],
                    names=["__hash", *columns],
                )

        selected = matrix.frame.select(*columns)
        schema = T.StructType([T.StructField("__hash", T.LongType()), *selected.schema.fields])
        table = selected.mapInArrow(hashed, schema).toArrow()
        hashes = table.column("__hash").to_numpy().view(np.uint64)
        return table.take(pa.array(np.argsort(hashes, kind="stable")[:rows]))

    def stratified_sample(
        self, matrix: SparkMatrix, *, rows: int, seed: int
    ) -> tuple[np.ndarray, np.ndarray]:
        counts = {r[LABEL]: r["count"] for r in matrix.frame.groupBy(LABEL).count().collect()}
        total = sum(counts.values())
        picked = matrix.frame
        if rows < total:
            fractions = {
                label: min(1.0, max(2, round(rows * n / total)) / n) for label, n in counts.items()
            }
            picked = matrix.frame.sampleBy(LABEL, fractions, seed)
        table = picked.select(*matrix.value_columns, LABEL).toArrow()
        return matrix_of(table, matrix.value_columns), table.column(LABEL).to_numpy()

    def refine_centroids(
        self, matrix: SparkMatrix, *, centroids: np.ndarray, max_iter: int, shift_tolerance: float
    ) -> np.ndarray:
        """Lloyd's iterations, one pass each over the executors with the shared kernels."""
        k, d = centroids.shape
        for _ in range(max_iter):
            current = centroids
            step = kernels.nearest_then(current, kernels.cluster_sums_kernel(k))
            sums = kernels.ClusterSums.from_flat(self.reduce_blocks(matrix, kernel=step), k, d)
            centroids = np.where(
                sums.counts[:, None] > 0,
                sums.sums / np.maximum(sums.counts, 1)[:, None],
                current,
            )
            if np.sum((centroids - current) ** 2) <= shift_tolerance:
                break
        return centroids

    def assign(self, matrix: SparkMatrix, *, centroids: np.ndarray) -> SparkMatrix:
        width = matrix.width
        kept = [matrix.id_column, *matrix.carried_columns, *matrix.value_columns]

        def nearest(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for batch in batches:
                labels, distances, runner_up = kernels.nearest_centroids(
                    values_of(batch, width), centroids
                )
                yield pa.RecordBatch.from_arrays(
                    [
                        *(batch.column(c) for c in kept),
                        pa.array(labels.astype(np.int32)),
                        pa.array(distances),
                        pa.array(runner_up),
                    ],
                    names=[*kept, LABEL, DISTANCE, RUNNER_UP],
                )

        base = matrix.frame.select(*kept)
        schema = T.StructType(
            [
                *base.schema.fields,
                T.StructField(LABEL, T.IntegerType()),
                T.StructField(DISTANCE, T.DoubleType()),
                T.StructField(RUNNER_UP, T.DoubleType()),
            ]
        )
        return replace(matrix, frame=persist(base.mapInArrow(nearest, schema)), labelled=True)

    def relabel(self, matrix: SparkMatrix, *, ids: np.ndarray) -> SparkMatrix:
        mapping = F.create_map(*[F.lit(v) for i, new in enumerate(ids) for v in (i, int(new))])
        relabelled = matrix.frame.withColumn(LABEL, mapping[F.col(LABEL)].cast("int"))
        return replace(matrix, frame=persist(relabelled))
