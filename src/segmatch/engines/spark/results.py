"""Result tables in Spark: segments, scores, lookalikes per segment, profiles, transitions."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F  # noqa: N812 -- the PySpark convention
from pyspark.sql import types as T  # noqa: N812 -- the PySpark convention
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_type

from segmatch.cells import Cells
from segmatch.engines.expressions import Expr, columns_used
from segmatch.engines.shaping import customer_columns_beside
from segmatch.engines.spark.expressions import kinds_of, to_spark
from segmatch.engines.spark.frames import (
    DISTANCE,
    LABEL,
    RUNNER_UP,
    SparkMatrix,
    matrix_of,
    persist,
)
from segmatch.engines.types import SEGMENT, SegmentRows, vector_column

CELL, HOME = "__cell", "__home"


class SparkResults:
    """Tables of results, shaped from an assigned matrix."""

    #: :meth:`SparkPasses.note_rows_on_driver`, which the engine also inherits.
    note_rows_on_driver: Callable[..., None]

    def segment_transitions(
        self, previous: DataFrame, matrix: SparkMatrix, *, id_column: str
    ) -> pa.Table:
        current = matrix.frame.select(
            F.col(matrix.id_column).alias(id_column), F.col(LABEL).alias("to_segment")
        )
        return (
            previous.select(id_column, F.col("segment").cast("int").alias("from_segment"))
            .join(current, on=id_column, how="inner")
            .groupBy("from_segment", "to_segment")
            .agg(F.count(F.lit(1)).alias("customers"))
            .orderBy("from_segment", "to_segment")
            .toArrow()
        )

    def matrix_frame(
        self,
        matrix: SparkMatrix,
        *,
        id_column: str,
        columns: Mapping[str, Expr],
        customers: DataFrame | None = None,
        customer_columns: Sequence[str] = (),
    ) -> DataFrame:
        available = {vector_column(j): f"x{j}" for j in range(matrix.width)}
        if matrix.labelled:
            available |= {SEGMENT: LABEL, DISTANCE: DISTANCE, RUNNER_UP: RUNNER_UP}
        used = set().union(*(columns_used(e) for e in columns.values()))
        own = [F.col(source).alias(name) for name, source in available.items() if name in used]
        wanted = customer_columns_beside([id_column, *columns], customer_columns)
        carried = matrix.carries(wanted)
        base = matrix.frame.select(
            F.col(matrix.id_column).alias(id_column),
            *own,
            *((matrix.customer_column(c) for c in wanted) if carried else ()),
        )
        kinds = kinds_of(base.schema)
        rows = base.select(
            id_column,
            *(to_spark(e, kinds, base).alias(name) for name, e in columns.items()),
            *(wanted if carried else ()),
        )
        if carried or not wanted:
            self.note_rows_on_driver(rows, matrix, id_column=id_column, columns=columns)
            return rows
        if customers is None:
            raise ValueError(f"customer columns {wanted} asked for without the customers' frame")
        return rows.join(customers.select(id_column, *wanted), on=id_column, how="left")

    def map_groups(
        self,
        matrix: SparkMatrix,
        per_group: Callable[[SegmentRows], pa.Table],
        *,
        schema: Callable[[pa.DataType], pa.Schema],
        cells: Cells | None = None,
        reference: SparkMatrix | None = None,
    ) -> DataFrame:
        columns, source_id = matrix.value_columns, matrix.id_column
        id_type = matrix.frame.schema[source_id].dataType
        output = from_arrow_schema(schema(to_arrow_type(id_type)))
        selected = matrix.frame.select(source_id, *columns, LABEL)
        if reference is None and cells is None:

            def rows_of(group: pa.Table) -> pa.Table:
                return per_group(_segment_rows(group, source_id, columns))

            return persist(selected.groupBy(LABEL).applyInArrow(rows_of, output))
        if reference is None:
            placed = _placed(selected, cells, columns, asked=None)
        else:
            old = reference.frame.select(
                F.col(reference.id_column).cast(id_type).alias(source_id), *columns, LABEL
            )
            placed = _placed(selected, cells, columns, asked=True).unionByName(
                _placed(old, cells, columns, asked=False)
            )
        return _search_groups(
            placed, cells, per_group, id_column=source_id, columns=columns, schema=output
        )


def _placed(
    selected: DataFrame, cells: Cells | None, columns: Sequence[str], *, asked: bool | None
) -> DataFrame:
    """``selected`` rows with the group each is searched in (``CELL``) and whether it is asked
    there (``HOME``). ``asked`` True: new customers, in their home cell; False: reference
    customers, copied to the cells they probe, never asked; None: a run's own customers,
    copied to the cells they probe and asked in their home cell. Without cells the group is
    the segment."""
    if cells is None:
        return selected.withColumns({CELL: F.col(LABEL), HOME: F.lit(bool(asked))})

    def place(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            nearest = cells.nearest(matrix_of(batch, columns), batch.column(LABEL).to_numpy())
            if asked:
                nearest = nearest[:, :1]
            rows, probe = np.nonzero(nearest >= 0)
            home = probe == 0 if asked is None else np.full(len(rows), asked)
            chosen = batch.take(pa.array(rows))
            yield pa.RecordBatch.from_arrays(
                [*chosen.columns, pa.array(nearest[rows, probe]), pa.array(home)],
                names=[*chosen.schema.names, CELL, HOME],
            )

    schema = T.StructType(
        [
            *selected.schema.fields,
            T.StructField(CELL, T.IntegerType(), nullable=False),
            T.StructField(HOME, T.BooleanType(), nullable=False),
        ]
    )
    return selected.mapInArrow(place, schema)


def _search_groups(
    placed: DataFrame,
    cells: Cells | None,
    search: Callable[[SegmentRows], pa.Table],
    *,
    id_column: str,
    columns: Sequence[str],
    schema: T.StructType,
) -> DataFrame:
    """``search`` on each group's rows (asked rows first), the answers persisted once."""

    def rows_of(group: pa.Table) -> pa.Table:
        group = group.take(pa.array(np.argsort(~group.column(HOME).to_numpy(), kind="stable")))
        rows = _segment_rows(group, id_column, columns)
        return search(replace(rows, home=group.column(HOME).to_numpy()))

    if cells is not None:
        # One partition per cell (hash-placed): the tasks grow with the customers, each
        # holding a few cells at most, and adaptive execution keeps the count as asked.
        placed = placed.repartition(cells.count, CELL)
    return persist(placed.groupBy(CELL).applyInArrow(rows_of, schema))


def _segment_rows(group: pa.Table, id_column: str, value_columns: Sequence[str]) -> SegmentRows:
    return SegmentRows(
        group.column(id_column), group.column(LABEL).to_numpy(), matrix_of(group, value_columns)
    )
