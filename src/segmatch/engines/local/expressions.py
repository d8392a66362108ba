"""Engine-neutral expressions compiled to Polars."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import polars as pl

from segmatch.engines.expressions import DATE_FIELDS, OPERATORS, DateOrder, Expr, Kind, kind_of

_BINARY: dict[str, Callable[[pl.Expr, pl.Expr], pl.Expr]] = {
    **OPERATORS,
    "larger_of": pl.max_horizontal,
    "fill_null": lambda a, b: a.fill_null(b),
}

_UNARY: dict[str, Callable[[pl.Expr], pl.Expr]] = {
    "is_null": lambda a: a.is_null(),
    "as_text": lambda a: a.cast(pl.String),
    "strip": lambda a: a.str.strip_chars(),
    "nan_to_null": lambda a: a.fill_nan(None),
    "is_nan": lambda a: a.is_nan(),
    "is_infinite": lambda a: a.is_infinite(),
    "not": lambda a: ~a,
    "as_float": lambda a: a.cast(pl.Float64),
    "floor": lambda a: a.cast(pl.Float64).floor(),
    "lower": lambda a: a.str.to_lowercase(),
    "count": lambda a: a.count(),
    "sum": lambda a: a.sum(),
    "min": lambda a: a.min(),
    "max": lambda a: a.max(),
    "mean": lambda a: a.mean(),
    "n_unique": lambda a: a.drop_nulls().n_unique(),
    "first": lambda a: a.drop_nulls().first(),
}


def to_polars(expr: Expr, schema: Mapping[str, Kind]) -> pl.Expr:
    """The Polars expression of ``expr`` over a frame whose columns have ``schema``'s kinds."""
    op, args = expr.op, expr.args

    def inner(part: Expr) -> pl.Expr:
        return to_polars(part, schema)

    if op == "col":
        return pl.col(args[0])
    if op == "lit":
        return pl.lit(args[0])
    if op in _UNARY:
        return _UNARY[op](inner(args[0]))
    if op in _BINARY:
        return _BINARY[op](inner(args[0]), inner(args[1]))
    if op == "as_number":
        value = inner(args[0])
        if kind_of(args[0], schema) == "string":
            return value.str.strip_chars().cast(pl.Float64, strict=False)
        return value.cast(pl.Float64)
    if op == "replace":
        return inner(args[0]).str.replace_all(args[1], args[2], literal=True)
    if op == "matches":
        return inner(args[0]).str.contains(args[1])
    if op == "extract":
        return inner(args[0]).str.extract(args[1], args[2])
    if op == "as_date":
        return _as_date(inner(args[0]), args[1])
    if op == "starts_with":
        return inner(args[0]).str.starts_with(args[1])
    if op == "is_in":
        return inner(args[0]).is_in(list(args[1]))
    if op == "days_until":
        return (pl.lit(args[1]) - inner(args[0])).dt.total_seconds() / 86400.0
    if op == "rows":
        return pl.len()
    if op == "row_position":
        return pl.int_range(1, pl.len() + 1).cast(pl.String)
    if op == "when":
        branches, otherwise = args
        if not branches:
            return inner(otherwise)
        chained: Any = pl
        for condition, value in branches:
            chained = chained.when(inner(condition)).then(inner(value))
        return chained.otherwise(inner(otherwise))
    raise ValueError(f"no Polars form for the expression operation {op!r}")


#: strptime's fields for each order of a date's parts (separators made ``/`` first).
_DATE_FORMATS = {"dmy": "%d/%m/%Y", "mdy": "%m/%d/%Y", "ymd": "%Y/%m/%d"}


def _as_date(text: pl.Expr, order: DateOrder) -> pl.Expr:
    unified = text.str.strip_chars().str.replace(DATE_FIELDS, "$1/$2/$3").str.replace("T", " ")
    day = _DATE_FORMATS[order]
    return pl.coalesce(
        unified.str.to_datetime(f"{day} {time}", strict=False, time_unit="us")
        for time in ("%H:%M:%S", "%H:%M")
    ).fill_null(unified.str.to_datetime(day, strict=False, time_unit="us"))


def kind_of_dtype(dtype: pl.DataType) -> Kind:
    if dtype.is_numeric():
        return "numeric"
    if dtype.is_temporal():
        return "temporal"
    if dtype == pl.Boolean:
        return "boolean"
    if dtype in (pl.String, pl.Categorical, pl.Enum):
        return "string"
    return "other"


def kinds_of(schema: pl.Schema) -> dict[str, Kind]:
    return {name: kind_of_dtype(dtype) for name, dtype in schema.items()}
