"""The feature matrix as Spark columns, and the passes over it (NumPy kernels in Arrow UDFs;
the assignment in column expressions), or over its rows held on the driver."""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F  # noqa: N812 -- the PySpark convention
from pyspark.sql import types as T  # noqa: N812 -- the PySpark convention

from segmatch import kernels
from segmatch.encoding import one_hot_columns
from segmatch.engines.expressions import Expr
from segmatch.engines.spark.frames import (
    DISTANCE,
    LABEL,
    RUNNER_UP,
    SparkMatrix,
    matrix_of,
    persist,
    values_of,
)
from segmatch.engines.types import (
    LEVEL,
    SEGMENT,
    BlockKernel,
    ColumnSummary,
    Combine,
    SampledRows,
    vector_column,
)


@dataclass(frozen=True)
class HeldRows:
    """Every row of a matrix on the driver, in the order they arrived: ids, values, and once
    assigned, each row's label and distance to its centroid."""

    ids: pa.Array | pa.ChunkedArray
    values: np.ndarray
    labels: np.ndarray | None = None
    distances: np.ndarray | None = None
    #: The ids' seeded hashes by seed, shared with the rows made from these (their
    #: assignment, their relabelling), as the local engine's matrix shares them.
    id_hashes: dict[int, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    #: For rows an affine map gave: its source matrix, shift and linear part, which the one
    #: Spark pass over them applies itself (see :meth:`SparkPasses.assign`).
    mapped_from: tuple[SparkMatrix, np.ndarray, np.ndarray] | None = None
    #: The customer columns the matrix carries, under their own names, when they were held
    #: with it: what the segment profiles read (see :meth:`SparkPasses.rows_on_driver`).
    customers: pa.Table | None = field(default=None, compare=False, repr=False)

    def hashes(self, seed: int) -> np.ndarray:
        if seed not in self.id_hashes:
            self.id_hashes[seed] = kernels.id_hashes(self.ids, seed)
        return self.id_hashes[seed]

    @property
    def segments(self) -> np.ndarray:
        if self.labels is None:
            raise ValueError("the matrix has no segment labels yet; assign centroids first")
        return self.labels


class SparkPasses:
    """Building the matrix from rows, and the passes the stages make over it."""

    #: Matrices whose every row is on the driver, by their frame (see :meth:`_held_rows`).
    _held: dict[int, tuple[DataFrame, HeldRows]]
    #: Frames shaped from held rows, and those rows as a table (see :meth:`rows_on_driver`).
    _on_driver: dict[int, tuple[DataFrame, pa.Table]]

    def feature_matrix(
        self,
        frame: DataFrame,
        *,
        id_column: str,
        numeric: Sequence[str],
        log: Sequence[str],
        levels: Mapping[str, Sequence[str]],
        carry: Sequence[str] = (),
        labels: str | None = None,
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
            *([F.col(labels).cast("int").alias(LABEL)] if labels is not None else []),
        )
        # Not cached: scaling makes one pass over it and the reduce stage's projection another,
        # each a projection over the cleaned rows' cache; caching it cost more than both.
        return SparkMatrix(
            selected, id_column, len(expressions), labelled=labels is not None, carried=carried
        )

    def _held_rows(self, matrix: SparkMatrix) -> HeldRows | None:
        """Every row of ``matrix``, when a sample already brought them all to the driver (the
        cluster stage's fit sample up to ``cluster.fit_sample_mb``): passes over them then
        run there, with the same kernels, instead of as Spark jobs."""
        held = self._held.get(id(matrix.frame))
        return held[1] if held is not None and held[0] is matrix.frame else None

    def _hold(self, matrix: SparkMatrix, rows: HeldRows) -> None:
        self._held[id(matrix.frame)] = (matrix.frame, rows)

    def rows_on_driver(self, frame: DataFrame) -> pa.Table | None:
        """Every row of ``frame`` as a table on the driver, when ``frame`` was shaped from rows
        held there with every column it has (see :meth:`note_rows_on_driver`): summaries of it
        then run there instead of as Spark jobs over rows computed again."""
        found = self._on_driver.get(id(frame))
        return found[1] if found is not None and found[0] is frame else None

    def note_rows_on_driver(
        self, frame: DataFrame, matrix: SparkMatrix, *, id_column: str, columns: Mapping[str, Expr]
    ) -> None:
        """Remember ``frame``, shaped from ``matrix`` by ``matrix_frame``, as a table of its
        held rows when every column of it is there: the id, ``columns`` that name a segment,
        a distance or a vector column, and the customer columns the rows were held with."""
        held = self._held_rows(matrix)
        if held is None or held.customers is None or held.labels is None:
            return
        own: dict[str, pa.Array | pa.ChunkedArray | np.ndarray] = {
            SEGMENT: held.labels,
            **({DISTANCE: held.distances} if held.distances is not None else {}),
            **{vector_column(j): held.values[:, j] for j in range(matrix.width)},
        }
        found: dict[str, pa.Array | pa.ChunkedArray | np.ndarray] = {id_column: held.ids}
        for name in frame.columns:
            expr = columns.get(name)
            if expr is not None:
                if expr.op != "col" or expr.args[0] not in own:
                    return
                found[name] = own[expr.args[0]]
            elif name != id_column:
                if name not in held.customers.column_names:
                    return
                found[name] = held.customers.column(name)
        self._on_driver[id(frame)] = (frame, pa.table(found))

    def held_distance_quantiles(self, matrix: SparkMatrix, *, q: float) -> dict[int, float] | None:
        """Per segment, the ``q`` quantile of the distances, from rows held on the driver (None
        when they are not held)."""
        held = self._held_rows(matrix)
        if held is None or held.distances is None:
            return None
        labels = held.segments
        return {
            int(segment): float(np.quantile(held.distances[labels == segment], q))
            for segment in np.unique(labels)
        }

    def reduce_blocks(
        self, matrix: SparkMatrix, *, kernel: BlockKernel, combine: Combine = np.add
    ) -> np.ndarray:
        held = self._held_rows(matrix)
        if held is not None:
            return _reduce_held(held, kernel=kernel, combine=combine)
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

    def hold_rows(self, matrix: SparkMatrix) -> None:
        if self._held_rows(matrix) is not None:
            return
        columns = [*matrix.value_columns, *([LABEL] if matrix.labelled else [])]
        carried = matrix.carried_columns
        table = matrix.frame.select(matrix.id_column, *columns, *carried).toArrow()
        # The carried columns come in the same pass: the segment profiles read them at the
        # end of the run, where Spark would compute every row's assignment for them.
        customers = table.select(carried).rename_columns(list(matrix.carried))
        self._hold(matrix, replace(_held_from(table, matrix), customers=customers))

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
        held = self._held_rows(matrix)
        if held is None:
            return replace(matrix, frame=persist(mapped), width=out, labelled=False)
        # Its rows held too, mapped on the driver: the one pass over them left on Spark (the
        # assignment, which holds its own output) maps them itself rather than hold them twice.
        values = kernels.affine_in_blocks(
            held.values, shift=shift, linear=linear, block_rows=kernels.BLOCK_ROWS
        )
        mapped_matrix = replace(matrix, frame=mapped, width=out, labelled=False)
        self._hold(
            mapped_matrix,
            HeldRows(
                held.ids,
                values,
                id_hashes=held.id_hashes,
                mapped_from=(matrix, shift, linear),
                customers=held.customers,
            ),
        )
        return mapped_matrix

    def sample_rows(
        self,
        matrix: SparkMatrix,
        *,
        rows: int | Mapping[int, int],
        seed: int,
        sizes: int | Mapping[int, int] | None = None,
    ) -> SampledRows:
        """The local engine's sample: the same customers in the same order. Ids whose hash
        falls under each group's share of the hash range (with slack) leave the executors; the
        smallest are kept on the driver. A sample that takes every row keeps them there for
        the passes that follow (see :meth:`_held_rows`)."""
        wanted: dict[int | None, int] = (
            {None: rows} if isinstance(rows, int) else {int(g): n for g, n in rows.items()}
        )
        held = self._held_rows(matrix) or self._gathered(
            matrix, wanted=wanted, seed=seed, sizes=sizes
        )
        chosen = kernels.hash_sample(
            held.hashes(seed), rows, None if isinstance(rows, int) else held.segments
        )
        return SampledRows(
            held.values[chosen],
            None if held.labels is None else held.labels[chosen],
            drawn_from=held.ids,
            positions=chosen,
        )

    def _gathered(
        self,
        matrix: SparkMatrix,
        *,
        wanted: Mapping[int | None, int],
        seed: int,
        sizes: int | Mapping[int, int] | None,
    ) -> HeldRows:
        """The rows a sample may take, on the driver, with their ids' hashes: every row of a
        group whose quota is (nearly) all of it, else those under a hash cutoff."""
        id_column = matrix.id_column
        labelled = matrix.labelled
        columns = [id_column, *matrix.value_columns, *([LABEL] if labelled else [])]
        known: dict[int | None, int]
        if None in wanted:
            known = {None: sizes if isinstance(sizes, int) else matrix.frame.count()}
        elif isinstance(sizes, Mapping):
            known = {int(label): n for label, n in sizes.items()}
        else:
            counted = matrix.frame.groupBy(LABEL).count().collect()
            known = {r[LABEL]: r["count"] for r in counted}
        cutoffs = {}
        for group, count in wanted.items():
            size = max(known.get(group, 0), 1)
            # The rows under a hash cutoff are binomial around share × size: 10% and five
            # standard deviations over the count leave it short about never, whatever the size.
            share = (1.1 * count + 5 * math.sqrt(count) + 10) / size
            if share < 1.0:
                cutoffs[group] = np.uint64(share * float(2**64 - 1))
        everything = [group for group in wanted if group not in cutoffs]

        def hashed(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for batch in batches:
                hashes = kernels.id_hashes(batch.column(id_column), seed)
                if None in wanted:
                    keep = hashes <= cutoffs[None] if cutoffs else np.ones(len(hashes), bool)
                else:
                    groups = batch.column(LABEL).to_numpy()
                    keep = np.isin(groups, [g for g in everything if g is not None])
                    for group, cutoff in cutoffs.items():
                        keep |= (groups == group) & (hashes <= cutoff)
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
        rows = _held_from(
            table, matrix, id_hashes={seed: table.column("__hash").to_numpy().view(np.uint64)}
        )
        if not cutoffs and (None in wanted or set(wanted) >= set(known)):
            self._hold(matrix, rows)
        return rows

    def assign(self, matrix: SparkMatrix, *, centroids: np.ndarray) -> SparkMatrix:
        """Each row's nearest centroid, in column expressions: the carried customer columns
        stay in the JVM (an Arrow UDF sent them to Python and back; 1M rows: 2.9 s against
        1.4-1.7 s), with the kernel's arithmetic (``nearest_centroids``)."""
        held = self._held_rows(matrix)
        source, shift, linear = (
            held.mapped_from
            if held is not None and held.mapped_from is not None
            else (matrix, None, None)
        )
        kept = [matrix.id_column, *matrix.carried_columns]
        values = [F.col(c) for c in source.value_columns]
        if linear is not None and shift is not None:
            shifted = [v - float(s) for v, s in zip(values, shift, strict=True)]
            values = [_weighted_sum(shifted, column) for column in linear.T]
        mapped = source.frame.select(
            *kept, *(v.alias(c) for v, c in zip(values, matrix.value_columns, strict=True))
        )
        assigned = replace(
            matrix,
            frame=_nearest(mapped, kept, matrix.value_columns, centroids),
            labelled=True,
        )
        if held is not None:
            labels, distances, _ = kernels.nearest_in_blocks(
                held.values, centroids, block_rows=kernels.BLOCK_ROWS
            )
            self._hold(
                assigned, replace(held, labels=labels, distances=distances, mapped_from=None)
            )
        return assigned

    def relabel(self, matrix: SparkMatrix, *, ids: np.ndarray) -> SparkMatrix:
        mapping = F.create_map(*[F.lit(v) for i, new in enumerate(ids) for v in (i, int(new))])
        relabelled = replace(
            matrix, frame=matrix.frame.withColumn(LABEL, mapping[F.col(LABEL)].cast("int"))
        )
        held = self._held_rows(matrix)
        if held is not None:
            self._hold(relabelled, replace(held, labels=ids.astype(np.int32)[held.segments]))
        return relabelled


def _weighted_sum(terms: Sequence[Column], weights: np.ndarray) -> Column:
    return functools.reduce(
        operator.add, (t * float(w) for t, w in zip(terms, weights, strict=True))
    )


def _nearest(
    frame: DataFrame, kept: Sequence[str], columns: Sequence[str], centroids: np.ndarray
) -> DataFrame:
    """``frame`` with each row's nearest centroid (``LABEL``, the first of equals), the
    distance to it and to the runner-up: ``‖x‖² + ‖c‖² − 2·x·c`` as the kernel computes it."""
    offsets, norm = "__segmatch_offsets", "__segmatch_norm"
    values = [F.col(c) for c in columns]
    squared = np.einsum("ij,ij->i", centroids, centroids)
    # Staged projections: Spark does not merge a projection into the next when that would
    # compute an expression once per reference, so each offset is computed once.
    scored = frame.select(
        *kept,
        *columns,
        F.array(
            *(
                _weighted_sum(values, -2.0 * centroid) + float(c2)
                for centroid, c2 in zip(centroids, squared, strict=True)
            )
        ).alias(offsets),
        functools.reduce(operator.add, (v * v for v in values)).alias(norm),
    )
    best = F.array_min(offsets)
    runner_up = (
        F.element_at(F.array_sort(offsets), 2) + F.col(norm)
        if len(centroids) > 1
        else F.lit(float("inf"))
    )
    return scored.select(
        *kept,
        *columns,
        (F.array_position(offsets, best) - 1).cast("int").alias(LABEL),
        F.sqrt(F.greatest(best + F.col(norm), F.lit(0.0))).alias(DISTANCE),
        F.sqrt(F.greatest(runner_up, F.lit(0.0))).alias(RUNNER_UP),
    )


def summary_on_driver(
    table: pa.Table, columns: Sequence[str], *, q: float, by: str | None
) -> ColumnSummary | None:
    """What :func:`quantiles.column_summary` gives, from rows on the driver (None when a
    column is not a number there)."""
    if not all(_is_number(table.schema.field(c).type) for c in columns):
        return None
    data = {c: table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in columns}
    valid = {c: pc.is_valid(table.column(c)).to_numpy(zero_copy_only=False) for c in columns}
    rows: dict[Any, int] = {}
    values: dict[Any, dict[str, int]] = {}
    sums: dict[Any, dict[str, float]] = {}
    quantiles: dict[Any, dict[str, float | None]] = {}
    for group, index in _group_rows(table, by):
        rows[group], values[group], sums[group], quantiles[group] = len(index), {}, {}, {}
        for c in columns:
            found = data[c][index][valid[c][index]]
            values[group][c] = len(found)
            sums[group][c] = float(found.sum())
            quantiles[group][c] = float(np.quantile(found, q)) if len(found) else None
    return ColumnSummary(rows=rows, values=values, sums=sums, quantiles=quantiles)


def level_counts_on_driver(
    table: pa.Table, columns: Sequence[str], *, by: str | None
) -> dict[str, dict[tuple[Any, str | None], int]] | None:
    """What the engine's ``level_counts`` gives, from rows on the driver (None when a column is
    not text there: its text would be Spark's to write)."""
    if not all(pa.types.is_string(table.schema.field(c).type) for c in columns):
        return None
    keys = [by] if by else []
    found: dict[str, dict[tuple[Any, str | None], int]] = {}
    for column in columns:
        pairs = pa.table({**{k: table.column(k) for k in keys}, LEVEL: table.column(column)})
        counted = pairs.group_by([*keys, LEVEL]).aggregate([([], "count_all")])
        found[column] = {
            (row[by] if by else None, row[LEVEL]): row["count_all"] for row in counted.to_pylist()
        }
    return found


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def _group_rows(table: pa.Table, by: str | None) -> Iterator[tuple[Any, np.ndarray]]:
    """Each group's value and the positions of its rows (one group, None, without ``by``)."""
    if by is None:
        yield None, np.arange(table.num_rows)
        return
    groups = table.column(by).to_numpy(zero_copy_only=False)
    order = np.argsort(groups, kind="stable")
    found, starts = np.unique(groups[order], return_index=True)
    for group, start, end in zip(found, starts, [*starts[1:], len(order)], strict=True):
        yield group.item(), order[start:end]


def _reduce_held(held: HeldRows, *, kernel: BlockKernel, combine: Combine) -> np.ndarray:
    return kernels.reduce_in_blocks(
        held.values, held.labels, kernel=kernel, combine=combine, block_rows=kernels.BLOCK_ROWS
    )


def _held_from(
    table: pa.Table, matrix: SparkMatrix, *, id_hashes: dict[int, np.ndarray] | None = None
) -> HeldRows:
    """A matrix's rows as they reached the driver: ids, values and labels when it has them."""
    return HeldRows(
        table.column(matrix.id_column),
        matrix_of(table, matrix.value_columns),
        table.column(LABEL).to_numpy() if matrix.labelled else None,
        id_hashes=id_hashes or {},
    )
