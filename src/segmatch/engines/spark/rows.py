"""Row-level work in Spark: validation rules, cleaning, imputation, transactions → customers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Literal

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F  # noqa: N812 -- the PySpark convention
from pyspark.sql import types as T  # noqa: N812 -- the PySpark convention

from segmatch.encoding import MISSING_LEVEL
from segmatch.engines.spark.frames import (
    ROW,
    persist,
    trimmed,
)
from segmatch.engines.spark.quantiles import medians_and_counts
from segmatch.engines.types import (
    QUARANTINE_COLUMN,
    QUARANTINE_RULE,
    ColumnStats,
    ParseCheck,
    Rule,
    TransactionColumns,
)


class SparkRules:
    """The column tests every validation rule is built from, for one frame's column types."""

    def __init__(self, types: dict[str, str]) -> None:
        self.types = types

    def is_null(self, column: str) -> Column:
        return F.col(column).isNull()

    def is_blank(self, column: str) -> Column:
        if self.types[column] != "string":
            return F.lit(False)
        return F.coalesce(F.trim(F.col(column)) == "", F.lit(False))

    def is_unparsable(self, column: str) -> Column:
        text = F.trim(F.col(column).cast("string"))
        return F.coalesce((text != "") & text.try_cast("double").isNull(), F.lit(False))

    def is_infinite(self, column: str) -> Column:
        value = _as_double(column, self.types[column])
        return F.coalesce(value.isin(float("inf"), float("-inf")), F.lit(False))

    def is_outside(self, column: str, *, low: float | None, high: float | None) -> Column:
        value = _as_double(column, self.types[column])
        condition = F.lit(False)
        if low is not None:
            condition = condition | (value < low)
        if high is not None:
            condition = condition | (value > high)
        # NaN compares above every number, but it is a missing value (imputed), not an outlier.
        return F.coalesce(condition & ~F.isnan(value), F.lit(False))

    def any_of(self, conditions: Sequence[Column]) -> Column:
        combined = F.lit(False)
        for condition in conditions:
            combined = combined | condition
        return combined


class SparkCleaning:
    """Validation, de-duplication, imputation and the transactions aggregation."""

    def check_numeric_text(self, frame: DataFrame, *, column: str) -> ParseCheck:
        text = F.trim(F.col(column).cast("string"))
        present = frame.select(text.alias("v"), F.col(ROW)).where(
            F.col("v").isNotNull() & (F.col("v") != "")
        )
        not_number = F.col("v").try_cast("double").isNull()
        counts = present.agg(F.count(F.lit(1)), F.count(F.when(not_number, 1))).first()
        # The first failing value in input order, as the local engine reports it.
        example = present.where(not_number).orderBy(ROW).limit(1).collect() if counts[1] else []
        return ParseCheck(counts[0], counts[1], example[0]["v"] if example else None)

    def _rule_ops(self, frame: DataFrame) -> SparkRules:
        return SparkRules(dict(frame.dtypes))

    def _split_by_first_rule(
        self, frame: DataFrame, broken: Sequence[tuple[Rule, Column]]
    ) -> tuple[DataFrame, DataFrame]:
        first_rule = first_column = F.lit(None).cast("string")
        for rule, condition in reversed(broken):
            first_rule = F.when(condition, F.lit(rule.name)).otherwise(first_rule)
            first_column = F.when(condition, F.lit(rule.column)).otherwise(first_column)
        marked = frame.withColumns({QUARANTINE_RULE: first_rule, QUARANTINE_COLUMN: first_column})
        bad = F.col(QUARANTINE_RULE).isNotNull()
        # The quarantine is cached as the rule counts first read it: it is a few rows, and the
        # commit would otherwise test every rule on every row again (3 s at 1M customers).
        return (
            marked.where(~bad).drop(QUARANTINE_RULE, QUARANTINE_COLUMN),
            persist(marked.where(bad)),
        )

    def cast_to_float(self, frame: DataFrame, *, columns: Sequence[str]) -> DataFrame:
        """Numeric columns as double; blank text and NaN become missing (null)."""
        types = dict(frame.dtypes)
        casts = {}
        for name in columns:
            value = _as_double(name, types[name])
            casts[name] = F.when(F.isnan(value), F.lit(None)).otherwise(value)
        return frame.withColumns(casts) if casts else frame

    def value_ranges(
        self, frame: DataFrame, *, columns: Sequence[str]
    ) -> dict[str, tuple[int, float | None, float | None]]:
        if not columns:
            return {}
        present = [
            F.when(~F.isnan(F.col(c).cast("double")), F.col(c).cast("double")) for c in columns
        ]
        row = frame.agg(
            *(F.count(v).alias(f"n{i}") for i, v in enumerate(present)),
            *(F.min(v).alias(f"lo{i}") for i, v in enumerate(present)),
            *(F.max(v).alias(f"hi{i}") for i, v in enumerate(present)),
        ).first()
        return {c: (row[f"n{i}"], row[f"lo{i}"], row[f"hi{i}"]) for i, c in enumerate(columns)}

    def trim_text(self, frame: DataFrame, *, column: str) -> tuple[DataFrame, int]:
        if not isinstance(frame.schema[column].dataType, T.StringType):
            return frame, 0
        trim = trimmed(F.col(column))
        changed = frame.where(trim != F.col(column)).count()
        # Trimmed even when nothing changed: the rows were spread by this expression.
        return frame.withColumn(column, trim), changed

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

    def column_stats(
        self,
        frame: DataFrame,
        *,
        numeric: Sequence[str],
        categorical: Sequence[str],
        center: Literal["median", "mean"],
    ) -> ColumnStats:
        nulls: dict[str, int] = {}
        centers: dict[str, float | None] = {}
        if numeric and center == "median":
            # The medians' first aggregation also counts each column's values: no pass for nulls.
            medians, rows, values = medians_and_counts(frame, numeric)
            centers = medians.get(None, dict.fromkeys(numeric))
            nulls = {c: rows.get(None, 0) - values.get(None, {}).get(c, 0) for c in numeric}
        elif numeric:
            row = frame.agg(
                *(
                    F.count(F.when(F.col(c).isNull(), 1)).alias(f"n{i}")
                    for i, c in enumerate(numeric)
                ),
                *(F.avg(F.col(c)).alias(f"c{i}") for i, c in enumerate(numeric)),
            ).first()
            nulls = {c: row[f"n{i}"] for i, c in enumerate(numeric)}
            centers = {c: row[f"c{i}"] for i, c in enumerate(numeric)}
        levels = {}
        for name in categorical:
            # One job per column gives its levels and its nulls (the null group).
            counts = frame.groupBy(F.col(name).cast("string").alias("level")).count().collect()
            nulls[name] = sum(r["count"] for r in counts if r["level"] is None)
            levels[name] = {}
            for r in counts:
                level = MISSING_LEVEL if r["level"] is None else r["level"]
                levels[name][level] = levels[name].get(level, 0) + r["count"]
        return ColumnStats(
            nulls=nulls,
            centers={c: float(v) if v is not None else 0.0 for c, v in centers.items()},
            levels=levels,
        )

    def fill_missing(
        self, frame: DataFrame, *, numeric: dict[str, float], categorical: Sequence[str]
    ) -> DataFrame:
        filled = {name: F.coalesce(F.col(name), F.lit(value)) for name, value in numeric.items()}
        filled |= {
            name: F.coalesce(F.col(name).cast("string"), F.lit(MISSING_LEVEL))
            for name in categorical
        }
        # Not cached: the fill is a projection over the deduplicated rows' cache, and the two
        # passes that read it (scaling, then the reduced matrix's cache) cost less than a cache.
        return frame.withColumns(filled) if filled else frame

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


def _as_double(name: str, spark_type: str) -> Column:
    column = F.col(name)
    if spark_type == "string":
        return F.trim(column).try_cast("double")
    return column.cast("double")
