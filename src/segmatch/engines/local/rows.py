"""Row-level work in Polars: validation rules, cleaning, imputation, transactions → customers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Literal

import polars as pl

from segmatch.encoding import MISSING_LEVEL
from segmatch.engines.types import (
    QUARANTINE_COLUMN,
    QUARANTINE_RULE,
    ColumnStats,
    ParseCheck,
    Rule,
    TransactionColumns,
)


class PolarsRules:
    """The column tests every validation rule is built from, for one frame's column types."""

    def __init__(self, schema: pl.Schema) -> None:
        self.schema = schema

    def is_null(self, column: str) -> pl.Expr:
        return pl.col(column).is_null()

    def is_blank(self, column: str) -> pl.Expr:
        if self.schema[column] != pl.String:
            return pl.lit(False)
        return (pl.col(column).str.strip_chars() == "").fill_null(False)

    def is_unparsable(self, column: str) -> pl.Expr:
        text = pl.col(column).cast(pl.String).str.strip_chars()
        return ((text != "") & text.cast(pl.Float64, strict=False).is_null()).fill_null(False)

    def is_infinite(self, column: str) -> pl.Expr:
        return _as_float(column, self.schema[column]).is_infinite().fill_null(False)

    def is_outside(self, column: str, *, low: float | None, high: float | None) -> pl.Expr:
        value = _as_float(column, self.schema[column])
        condition = pl.lit(False)
        if low is not None:
            condition = condition | (value < low)
        if high is not None:
            condition = condition | (value > high)
        # NaN compares above every number, but it is a missing value (imputed), not an outlier.
        return (condition & ~value.is_nan()).fill_null(False)

    def any_of(self, conditions: Sequence[pl.Expr]) -> pl.Expr:
        return pl.any_horizontal(conditions)


class PolarsCleaning:
    """Validation, de-duplication, imputation and the transactions aggregation."""

    def check_numeric_text(self, frame: pl.DataFrame, *, column: str) -> ParseCheck:
        text = frame.get_column(column).cast(pl.String).drop_nulls().str.strip_chars()
        text = text.filter(text != "")
        failed = text.filter(text.cast(pl.Float64, strict=False).is_null())
        return ParseCheck(text.len(), failed.len(), failed[0] if failed.len() else None)

    def _rule_ops(self, frame: pl.DataFrame) -> PolarsRules:
        return PolarsRules(frame.schema)

    def _split_by_first_rule(
        self, frame: pl.DataFrame, broken: Sequence[tuple[Rule, pl.Expr]]
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        if not broken:
            return frame, frame.clear().with_columns(
                pl.lit(None, pl.String).alias(QUARANTINE_RULE),
                pl.lit(None, pl.String).alias(QUARANTINE_COLUMN),
            )
        (rule, condition), *rest = broken
        first_rule = pl.when(condition).then(pl.lit(rule.name))
        first_column = pl.when(condition).then(pl.lit(rule.column))
        for rule, condition in rest:
            first_rule = first_rule.when(condition).then(pl.lit(rule.name))
            first_column = first_column.when(condition).then(pl.lit(rule.column))
        marked = frame.with_columns(
            first_rule.otherwise(None).alias(QUARANTINE_RULE),
            first_column.otherwise(None).alias(QUARANTINE_COLUMN),
        )
        is_bad = pl.col(QUARANTINE_RULE).is_not_null()
        return (
            marked.filter(~is_bad).drop(QUARANTINE_RULE, QUARANTINE_COLUMN),
            marked.filter(is_bad),
        )

    def cast_to_float(self, frame: pl.DataFrame, *, columns: Sequence[str]) -> pl.DataFrame:
        """Numeric columns as float64; blank text and NaN become missing (null)."""
        return frame.with_columns(
            _as_float(name, frame.schema[name]).fill_nan(None).alias(name) for name in columns
        )

    def value_ranges(
        self, frame: pl.DataFrame, *, columns: Sequence[str]
    ) -> dict[str, tuple[int, float | None, float | None]]:
        if not columns:
            return {}
        present = [pl.col(c).cast(pl.Float64).fill_nan(None) for c in columns]
        row = frame.select(
            *(v.count().alias(f"n{i}") for i, v in enumerate(present)),
            *(v.min().alias(f"lo{i}") for i, v in enumerate(present)),
            *(v.max().alias(f"hi{i}") for i, v in enumerate(present)),
        ).row(0, named=True)
        return {c: (row[f"n{i}"], row[f"lo{i}"], row[f"hi{i}"]) for i, c in enumerate(columns)}

    def trim_text(self, frame: pl.DataFrame, *, column: str) -> tuple[pl.DataFrame, int]:
        if frame.schema[column] != pl.String:
            return frame, 0
        trimmed = pl.col(column).str.strip_chars()
        changed = frame.select((trimmed != pl.col(column)).sum()).item()
        return (frame.with_columns(trimmed) if changed else frame), int(changed or 0)

    def deduplicate(
        self,
        frame: pl.DataFrame,
        *,
        id_column: str,
        keep: Literal["first", "latest"],
        order_by: str | None,
    ) -> tuple[pl.DataFrame, int]:
        if keep == "latest":
            position = "__segmatch_position"
            kept = (
                frame.with_row_index(position)
                .sort(order_by, descending=True, nulls_last=True, maintain_order=True)
                .unique(subset=[id_column], keep="first", maintain_order=True)
                .sort(position)
                .drop(position)
            )
        else:
            kept = frame.unique(subset=[id_column], keep="first", maintain_order=True)
        return kept, kept.height

    def column_stats(
        self,
        frame: pl.DataFrame,
        *,
        numeric: Sequence[str],
        categorical: Sequence[str],
        center: Literal["median", "mean"],
    ) -> ColumnStats:
        columns = [*numeric, *categorical]
        nulls = frame.select(pl.col(c).null_count() for c in columns).row(0) if columns else ()
        centers = (
            frame.select(getattr(pl.col(c), center)() for c in numeric).row(0) if numeric else ()
        )
        levels = {}
        for name in categorical:
            counts = frame.get_column(name).cast(pl.String).fill_null(MISSING_LEVEL).value_counts()
            levels[name] = dict(zip(counts[name].to_list(), counts["count"].to_list(), strict=True))
        return ColumnStats(
            nulls=dict(zip(columns, nulls, strict=True)),
            centers={
                c: (float(v) if v is not None else 0.0)
                for c, v in zip(numeric, centers, strict=True)
            },
            levels=levels,
        )

    def fill_missing(
        self, frame: pl.DataFrame, *, numeric: dict[str, float], categorical: Sequence[str]
    ) -> pl.DataFrame:
        return frame.with_columns(
            *(pl.col(name).fill_null(value) for name, value in numeric.items()),
            *(pl.col(name).cast(pl.String).fill_null(MISSING_LEVEL) for name in categorical),
        )

    def aggregate_transactions(
        self, frame: pl.DataFrame, *, columns: TransactionColumns
    ) -> pl.DataFrame:
        c = columns
        amount = (pl.col(c.amount) if c.amount else pl.col(c.quantity) * pl.col(c.unit_price)).cast(
            pl.Float64
        )
        is_return = amount < 0
        if c.cancellation_prefix and c.invoice:
            cancelled = pl.col(c.invoice).cast(pl.String).str.starts_with(c.cancellation_prefix)
            is_return = is_return | cancelled
        lines = frame.with_columns(amount.alias("__amount"), is_return.alias("__return"))
        if c.drop_returns:
            lines = lines.filter(~pl.col("__return"))
        as_of = c.as_of or (lines.get_column(c.timestamp).max() + timedelta(days=1))
        purchase = ~pl.col("__return")
        frequency = (
            pl.col(c.invoice).filter(purchase).n_unique() if c.invoice else purchase.sum()
        ).cast(pl.Float64)
        aggregations = [
            ((pl.lit(as_of) - pl.col(c.timestamp).max()).dt.total_seconds() / 86400.0).alias(
                "recency_days"
            ),
            frequency.alias("frequency"),
            pl.col("__amount").sum().alias("monetary_total"),
            ((pl.lit(as_of) - pl.col(c.timestamp).min()).dt.total_seconds() / 86400.0).alias(
                "tenure_days"
            ),
            pl.col("__return").mean().cast(pl.Float64).alias("return_share"),
        ]
        if c.category:
            aggregations.append(
                pl.col(c.category)
                .filter(purchase)
                .n_unique()
                .cast(pl.Float64)
                .alias("distinct_categories")
            )
        customers = lines.group_by(c.id_column, maintain_order=True).agg(aggregations)
        return customers.with_columns(
            (pl.col("monetary_total") / pl.max_horizontal("frequency", pl.lit(1.0))).alias(
                "monetary_avg"
            )
        )


def _as_float(name: str, dtype: pl.DataType) -> pl.Expr:
    column = pl.col(name)
    if dtype == pl.String:
        return column.str.strip_chars().cast(pl.Float64, strict=False)
    return column.cast(pl.Float64)
