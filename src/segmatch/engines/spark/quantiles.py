"""Exact quantiles in Spark: histograms narrow each column's range down to the few values
around the wanted rank, and only those reach the driver."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F  # noqa: N812 -- the PySpark convention

from segmatch.engines.types import ColumnSummary

#: At most about this many values of a column (per group) reach the driver: a range holding
#: more is narrowed first, by a histogram of ``HISTOGRAM_BUCKETS`` buckets per pass.
MAX_VALUES_COLLECTED = 20_000
#: Narrowing stops as soon as the ranges of every column and group together hold at most this
#: many values: a pass over every row costs more than bringing that many (value, count) pairs
#: as Arrow (at 5M rows the segment profiles' ranges held 1.43M values: the narrowing pass
#: took 1.2-1.4 s, the last pass 1.5 s with or without it).
MAX_VALUES_IN_ALL = 2_000_000
HISTOGRAM_BUCKETS = 1024
MAX_NARROWING_PASSES = 8
#: Buckets per power of two in the first pass: each spans a ratio of 2^(1/32) (2.2% of the
#: value), whatever the column's range.
SCALE_STEPS = 32
#: Keeps the first pass's codes of finite values positive: ±(⌊log2|x| · steps⌋ + offset).
_SCALE_OFFSET = 1100 * SCALE_STEPS

Cell = tuple[Any, int]
"""A group's value (None without groups) and a column's position."""


def exact_medians(
    frame: DataFrame,
    columns: Sequence[str],
    group: str | None = None,
    *,
    max_values: int | None = None,
) -> dict[Any, dict[str, float | None]]:
    """Exact medians of ``columns`` per value of ``group`` (None: the whole frame)."""
    return column_summary(frame, columns, group, q=0.5, max_values=max_values).quantiles


def exact_quantiles(
    frame: DataFrame, columns: Sequence[str], group: str | None = None, *, q: float
) -> dict[Any, dict[str, float | None]]:
    """The exact ``q`` quantile of ``columns`` per value of ``group``, as ``np.quantile``."""
    return column_summary(frame, columns, group, q=q).quantiles


def column_summary(
    frame: DataFrame,
    columns: Sequence[str],
    group: str | None = None,
    *,
    q: float,
    max_values: int | None = None,
) -> ColumnSummary:
    """The exact ``q`` quantile of ``columns`` per value of ``group`` (None: the whole frame),
    with the rows of each group, and the values (not null) of each column in it and their sum.

    Interpolated linearly between the two values around rank (n − 1)·q, as ``np.quantile``
    does; the median is the mean of the two middle values, as ``np.median`` and Polars give.
    Spark's exact ``percentile`` keeps every distinct value of a group in memory, and its
    approximate quantiles at a useful accuracy cost a sketch insertion per value (at 5M rows
    here: 12.5 s for one column's exact percentile, 18 s for six columns' approximate
    brackets). Plain aggregations do it instead, each counting buckets of values with their
    smallest and largest value. The first pass needs no range: its buckets split each power
    of two into ``SCALE_STEPS``, so it also gives each column's count. While the buckets
    holding the wanted ranks hold more than ``MAX_VALUES_IN_ALL`` values together, a pass
    counts a histogram of ``HISTOGRAM_BUCKETS`` equal buckets between the smallest and largest
    value of each range that holds more than ``max_values`` (default
    ``MAX_VALUES_COLLECTED``; given, it bounds the total too). The last pass counts the values
    under the range and each distinct value inside it (ties arrive as one count); the wanted
    values are then picked on the driver. Should a range miss them (bucket edges rounded the
    other way), the exact ``percentile`` decides.
    """
    if not columns:
        sizes = frame.groupBy(*([group] if group else [])).count().collect()
        groups = {r[group] if group else None: int(r["count"]) for r in sizes if r["count"]}
        return ColumnSummary(groups, {g: {} for g in groups}, {g: {} for g in groups}, {})
    cap = MAX_VALUES_COLLECTED if max_values is None else max_values
    budget = MAX_VALUES_IN_ALL if max_values is None else max_values
    rows, counts, sums, histograms = _scaled_histograms(frame, columns, group)
    ranks = {cell: _ranks(n, q) for cell, n in counts.items()}
    bounds: dict[Cell, tuple[float, float]] = {}
    inside: dict[Cell, int] = {}
    for cell, histogram in histograms.items():
        narrowed = _narrow(histogram, ranks[cell][:2])
        if narrowed is not None:
            bounds[cell], inside[cell] = narrowed
    for _ in range(MAX_NARROWING_PASSES):
        if sum(inside.values()) <= budget:
            break
        wide = {c: b for c, b in bounds.items() if inside[c] > cap and b[0] < b[1]}
        if not wide:
            break
        for cell, histogram in _histograms(frame, columns, group, wide).items():
            narrowed = _narrow(histogram, ranks[cell][:2])
            if narrowed is None:
                inside[cell] = 0  # the wanted ranks are outside the range: the fallback decides
            else:
                bounds[cell], inside[cell] = narrowed
    below, counted = _values_inside(frame, columns, group, bounds)
    quantiles: dict[Any, dict[str, float | None]] = {}
    for key in rows:
        quantiles[key] = {}
        for i, column in enumerate(columns):
            lower_rank, upper_rank, fraction = ranks[(key, i)]
            under = below.get((key, i), 0)
            values = counted.get((key, i), _NO_VALUES)
            lower = _value_at_rank(values, lower_rank - under)
            upper = _value_at_rank(values, upper_rank - under)
            if counts[(key, i)] == 0:
                quantiles[key][column] = None
            elif lower is not None and upper is not None:
                quantiles[key][column] = _between(lower, upper, fraction, q)
            else:
                where = frame if group is None else frame.where(F.col(group) == F.lit(key))
                exact = where.agg(F.percentile(F.col(column), q)).first()
                quantiles[key][column] = None if exact is None else exact[0]
    return ColumnSummary(
        rows=rows,
        values={key: {c: counts[(key, i)] for i, c in enumerate(columns)} for key in rows},
        sums={key: {c: sums.get((key, i), 0.0) for i, c in enumerate(columns)} for key in rows},
        quantiles=quantiles,
    )


def _ranks(n: int, q: float) -> tuple[int, int, float]:
    """The 0-based ranks of the values around ``np.quantile``'s virtual index, and the
    interpolation weight of the upper one."""
    position = (n - 1) * q
    lower = math.floor(position)
    if position >= n - 1:
        return n - 1, n - 1, 0.0
    return lower, lower + 1, position - lower


def _between(lower: float, upper: float, fraction: float, q: float) -> float:
    """The interpolated quantile, computed as NumPy computes it (bit for bit)."""
    if q == 0.5 and lower != upper:
        # np.median (and Polars) take the mean of the two middle values, not the lerp.
        return (lower + upper) / 2.0 if fraction else lower
    if lower == upper:
        return lower  # also where both are infinite, where NumPy's interpolation gives NaN
    difference = upper - lower
    return upper - difference * (1 - fraction) if fraction >= 0.5 else lower + difference * fraction


def _narrow(
    histogram: tuple[int, np.ndarray, np.ndarray, np.ndarray], ranks: tuple[int, int]
) -> tuple[tuple[float, float], int] | None:
    """The range of the values at the two (adjacent) ranks, and at most how many distinct
    values it holds."""
    below, counts, smallest, largest = histogram
    ends = np.cumsum(counts)
    wanted = np.asarray(ranks) - below
    if wanted[0] < 0 or wanted[1] >= ends[-1]:
        return None
    first, last = np.searchsorted(ends, wanted, side="right")
    if first == last:
        return (float(smallest[first]), float(largest[first])), int(counts[first])
    # The ranks straddle two buckets with none between: the values are the largest of the one
    # and the smallest of the other, and nothing else lies between them.
    return (float(largest[first]), float(smallest[last])), 2


def _scaled_histograms(
    frame: DataFrame, columns: Sequence[str], group: str | None
) -> tuple[dict[Any, int], dict[Cell, int], dict[Cell, float], dict[Cell, tuple]]:
    """One pass: the rows of each group, the values of each cell and their sum, and each
    cell's histogram of buckets that split every power of two into ``SCALE_STEPS`` (any
    range, no bounds)."""
    cells = []
    for i, c in enumerate(columns):
        value = F.col(c).cast("double")
        # Monotone in the value up to log2's rounding; zero's code is 0 (log2 gives null).
        code = F.coalesce(F.floor(F.log2(F.abs(value)) * SCALE_STEPS) + _SCALE_OFFSET, F.lit(0))
        # Infinities and NaN are their own codes, beyond every finite value's (as Spark sorts).
        bucket = F.when(F.abs(value) < F.lit(math.inf), F.signum(value) * code).otherwise(value)
        cells.append(
            F.struct(
                F.lit(i).alias("column"),
                F.lit(False).alias("below"),
                bucket.cast("double").alias("bucket"),
                value.alias("value"),
            )
        )
    keys = [group] if group else []
    found = _bucketed(frame, keys, cells, keep_nulls=True, sums=True)
    rows: dict[Any, int] = {}
    counts: dict[Cell, int] = {}
    sums: dict[Cell, float] = {}
    buckets: dict[Cell, list] = {}
    for row in found:
        key = row[group] if group else None
        cell = (key, row["column"])
        counts.setdefault(cell, 0)
        if row["column"] == 0:
            rows[key] = rows.get(key, 0) + row["count"]
        if row["bucket"] is not None:
            counts[cell] += row["count"]
            sums[cell] = sums.get(cell, 0.0) + row["total"]
            buckets.setdefault(cell, []).append(row)
    histograms = {}
    for cell, found_buckets in buckets.items():
        ordered = sorted(found_buckets, key=lambda r: (math.isnan(r["bucket"]), r["bucket"]))
        histograms[cell] = (
            0,
            np.array([r["count"] for r in ordered], dtype=np.int64),
            np.array([r["smallest"] for r in ordered]),
            np.array([r["largest"] for r in ordered]),
        )
    return rows, counts, sums, histograms


def _histograms(
    frame: DataFrame, columns: Sequence[str], group: str | None, wide: dict[Cell, tuple]
) -> dict[Cell, tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Per cell: the values under its range, and the range's histogram (each bucket's count,
    smallest and largest value)."""
    low, high = _ranges(columns, group, wide)
    cells = []
    for i, c in enumerate(columns):
        value = F.col(c).cast("double")
        # Clamped before the floor: a value far outside the range must not overflow a long.
        width = (high[i] - low[i]) / F.lit(HISTOGRAM_BUCKETS)
        offset = F.least((value - low[i]) / width, F.lit(HISTOGRAM_BUCKETS - 1.0))
        cells.append(
            F.struct(
                F.lit(i).alias("column"),
                (value < low[i]).alias("below"),
                F.when((value >= low[i]) & (value <= high[i]), F.floor(offset)).alias("bucket"),
                value.alias("value"),
            )
        )
    rows = _bucketed(frame, [group] if group else [], cells, keep_nulls=False)
    under: dict[Cell, int] = {}
    buckets = {cell: np.zeros((3, HISTOGRAM_BUCKETS)) for cell in wide}
    for row in rows:
        cell = (row[group] if group else None, row["column"])
        if cell not in buckets:
            continue
        if row["below"]:
            under[cell] = row["count"]
        else:
            buckets[cell][:, int(row["bucket"])] = (row["count"], row["smallest"], row["largest"])
    return {
        cell: (under.get(cell, 0), spread[0].astype(np.int64), spread[1], spread[2])
        for cell, spread in buckets.items()
    }


def _bucketed(
    source: DataFrame, keys: list[str], cells: list[Column], *, keep_nulls: bool, sums: bool = False
) -> list:
    """One pass: per (group, column, below, bucket), the values' count, smallest and largest
    (and with ``sums``, their sum); values neither under the range nor in a bucket are dropped
    unless ``keep_nulls``."""
    exploded = source.select(*keys, F.explode(F.array(*cells)).alias("cell")).select(
        *keys, "cell.*"
    )
    if not keep_nulls:
        exploded = exploded.where(F.col("below") | F.col("bucket").isNotNull())
    return (
        exploded.groupBy(*keys, "column", "below", "bucket")
        .agg(
            F.count(F.lit(1)).alias("count"),
            F.min("value").alias("smallest"),
            F.max("value").alias("largest"),
            *([F.sum("value").alias("total")] if sums else []),
        )
        .collect()
    )


#: A range's distinct values in order, and how many rows hold each.
Counted = tuple[np.ndarray, np.ndarray]
_NO_VALUES: Counted = (np.empty(0), np.empty(0, dtype=np.int64))


def _values_inside(
    frame: DataFrame, columns: Sequence[str], group: str | None, bounds: dict[Cell, tuple]
) -> tuple[dict[Cell, int], dict[Cell, Counted]]:
    """Per cell: the values under its range, and each distinct value inside it, counted."""
    low, high = _ranges(columns, group, bounds)
    cells = [
        F.struct(
            F.lit(i).alias("column"),
            (F.col(c) < low[i]).alias("below"),
            F.when((F.col(c) >= low[i]) & (F.col(c) <= high[i]), F.col(c).cast("double")).alias(
                "value"
            ),
        )
        for i, c in enumerate(columns)
    ]
    table = _counted(frame, group, cells)
    # Up to MAX_VALUES_IN_ALL rows: split by cell as arrays, not as Python rows.
    positions = table.column("column").to_numpy()
    is_below = table.column("below").to_numpy(zero_copy_only=False)
    values = table.column("value").to_numpy(zero_copy_only=False)
    counts = table.column("count").to_numpy()
    keys: list[Any] = [None]
    codes = np.zeros(table.num_rows, dtype=np.int64)
    if group is not None:
        encoded = table.column(group).combine_chunks().dictionary_encode()
        keys = encoded.dictionary.to_pylist()
        codes = encoded.indices.fill_null(len(keys)).to_numpy().astype(np.int64)
        keys.append(None)
    below: dict[Cell, int] = {}
    counted: dict[Cell, Counted] = {}
    for code, position in {*zip(codes.tolist(), positions.tolist(), strict=True)}:
        cell = (keys[code], position)
        rows = (codes == code) & (positions == position)
        under = rows & is_below
        if under.any():
            below[cell] = int(counts[under].sum())
        inside = rows & ~is_below
        order = np.argsort(values[inside], kind="stable")
        counted[cell] = (values[inside][order], counts[inside][order])
    return below, counted


def _counted(source: DataFrame, group: str | None, cells: list[Column]) -> pa.Table:
    """One pass: the values of each (group, column) under the range as one count, and those
    inside it counted per distinct value."""
    keys = [group] if group else []
    return (
        source.select(*keys, F.explode(F.array(*cells)).alias("cell"))
        .select(*keys, "cell.column", "cell.below", "cell.value")
        .where(F.col("below") | F.col("value").isNotNull())
        .groupBy(*keys, "column", "below", "value")
        .count()
        .toArrow()
    )


def _ranges(
    columns: Sequence[str], group: str | None, bounds: dict[Cell, tuple]
) -> tuple[list[Column], list[Column]]:
    """Each column's range as literals, or per group as a choice among literals by the row's
    group (a table of ranges joined took a job of its own, 0.6 s of Python workers starting;
    in a 5M-row run, a literal map looked up per row made the pass 16.9 s, this 0.9 s); a
    column or group without a range gets nulls, so none of its rows count."""
    if group is None:
        edges = [bounds.get((None, i), (None, None)) for i in range(len(columns))]
        low = [F.lit(e[0]).cast("double") for e in edges]
        high = [F.lit(e[1]).cast("double") for e in edges]
        return low, high
    groups = sorted({key for key, _ in bounds}, key=str)

    def per_group(side: int, i: int) -> Column:
        chosen: Column | None = None
        for key in groups:
            is_key = F.col(group) == F.lit(key)
            edge = F.lit(bounds.get((key, i), (None, None))[side]).cast("double")
            chosen = F.when(is_key, edge) if chosen is None else chosen.when(is_key, edge)
        return F.lit(None).cast("double") if chosen is None else chosen

    low = [per_group(0, i) for i in range(len(columns))]
    high = [per_group(1, i) for i in range(len(columns))]
    return low, high


def _value_at_rank(counted: Counted, rank: int) -> float | None:
    """The value at ``rank`` (0-based) of a range's counted values; None when outside."""
    values, counts = counted
    if rank < 0:
        return None
    at = int(np.searchsorted(np.cumsum(counts), rank, side="right"))
    return float(values[at]) if at < len(values) else None
