"""features: one numeric vector per customer (log where asked, one-hot categories)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from segmatch.config import FeaturesConfig
from segmatch.encoding import OTHER_LEVEL, feature_names
from segmatch.engines.base import Engine, Frame, Matrix
from segmatch.engines.expressions import Expr, col
from segmatch.stages.clean import CleanedRows
from segmatch.stages.columns import ColumnPlan, Outcome
from segmatch.stages.statistics import column_stats
from segmatch.stages.transactions import customers_from_transactions

#: Past this skewness (over every customer) a feature's signed log is taken by default: spend,
#: counts and balances, whose few extreme customers would otherwise form segments of their own.
SKEWNESS_LIMIT = 2.0


@dataclass(frozen=True)
class Features:
    """Customer rows (original units, for profiles) and their feature matrix."""

    id_column: str
    customers: Frame
    matrix: Matrix
    numeric: tuple[str, ...]
    log: tuple[str, ...]
    levels: dict[str, list[str]]
    rows_in: int
    rows_out: int
    #: Columns profiled per segment, not clustered.
    outcomes: tuple[Outcome, ...] = ()
    #: Features logged because they were skewed (``features.skewed: log``), with the skewness.
    skewed: dict[str, float] = field(default_factory=dict)
    #: Each numeric feature's standard deviation over the customers, in original units (what
    #: the report's profile heatmap measures segments in); empty when not measured.
    spread: dict[str, float] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return feature_names(self.numeric, self.levels)


def choose_levels(counts: dict[str, int], *, max_levels: int, min_share: float) -> list[str]:
    """The levels that get their own column; the rest fold into ``(other)``.

    Levels are ranked by count (then name, so the choice is deterministic); a level is kept if
    it is among the ``max_levels`` most frequent and holds at least ``min_share`` of rows.
    """
    total = sum(counts.values())
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    kept = [level for level, n in ranked[:max_levels] if n >= min_share * total]
    return [*kept, OTHER_LEVEL] if len(kept) < len(ranked) else kept


def build_features(
    engine: Engine,
    *,
    config: FeaturesConfig,
    cleaned: CleanedRows,
    plan: ColumnPlan,
    levels: dict[str, list[str]] | None = None,
    spread: bool = True,
) -> Features:
    """Turn clean rows (or transactions) into per-customer feature vectors.

    ``levels`` (a fitted model's) fixes the one-hot columns, as when scoring new customers;
    ``spread``: measure each feature's standard deviation for the segment profiles.
    """
    customers = (
        customers_from_transactions(engine, cleaned.frame, columns=plan.transactions)
        if plan.transactions is not None
        else cleaned.frame
    )
    if levels is None and plan.categorical:
        stats = column_stats(
            engine, customers, numeric=[], categorical=plan.categorical, center="median"
        )
        levels = {
            column: choose_levels(
                stats.levels[column],
                max_levels=config.max_levels,
                min_share=config.min_level_share,
            )
            for column in plan.categorical
        }
    levels = levels or {}
    measured = (
        column_moments(engine, customers, columns=plan.features)
        if spread or config.skewed == "log"
        else {}
    )
    skewed = (
        {
            column: moments.skewness
            for column, moments in measured.items()
            if column not in plan.log and abs(moments.skewness) > SKEWNESS_LIMIT
        }
        if config.skewed == "log"
        else {}
    )
    log = (*plan.log, *skewed)
    matrix = engine.feature_matrix(
        customers,
        id_column=plan.id_column,
        numeric=plan.features,
        log=log,
        levels=levels,
        carry=[*plan.features, *plan.categorical],
    )
    return Features(
        id_column=plan.id_column,
        customers=customers,
        matrix=matrix,
        numeric=plan.features,
        log=log,
        levels=levels,
        rows_in=cleaned.rows_out,
        rows_out=cleaned.rows_out if plan.transactions is None else engine.matrix_rows(matrix),
        outcomes=plan.outcomes,
        skewed=skewed,
        spread={column: moments.deviation for column, moments in measured.items()}
        if spread
        else {},
    )


@dataclass(frozen=True)
class Moments:
    """A numeric column's first three raw moments over its values (None: it has none)."""

    mean: float | None
    square: float | None
    cube: float | None

    @property
    def deviation(self) -> float:
        if self.mean is None or self.square is None:
            return 0.0
        return max(self.square - self.mean * self.mean, 0.0) ** 0.5

    @property
    def skewness(self) -> float:
        """0 for a constant column."""
        if self.mean is None or self.square is None or self.cube is None:
            return 0.0
        variance = self.square - self.mean * self.mean
        spread = math.sqrt(variance) if variance > 0 else 0.0
        central = self.cube - 3 * self.mean * variance - self.mean**3
        return central / spread**3 if spread > 1e-12 * max(1.0, abs(self.mean)) else 0.0


def column_moments(engine: Engine, frame: Frame, *, columns: Sequence[str]) -> dict[str, Moments]:
    """Each numeric column's moments over every row (missing values left out), in one
    aggregation."""
    if not columns:
        return {}
    aggregations: dict[str, Expr] = {}
    for i, column in enumerate(columns):
        value = col(column).as_number().nan_to_null()
        square = value.times(value)
        aggregations |= {
            f"m{i}": value.mean(),
            f"s{i}": square.mean(),
            f"c{i}": square.times(value).mean(),
        }
    row = engine.to_arrow(engine.aggregate(frame, aggregations)).to_pylist()[0]
    return {
        column: Moments(row[f"m{i}"], row[f"s{i}"], row[f"c{i}"])
        for i, column in enumerate(columns)
    }
