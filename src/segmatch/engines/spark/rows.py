"""Row-level work in Spark: expressions over rows, de-duplication, column statistics, and
transactions → customers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pyarrow as pa
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F  # noqa: N812 -- the PySpark convention

from segmatch.engines.base import present_text
from segmatch.engines.expressions import Expr, col
from segmatch.engines.spark.expressions import kinds_of, to_spark
from segmatch.engines.spark.frames import ROW, persist
from segmatch.engines.spark.quantiles import column_summary, exact_quantiles
from segmatch.engines.types import LEVEL, ColumnSummary

#: Which of the counted columns a stacked row's value came from.
STACKED = "__segmatch_column"


class SparkCleaning:
    """Validation, de-duplication, imputation and the transactions aggregation."""

    def with_columns(self, frame: DataFrame, columns: Mapping[str, Expr]) -> DataFrame:
        if not columns:
            return frame
        kinds = kinds_of(frame.schema)
        return frame.withColumns({name: to_spark(e, kinds, frame) for name, e in columns.items()})

    def filter(self, frame: DataFrame, condition: Expr) -> DataFrame:
        return frame.where(to_spark(condition, kinds_of(frame.schema), frame))

    def lookup(self, frame: DataFrame, *, key: str, table: pa.Table) -> DataFrame:
        right = frame.sparkSession.createDataFrame(table)
        right = right.withColumn(key, F.col(key).cast(frame.schema[key].dataType))
        # A small table: broadcast, so the rows of ``frame`` stay where they are.
        return frame.join(F.broadcast(right), on=key, how="left")

    def aggregate(
        self, frame: DataFrame, aggregations: Mapping[str, Expr], *, by: Sequence[str] = ()
    ) -> DataFrame:
        kinds = kinds_of(frame.schema)
        compiled = [to_spark(e, kinds, frame).alias(name) for name, e in aggregations.items()]
        if not by:
            return frame.agg(*compiled)
        # Each group keeps the position of its first row, so later ``first`` values and row
        # positions still follow the input's order.
        position = [F.min(ROW).alias(ROW)] if ROW in frame.columns else []
        return frame.groupBy(*by).agg(*compiled, *position)

    def level_counts(
        self, frame: DataFrame, columns: Sequence[str], *, by: str | None = None
    ) -> dict[str, dict[tuple[Any, str | None], int]]:
        if not columns:
            return {}
        # One aggregation for every column, not one job each.
        pairs = _stacked(frame, [col(column).as_text() for column in columns])
        grouped = [by] if by else []
        counted = frame.select(*grouped, pairs).groupBy(*grouped, STACKED, LEVEL).count()
        found: dict[str, dict[tuple[Any, str | None], int]] = {c: {} for c in columns}
        for row in counted.toArrow().to_pylist():
            found[columns[row[STACKED]]][(row[by] if by else None, row[LEVEL])] = row["count"]
        return found

    def text_levels(
        self, frame: DataFrame, columns: Sequence[str], *, most: int
    ) -> dict[str, dict[str, int] | int]:
        if not columns:
            return {}
        pairs = _stacked(frame, [present_text(column) for column in columns])
        counted = frame.select(pairs).where(F.col(LEVEL).isNotNull()).groupBy(STACKED, LEVEL)
        per_column = Window.partitionBy(STACKED)
        # One job: the counts of a column of few values, and one row of any other, which
        # carries its number of values (the grouping made them distinct).
        levels = counted.count().select(
            "*",
            F.count(F.lit(1)).over(per_column).alias("__levels"),
            F.first(LEVEL).over(per_column).alias("__first"),
        )
        kept = levels.where((F.col("__levels") <= most) | (F.col(LEVEL) == F.col("__first")))
        found: dict[str, dict[str, int] | int] = {}
        for row in kept.toArrow().to_pylist():
            column = columns[row[STACKED]]
            if row["__levels"] > most:
                found[column] = row["__levels"]
            else:
                counts = found.setdefault(column, {})
                if isinstance(counts, dict):
                    counts[row[LEVEL]] = row["count"]
        return {column: found.get(column, {}) for column in columns}

    def hold(self, frame: DataFrame) -> DataFrame:
        return persist(frame)

    def deduplicate(
        self,
        frame: DataFrame,
        *,
        id_column: str,
        keep: Literal["first", "latest"],
        order_by: str | None,
    ) -> tuple[DataFrame, int]:
        order = [F.col(ROW).asc()]
        if keep == "latest" and order_by is not None:
            order = [F.col(order_by).desc_nulls_last(), *order]
        rank = F.row_number().over(Window.partitionBy(id_column).orderBy(*order))
        kept = persist(frame.withColumn("__rank", rank).where(F.col("__rank") == 1).drop("__rank"))
        return kept, kept.count()

    def quantiles(
        self,
        frame: DataFrame,
        *,
        columns: Sequence[str],
        q: float,
        by: str | None = None,
    ) -> dict[Any, dict[str, float | None]]:
        if not columns:
            return {}
        return exact_quantiles(frame, columns, by, q=q)

    def column_summary(
        self, frame: DataFrame, *, columns: Sequence[str], q: float, by: str | None = None
    ) -> ColumnSummary:
        # The quantiles' first pass counts the rows and each column's values, and adds them.
        return column_summary(frame, columns, by, q=q)


def _stacked(frame: DataFrame, values: Sequence[Expr]) -> Column:
    """Each row stacked once per value, as (the value's position, the value)."""
    kinds = kinds_of(frame.schema)
    return F.inline(
        F.array(
            *(
                F.struct(F.lit(i).alias(STACKED), to_spark(value, kinds, frame).alias(LEVEL))
                for i, value in enumerate(values)
            )
        )
    )
