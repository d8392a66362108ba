"""Row-level work in Spark: expressions over rows, de-duplication, column statistics, and
transactions → customers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F  # noqa: N812 -- the PySpark convention

from segmatch.engines.expressions import Expr
from segmatch.engines.spark.expressions import to_spark
from segmatch.engines.spark.frames import ROW, persist
from segmatch.engines.spark.quantiles import exact_quantiles
from segmatch.engines.types import TransactionColumns


class SparkCleaning:
    """Validation, de-duplication, imputation and the transactions aggregation."""

    def with_columns(self, frame: DataFrame, columns: Mapping[str, Expr]) -> DataFrame:
        if not columns:
            return frame
        kinds = self.schema(frame)
        return frame.withColumns({name: to_spark(e, kinds, frame) for name, e in columns.items()})

    def filter(self, frame: DataFrame, condition: Expr) -> DataFrame:
        return frame.where(to_spark(condition, self.schema(frame), frame))

    def aggregate(
        self, frame: DataFrame, aggregations: Mapping[str, Expr], *, by: Sequence[str] = ()
    ) -> DataFrame:
        kinds = self.schema(frame)
        compiled = [to_spark(e, kinds, frame).alias(name) for name, e in aggregations.items()]
        if not by:
            return frame.agg(*compiled)
        # Each group keeps the position of its first row, so later ``first`` values and row
        # positions still follow the input's order.
        return frame.groupBy(*by).agg(*compiled, F.min(ROW).alias(ROW))

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
        from pyspark.sql import Window  # noqa: PLC0415 -- only deduplication needs windows

        order = [F.col(ROW).asc()]
        if keep == "latest":
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

    def aggregate_transactions(self, frame: DataFrame, *, columns: TransactionColumns) -> DataFrame:
        c = columns
        amount = (F.col(c.amount) if c.amount else F.col(c.quantity) * F.col(c.unit_price)).cast(
            "double"
        )
        is_return = amount < 0
        if c.cancellation_prefix and c.invoice:
            is_return = is_return | F.col(c.invoice).cast("string").startswith(
                c.cancellation_prefix
            )
        lines = frame.withColumns(
            {"__amount": amount, "__return": F.coalesce(is_return, F.lit(False))}
        )
        if c.drop_returns:
            lines = lines.where(~F.col("__return"))
        as_of = c.as_of or (lines.agg(F.max(c.timestamp)).first()[0] + timedelta(days=1))
        seconds_of = F.lit(as_of).cast("timestamp").cast("long")
        purchase = ~F.col("__return")
        frequency = (
            F.countDistinct(F.when(purchase, F.col(c.invoice)))
            if c.invoice
            else F.sum(F.when(purchase, 1).otherwise(0))
        ).cast("double")
        aggregations = [
            ((seconds_of - _seconds(F.max(c.timestamp))) / 86400.0).alias("recency_days"),
            frequency.alias("frequency"),
            F.sum("__amount").alias("monetary_total"),
            ((seconds_of - _seconds(F.min(c.timestamp))) / 86400.0).alias("tenure_days"),
            F.avg(F.col("__return").cast("double")).alias("return_share"),
        ]
        if c.category:
            aggregations.append(
                F.countDistinct(F.when(purchase, F.col(c.category)))
                .cast("double")
                .alias("distinct_categories")
            )
        customers = lines.groupBy(c.id_column).agg(F.min(ROW).alias(ROW), *aggregations)
        return persist(
            customers.withColumn(
                "monetary_avg",
                F.col("monetary_total") / F.greatest(F.col("frequency"), F.lit(1.0)),
            )
        )


def _seconds(moment: Column) -> Column:
    """Whole seconds since the epoch of a timestamp (with or without a time zone: UTC)."""
    return moment.cast("timestamp").cast("long")
