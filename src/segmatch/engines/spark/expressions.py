"""Engine-neutral expressions compiled to Spark columns."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F  # noqa: N812 -- the PySpark convention
from pyspark.sql import types as T  # noqa: N812 -- the PySpark convention

from segmatch.engines.expressions import DATE_FIELDS, OPERATORS, DateOrder, Expr, Kind, kind_of
from segmatch.engines.spark.frames import ROW, trimmed

#: The row key of a frame as read holds its scan partition in the bits above these.
ROW_PARTITION_SHIFT = 33

_BINARY: dict[str, Callable[[Column, Column], Column]] = {
    **OPERATORS,
    "larger_of": F.greatest,
    "fill_null": F.coalesce,
}

_UNARY: dict[str, Callable[[Column], Column]] = {
    "is_null": lambda a: a.isNull(),
    "as_text": lambda a: a.cast("string"),
    "strip": trimmed,
    "nan_to_null": lambda a: F.when(F.isnan(a), F.lit(None)).otherwise(a),
    "is_nan": F.isnan,
    "is_infinite": lambda a: a.isin(float("inf"), float("-inf")),
    "not": lambda a: ~a,
    "as_float": lambda a: a.cast("double"),
    "floor": lambda a: F.floor(a.cast("double")).cast("double"),
    "lower": F.lower,
    "count": F.count,
    "sum": F.sum,
    "min": F.min,
    "max": F.max,
    "mean": F.avg,
    "n_unique": F.countDistinct,
    # min_by leaves out rows whose ordering is null: the first value present, in input order.
    "first": lambda a: F.min_by(a, F.when(a.isNotNull(), F.col(ROW))),
}


def to_spark(expr: Expr, schema: Mapping[str, Kind], frame: DataFrame) -> Column:
    """The Spark column of ``expr`` over ``frame`` (whose columns have ``schema``'s kinds)."""
    op, args = expr.op, expr.args

    def inner(part: Expr) -> Column:
        return to_spark(part, schema, frame)

    if op == "col":
        return F.col(args[0])
    if op == "lit":
        return F.lit(args[0])
    if op in _UNARY:
        return _UNARY[op](inner(args[0]))
    if op in _BINARY:
        return _BINARY[op](inner(args[0]), inner(args[1]))
    if op == "as_number":
        value = inner(args[0])
        if kind_of(args[0], schema) == "string":
            return trimmed(value).try_cast("double")
        return value.cast("double")
    if op == "replace":
        return F.replace(inner(args[0]), F.lit(args[1]), F.lit(args[2]))
    if op == "matches":
        return inner(args[0]).rlike(args[1])
    if op == "extract":
        text = inner(args[0])
        return F.when(text.rlike(args[1]), F.regexp_extract(text, args[1], args[2]))
    if op == "as_date":
        return _as_date(inner(args[0]), args[1])
    if op == "starts_with":
        return inner(args[0]).startswith(args[1])
    if op == "is_in":
        return inner(args[0]).isin(list(args[1]))
    if op == "days_until":
        seconds = F.lit(args[1]).cast("timestamp").cast("long")
        return (seconds - inner(args[0]).cast("timestamp").cast("long")) / 86400.0
    if op == "rows":
        return F.count(F.lit(1))
    if op == "row_position":
        return _row_positions(frame)
    if op == "when":
        branches, otherwise = args
        if not branches:
            return inner(otherwise)
        # One CASE with many branches, not a CASE nested in each ELSE: Spark splits a long
        # CASE's generated code into methods, where nested CASEs nest their code.
        chained = F.when(inner(branches[0][0]), inner(branches[0][1]))
        for condition, value in branches[1:]:
            chained = chained.when(inner(condition), inner(value))
        return chained.otherwise(inner(otherwise))
    raise ValueError(f"no Spark form for the expression operation {op!r}")


def _row_positions(frame: DataFrame) -> Column:
    """Each row's position as text: one count per scan partition gives every offset."""
    partition = F.shiftright(F.col(ROW), ROW_PARTITION_SHIFT)
    counts = frame.groupBy(partition.alias("partition")).count().collect()
    offsets, start = {}, 1
    for row in sorted(counts, key=lambda r: r["partition"]):
        offsets[row["partition"]] = start
        start += row["count"]
    if not offsets:
        return F.lit(None).cast("string")
    offset = F.element_at(
        F.create_map(*(F.lit(v) for pair in offsets.items() for v in pair)), partition
    )
    in_partition = F.col(ROW).bitwiseAND(F.lit((1 << ROW_PARTITION_SHIFT) - 1))
    return (offset + in_partition).cast("string")


#: Spark's datetime patterns for each order of a date's parts (separators made ``/`` first).
_DATE_FORMATS = {"dmy": "d/M/yyyy", "mdy": "M/d/yyyy", "ymd": "yyyy/M/d"}


def _as_date(text: Column, order: DateOrder) -> Column:
    unified = F.regexp_replace(F.regexp_replace(trimmed(text), DATE_FIELDS, "$1/$2/$3"), "T", " ")
    day = _DATE_FORMATS[order]
    return F.coalesce(
        *(F.try_to_timestamp(unified, F.lit(f"{day}{time}")) for time in (" H:m:s", " H:m", ""))
    )


def kind_of_type(data_type: T.DataType) -> Kind:
    if isinstance(data_type, T.NumericType):
        return "numeric"
    if isinstance(data_type, (T.TimestampType, T.TimestampNTZType, T.DateType)):
        return "temporal"
    if isinstance(data_type, T.BooleanType):
        return "boolean"
    if isinstance(data_type, T.StringType):
        return "string"
    return "other"


def kinds_of(schema: T.StructType) -> dict[str, Kind]:
    """The kinds of a frame's columns, without the engine's own row key."""
    return {f.name: kind_of_type(f.dataType) for f in schema.fields if f.name != ROW}
