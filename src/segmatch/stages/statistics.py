"""Column facts and segment profiles, from the engine's aggregations and exact quantiles."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pyarrow as pa

from segmatch.encoding import MISSING_LEVEL
from segmatch.engines.base import Engine, Frame
from segmatch.engines.expressions import Expr, col, when
from segmatch.engines.shaping import with_top_levels
from segmatch.engines.types import SEGMENT, ColumnStats
from segmatch.stages.columns import Outcome


def column_stats(
    engine: Engine,
    frame: Frame,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    center: Literal["median", "mean"],
) -> ColumnStats:
    """Per column: its nulls; per numeric column its median (or mean); per categorical one the
    count of each level (missing values as their own level)."""
    centers: dict[str, float | None]
    nulls: dict[str, int]
    if not numeric:
        centers, nulls = {}, {}
    elif center == "median":
        summary = engine.column_summary(frame, columns=numeric, q=0.5)
        centers = summary.quantiles.get(None, {})
        rows_in = summary.rows.get(None, 0)
        nulls = {c: rows_in - summary.values.get(None, {}).get(c, 0) for c in numeric}
    else:
        aggregations: dict[str, Expr] = {
            **{f"nulls{i}": col(c).is_null().as_float().sum() for i, c in enumerate(numeric)},
            **{f"center{i}": col(c).mean() for i, c in enumerate(numeric)},
        }
        row = engine.to_arrow(engine.aggregate(frame, aggregations)).to_pylist()[0]
        nulls = {c: int(row[f"nulls{i}"] or 0) for i, c in enumerate(numeric)}
        centers = {c: row[f"center{i}"] for i, c in enumerate(numeric)}
    levels: dict[str, dict[str, int]] = {}
    for name, found in engine.level_counts(frame, categorical).items():
        counts = {level: n for (_, level), n in found.items()}
        nulls[name] = counts.pop(None, 0)
        named = {level: n for level, n in counts.items() if level is not None}
        if nulls[name]:
            named[MISSING_LEVEL] = named.get(MISSING_LEVEL, 0) + nulls[name]
        levels[name] = named
    return ColumnStats(
        nulls=nulls,
        centers={c: float(v) if v is not None else 0.0 for c, v in centers.items()},
        levels=levels,
    )


def segment_profiles(
    engine: Engine,
    labelled: Frame,
    *,
    columns: Sequence[str],
    categorical: Sequence[str] = (),
    outcomes: Sequence[Outcome] = (),
) -> pa.Table:
    """Per segment of rows with a ``segment`` column: size, share, the mean and median of
    each numeric column, the top levels of each categorical one, and each outcome's mean (or
    the share of its positive level, or its top levels)."""
    rated = {o.profile_column: _outcome_rate(o) for o in outcomes if not o.is_levels}
    # Sizes, sums and medians from the medians' passes; outcomes' rates in one aggregation.
    summary = engine.column_summary(labelled, columns=columns, q=0.5, by=SEGMENT)
    rates = (
        {
            row[SEGMENT]: row
            for row in engine.to_arrow(
                engine.aggregate(labelled, rated, by=[SEGMENT]), columns=[SEGMENT, *rated]
            ).to_pylist()
        }
        if rated
        else {}
    )
    segments = sorted(summary.rows)
    total = sum(summary.rows.values())
    table = {
        SEGMENT: pa.array(segments, pa.int32()),
        "size": pa.array([summary.rows[s] for s in segments], pa.int64()),
        "share": pa.array([summary.rows[s] / total for s in segments], pa.float64()),
        **{
            f"{c}_mean": pa.array([summary.mean(s, c) for s in segments], pa.float64())
            for c in columns
        },
        **{
            f"{c}_median": pa.array([summary.quantiles[s][c] for s in segments], pa.float64())
            for c in columns
        },
        **{name: pa.array([rates[s][name] for s in segments], pa.float64()) for name in rated},
    }
    counts = engine.level_counts(
        labelled, [*categorical, *(o.column for o in outcomes if o.is_levels)], by=SEGMENT
    )
    return with_top_levels(pa.table(table), counts)


def _outcome_rate(outcome: Outcome) -> Expr:
    """An outcome's mean per segment: of its numbers, or of "the value is its level" (missing
    values left out of both)."""
    if outcome.level is None:
        return col(outcome.column).as_number().mean()
    text = col(outcome.column).as_text().strip()
    return when([(text.ne("").fill_null(False), text.eq(outcome.level).as_float())]).mean()
